"""A hosted expert with several deployments, through LiteLLM's Router: balancing, cooldowns, ordered fallbacks.

A scripted OpenAI-compatible server on 127.0.0.1 answers by model name: ``good-*`` models answer (their name in the
text), ``down-*`` fail with a 500, ``short`` refuses every prompt as too long for its context window, ``long``
answers. It logs the models it was asked, in order, so the tests see which deployment each call reached.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from experts.backends.litellm_backend import LiteLLMBackend
from experts.config import ExpertSpec, PoolFileError, parse_pool
from experts.errors import BackendError
from experts.types import GenerationRequest, Message
from tests.conftest import ServerThread

TOO_LONG = {
    "message": "This model's maximum context length is 8 tokens. However, your messages resulted in 50 tokens.",
    "type": "invalid_request_error",
    "param": None,
    "code": "context_length_exceeded",
}


def scripted_app(asked: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        model = str((await request.json())["model"])
        asked.append(model)
        if model.startswith("down"):
            return JSONResponse({"error": {"message": "boom", "type": "server_error", "code": None}}, status_code=500)
        if model == "short":
            return JSONResponse({"error": TOO_LONG}, status_code=400)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": model}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )

    return app


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []
    with ServerThread(scripted_app(asked)) as server:
        yield server.url + "/v1", asked


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYMENT_KEY", "sk-local-test")


def expert(api_base: str, deployments: list[dict[str, Any]], **routing: Any) -> ExpertSpec:
    listed = [{"api_base": api_base, "api_key_env": "DEPLOYMENT_KEY", **d} for d in deployments]
    return ExpertSpec.model_validate(
        {
            "name": "hosted",
            "backend": "litellm",
            "model": "openai/good-default",
            "deployments": listed,
            "deployment_routing": routing,
        }
    )


async def answers(spec: ExpertSpec, calls: int) -> tuple[LiteLLMBackend, list[str]]:
    backend = LiteLLMBackend(spec)
    await backend.load()
    texts = []
    for i in range(calls):
        [completion] = await backend.generate([GenerationRequest([Message("user", f"q {i}")], max_tokens=4)])
        assert completion.error is None, completion.error
        texts.append(completion.text)
    return backend, texts


async def test_calls_are_spread_over_the_primaries(upstream: tuple[str, list[str]]) -> None:
    api_base, _ = upstream
    spec = expert(
        api_base,
        [{"name": "a", "model": "openai/good-a"}, {"name": "b", "model": "openai/good-b"}],
        strategy="simple-shuffle",
    )
    _, texts = await answers(spec, 24)
    assert set(texts) == {"good-a", "good-b"}  # both deployments took calls


async def test_a_failing_deployment_cools_down_and_its_calls_go_to_another(upstream: tuple[str, list[str]]) -> None:
    api_base, asked = upstream
    spec = expert(
        api_base,
        [{"name": "down", "model": "openai/down-1"}, {"name": "up", "model": "openai/good-up"}],
        strategy="simple-shuffle",
        allowed_fails=0,  # the first failure cools it down, so the Router's retry goes to the other primary
        cooldown_s=60,
    )
    start = len(asked)
    backend, texts = await answers(spec, 12)
    assert texts == ["good-up"] * 12  # every call answered: the Router tried the other primary
    assert asked[start:].count("down-1") <= 1  # then left alone: cooling down
    states = {state["name"]: state for state in backend.describe()["deployments"]}  # type: ignore[union-attr]
    assert states["down"]["cooling_down"] is True and states["up"]["cooling_down"] is False


async def test_fallbacks_are_tried_in_their_order(upstream: tuple[str, list[str]]) -> None:
    api_base, asked = upstream
    spec = expert(
        api_base,
        [
            {"name": "main", "model": "openai/down-main"},
            {"name": "first", "model": "openai/down-first", "role": "fallback"},
            {"name": "second", "model": "openai/good-second", "role": "fallback"},
        ],
    )
    start = len(asked)
    _, texts = await answers(spec, 1)
    assert texts == ["good-second"]
    sequence = asked[start:]
    assert sequence.index("down-main") < sequence.index("down-first") < sequence.index("good-second")


async def test_a_prompt_too_long_goes_to_the_larger_context_deployment(upstream: tuple[str, list[str]]) -> None:
    api_base, _ = upstream
    small, big = {"name": "small", "model": "openai/short"}, {"name": "big", "model": "openai/long", "role": "context"}
    deployments = [small, big]
    spec = expert(api_base, deployments)
    _, texts = await answers(spec, 1)
    assert texts == ["long"]


async def test_a_missing_key_is_named_with_its_deployment(upstream: tuple[str, list[str]]) -> None:
    api_base, _ = upstream
    spec = expert(api_base, [{"name": "a", "model": "openai/good-a", "api_key_env": "NOT_SET_ANYWHERE"}])
    with pytest.raises(BackendError, match=r"NOT_SET_ANYWHERE \(deployments\[a\].api_key_env\) is not set"):
        await LiteLLMBackend(spec).load()


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"backend": "echo", "deployments": [{"name": "a"}]}, "only a litellm expert has them"),
        ({"deployments": [{"name": "a"}, {"name": "a"}]}, "names must differ; repeated: a"),
        ({"deployments": [{"name": "a", "role": "fallback"}]}, "at least one must have role primary"),
        ({"deployments": [{"name": "a", "role": "spare"}]}, r"deployments\[0\]\.role: Input should be"),
        ({"deployments": [{"name": "a"}], "deployment_routing": {"strategy": "fast"}}, "deployment_routing.strategy"),
    ],
)
def test_bad_deployments_name_the_field(entry: dict[str, Any], problem: str) -> None:
    data = {"name": "hosted", "backend": "litellm", "model": "openai/x", **entry}
    with pytest.raises(PoolFileError, match=problem):
        parse_pool({"name": "p", "experts": [data]}, "pool.yaml")
