"""The ``litellm`` backend against a real OpenAI-compatible server: our own, on 127.0.0.1.

No network and no API key are needed: LiteLLM's OpenAI provider talks HTTP to the
session's uvicorn server, whose ``expert/<name>`` models answer with the embedded model.
"""

from __future__ import annotations

import pytest

from experts.backends.litellm_backend import LiteLLMBackend
from experts.config._pool_spec import ExpertSpec, parse_pool
from experts.runtime._pool import ExpertPool
from experts.types import GenerationRequest, Message, TextDelta
from tests.conftest import ServerThread

pytestmark = [pytest.mark.ray, pytest.mark.model]


def spec_for(server: ServerThread, **extra: object) -> ExpertSpec:
    return ExpertSpec.model_validate(
        {
            "name": "remote-writer",
            "backend": "litellm",
            "model": "openai/expert/writer",
            "options": {"api_base": server.url + "/v1", "api_key_env": "MOESAIC_TEST_API_KEY"},
            **extra,
        }
    )


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOESAIC_TEST_API_KEY", "sk-local-test")


def ask(text: str) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], max_tokens=8, temperature=0.0, top_p=1.0)


async def test_batch_usage_and_declared_price(api_server: ServerThread) -> None:
    backend = LiteLLMBackend(spec_for(api_server, price={"input_per_1m": 1.0, "output_per_1m": 2.0}))
    await backend.load()
    first, second = await backend.generate([ask("Say hello."), ask("Name a fruit.")])
    for completion in (first, second):
        assert completion.error is None and completion.text
        assert completion.usage.prompt_tokens > 0 and 0 < completion.usage.completion_tokens <= 8
        expected = (completion.usage.prompt_tokens * 1.0 + completion.usage.completion_tokens * 2.0) / 1e6
        assert completion.usage.cost == pytest.approx(expected)


async def test_streaming_through_litellm(api_server: ServerThread) -> None:
    backend = LiteLLMBackend(spec_for(api_server))
    await backend.load()
    pieces: list[TextDelta] = []
    [completion] = await backend.generate([ask("Say hello.")], pieces.append)
    assert completion.text and "".join(p.text for p in pieces) == completion.text
    assert completion.usage.completion_tokens > 0


async def test_provider_errors_become_failed_completions(api_server: ServerThread) -> None:
    backend = LiteLLMBackend(spec_for(api_server).model_copy(update={"model": "openai/expert/nobody"}))
    await backend.load()
    [completion] = await backend.generate([ask("hi")])
    assert completion.finish_reason == "error" and completion.error is not None
    assert completion.error.split(":", 1)[0] == "NotFoundError"  # LiteLLM's exception type for a 404, by name


async def test_missing_api_key_fails_at_load(api_server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOESAIC_TEST_API_KEY")
    with pytest.raises(Exception, match="MOESAIC_TEST_API_KEY"):
        await LiteLLMBackend(spec_for(api_server)).load()


async def test_a_litellm_expert_in_a_ray_actor(api_server: ServerThread) -> None:
    pool_spec = parse_pool(
        {"name": "remote", "experts": [spec_for(api_server, resources={"num_cpus": 0}).model_dump()]}, "<test>"
    )
    pool = ExpertPool(pool_spec)
    try:
        health = await pool.start()
        assert health["remote-writer"]["state"] == "ready", health
        completion = await pool.generate("remote-writer", ask("Say hello."))
        assert completion.text and completion.usage.completion_tokens > 0
    finally:
        await pool.shutdown()


async def test_one_sdk_client_for_a_named_openai_endpoint_and_litellm_s_own_otherwise(
    api_server: ServerThread,
) -> None:
    named = LiteLLMBackend(spec_for(api_server))
    await named.load()
    assert named._arguments(ask("hi"), stream=False)["client"] is named._client  # the same client every call
    assert str(named._client.base_url).rstrip("/") == api_server.url + "/v1"
    assert (await named.generate([ask("Say hello.")]))[0].error is None  # answered through that client
    # no api_base in the pool file: the provider's address and the environment's keys stay LiteLLM's business
    default = LiteLLMBackend(ExpertSpec(name="hosted", backend="litellm", model="openai/gpt-4.1-mini"))
    await default.load()
    assert "client" not in default._arguments(ask("hi"), stream=False)
    other = LiteLLMBackend(spec_for(api_server).model_copy(update={"model": "anthropic/claude-3-5-sonnet"}))
    await other.load()
    assert "client" not in other._arguments(ask("hi"), stream=False)  # not an OpenAI-protocol provider
