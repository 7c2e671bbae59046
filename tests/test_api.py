"""The HTTP API under real uvicorn on 127.0.0.1, driven by the official openai client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.conftest import ServerThread, echo_pool_spec

pytestmark = [pytest.mark.ray, pytest.mark.model]

QUESTION = [{"role": "user", "content": "What is 3 + 4?"}]


def test_plain_completion_with_routing_metadata(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="moesaic",
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        extra_body={"moesaic": {"shortcut": False}},  # agreeing experts would skip the aggregator
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "moesaic"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    metadata: dict[str, Any] = completion.model_extra["moesaic"]
    experts = metadata["decision"]["experts"]
    assert raw.headers["x-moesaic-experts"] == ",".join(experts) and experts[0] == "math"
    assert len(metadata["calls"]) == len(experts) + 1  # the aggregator's call is billed too
    assert completion.usage.prompt_tokens == sum(call["prompt_tokens"] for call in metadata["calls"])
    assert completion.usage.completion_tokens == sum(call["completion_tokens"] for call in metadata["calls"])
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_streaming_completion_with_usage_chunk(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="moesaic",
        messages=[{"role": "user", "content": "Write one sentence about autumn."}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"moesaic": {"shortcut": False}},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1
    assert finishing[0].model_extra["moesaic"]["strategy"] == "synthesize"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0


def test_models_lists_the_pipeline_and_every_expert(openai_client: openai.OpenAI) -> None:
    ids = [model.id for model in openai_client.models.list()]
    assert ids[:2] == ["moesaic", "moesaic/skills"]  # the lexical router offers one policy
    assert set(ids[2:]) == {f"expert/{n}" for n in ("math", "coder", "writer", "generalist", "conductor")}
    assert openai_client.models.retrieve("expert/math").id == "expert/math"


def test_model_cards_carry_context_window_capabilities_and_price(openai_client: openai.OpenAI) -> None:
    cards = {model.id: model.model_extra for model in openai_client.models.list()}
    math = cards["expert/math"]
    assert math["context_window"] == 2048  # the continuous engine's slot: min(the model's 8192, 2048)
    # tools: a forced call held by our engine's grammar (experts/engine/tool_calls.py)
    assert math["capabilities"] == {
        "streaming": True, "tools": True, "response_format": True, "logprobs": False, "n": True
    }  # fmt: skip
    assert math["pricing"]["source"] == "self_hosted"
    assert math["engine"] == "continuous"  # engine auto: ours on a CPU without native bf16 (engine_choice.py)
    pipeline = cards["moesaic"]
    assert pipeline["context_window"] == 2048 and pipeline["capabilities"]["response_format"] is True
    assert pipeline["pricing"] is None


def test_an_expert_is_callable_directly(openai_client: openai.OpenAI) -> None:
    raw = openai_client.chat.completions.with_raw_response.create(
        model="expert/writer", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    completion = raw.parse()
    assert raw.headers["x-moesaic-experts"] == "writer"
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens <= 8
    streamed = openai_client.chat.completions.create(
        model="expert/writer",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        == completion.choices[0].message.content
    )


def test_per_request_k_and_forced_experts(openai_client: openai.OpenAI) -> None:
    one = openai_client.chat.completions.create(
        model="moesaic", messages=QUESTION, max_tokens=8, temperature=0, extra_body={"moesaic": {"k": 1}}
    )
    assert one.model_extra["moesaic"]["strategy"] == "passthrough"
    forced = openai_client.chat.completions.create(
        model="moesaic",
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        extra_body={"moesaic": {"experts": ["coder", "writer"]}},
    )
    assert forced.model_extra["moesaic"]["decision"]["experts"] == ["coder", "writer"]


def test_health(api_server: ServerThread) -> None:
    response = httpx.get(api_server.url + "/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.json()["experts"]["math"]["state"] == "ready"


def test_liveness_and_readiness_probes(api_server: ServerThread) -> None:
    assert httpx.get(api_server.url + "/livez").json() == {"status": "alive"}
    ready = httpx.get(api_server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and "math" in ready.json()["usable"]


# -- errors: OpenAI's shape, the right status, never a 500 for a client mistake -------------
def test_unknown_model_is_404(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="gpt-17", messages=QUESTION)
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="expert/nobody", messages=QUESTION)


def test_invalid_field_is_400(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model="moesaic", messages=QUESTION, temperature=9)
    assert caught.value.body["param"] == "temperature" and caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model="moesaic", messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="role 'user'"):
        openai_client.chat.completions.create(model="moesaic", messages=[{"role": "system", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="moesaic.experts"):
        openai_client.chat.completions.create(
            model="moesaic", messages=QUESTION, extra_body={"moesaic": {"experts": ["ghost"]}}
        )


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'["a", "list"]', b"\xff\xfe", b""],
    ids=["broken-json", "not-an-object", "not-utf8", "empty"],
)
def test_malformed_body_is_400(api_server: ServerThread, body: bytes) -> None:
    response = httpx.post(
        api_server.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_too_long_prompt_is_400_not_500(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(
            model="expert/math", messages=[{"role": "user", "content": "word " * 9000}], max_tokens=4
        )
    assert caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(
            model="moesaic", messages=[{"role": "user", "content": "word " * 9000}], max_tokens=4
        )


def test_unknown_path_is_404_in_openai_shape(api_server: ServerThread) -> None:
    response = httpx.get(api_server.url + "/v1/nothing-here")
    assert response.status_code == 404 and "error" in response.json()


@pytest.fixture(scope="module")
async def broken_server(ray_session: None) -> AsyncIterator[ServerThread]:
    pool = ExpertPool(echo_pool_spec("all-broken", fail_load=True))
    await pool.start()
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as server:
        yield server
    await pool.shutdown()


def test_no_healthy_expert_is_503(broken_server: ServerThread) -> None:
    client = openai.OpenAI(base_url=broken_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="moesaic", messages=QUESTION)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "no_healthy_expert"
    with pytest.raises(openai.InternalServerError) as direct:
        client.chat.completions.create(model="expert/a", messages=QUESTION)
    assert direct.value.status_code == 503
    with pytest.raises(openai.InternalServerError) as streamed:
        client.chat.completions.create(model="moesaic", messages=QUESTION, stream=True)
    assert streamed.value.status_code == 503
    health = httpx.get(broken_server.url + "/healthz")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    # a liveness probe must not restart a process whose experts are down; readiness takes it out of rotation
    assert httpx.get(broken_server.url + "/livez").status_code == 200
    ready = httpx.get(broken_server.url + "/readyz")
    assert ready.status_code == 503 and "no routable expert is usable" in ready.json()["reason"]


def test_a_draining_server_is_not_ready(orchestrator: Orchestrator) -> None:
    app = create_app(orchestrator=orchestrator)
    with ServerThread(app) as server:
        assert httpx.get(server.url + "/readyz").status_code == 200
        app.state.draining = True  # what the lifespan sets at shutdown, before waiting for in-flight requests
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503 and "shutting down" in ready.json()["reason"]
        assert httpx.get(server.url + "/livez").status_code == 200


def test_route_endpoint_on_the_lexical_pool(api_server: ServerThread) -> None:
    response = httpx.post(
        api_server.url + "/v1/route", json={"messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    )
    assert response.status_code == 200
    assert response.json()["decision"]["experts"][0] == "math"
    other = httpx.post(api_server.url + "/v1/route", json={"model": "moesaic/cost", "query": "What is 2 + 2?"})
    assert other.status_code == 404 and "routing.profiles" in other.json()["error"]["message"]
