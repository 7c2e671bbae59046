"""``ChatMoesaic`` against a real server: sync, async, streaming, usage, routing metadata, tools.

The server is our app on uvicorn over a pool of echo experts (deterministic: they repeat the last
user turn) and one ``litellm`` expert whose upstream is ``ToolModel`` below, an OpenAI-compatible
stand-in for a hosted tool-calling model. One test uses the embedded model (``api_server``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_moesaic import ChatMoesaic
from pydantic import BaseModel

from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.conftest import ServerThread

pytestmark = pytest.mark.ray
KEY_ENV = "MOESAIC_TOOL_MODEL_KEY"


class ToolModel:
    """Stands in for a hosted model that calls tools (OpenAI's wire format); records every request.

    Offered tools, it calls the first one with ``{"a": 2, "b": 3}``; given a tool result, it reports
    it ("The tool said 5."); streamed, the call's arguments arrive in two pieces, as real APIs send them.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request) -> Any:
        body = await request.json()
        self.requests.append(body)
        last = body["messages"][-1]
        if last["role"] == "tool":
            message: dict[str, Any] = {"role": "assistant", "content": f"The tool said {last['content']}."}
        elif body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"a": 2, "b": 3}'}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": "No tools were offered."}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        envelope = {"id": f"up-{uuid.uuid4().hex}", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return JSONResponse({**envelope, "object": "chat.completion", "choices": [choice], "usage": usage})
        return StreamingResponse(self._sse(envelope, message, finish, usage), media_type="text/event-stream")

    async def _sse(self, envelope: dict, message: dict, finish: str, usage: dict) -> AsyncIterator[str]:
        def chunk(delta: dict, finish_reason: str | None = None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if delta is not None else []
            payload = {**envelope, "object": "chat.completion.chunk", "choices": choices, **extra}
            return f"data: {json.dumps(payload)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for call in message.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
            head["function"]["arguments"] = arguments[:6]
            yield chunk({"tool_calls": [head]})
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[6:]}}]})
        if message.get("content"):
            yield chunk({"content": message["content"]})
        yield chunk({}, finish)
        yield chunk(None, usage=usage)  # type: ignore[arg-type]
        yield "data: [DONE]\n\n"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Sum(BaseModel):
    """The two numbers to add."""

    a: int
    b: int


@pytest.fixture(scope="module")
def tool_model() -> Iterator[tuple[ToolModel, ServerThread]]:
    model = ToolModel()
    with ServerThread(model.app) as server:
        yield model, server


@pytest.fixture(scope="module")
async def server(ray_session: None, tool_model: tuple[ToolModel, ServerThread]) -> AsyncIterator[ServerThread]:
    import os

    os.environ[KEY_ENV] = "sk-test"  # the pool forwards it to the litellm expert's actor
    upstream = tool_model[1]
    spec = parse_pool(
        {
            "name": "langchain-live",
            "roles": {"aggregator": "b"},
            "experts": [
                {"name": "a", "backend": "echo", "model": "echo", "skills": ["math"], "resources": {"num_cpus": 0}},
                {"name": "b", "backend": "echo", "model": "echo", "skills": ["writing"], "resources": {"num_cpus": 0}},
                {
                    "name": "caller",
                    "backend": "litellm",
                    "model": "openai/tool-model",
                    "routable": True,
                    "options": {"api_base": upstream.url + "/v1", "api_key_env": KEY_ENV},
                    "resources": {"num_cpus": 0},
                },
            ],
        },
        "<langchain live pool>",
    )
    pool = ExpertPool(spec)
    health = await pool.start()
    assert all(h["state"] == "ready" for h in health.values()), health
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as thread:
        yield thread
    await pool.shutdown()


def chat(server: ServerThread, **options: Any) -> ChatMoesaic:
    return ChatMoesaic(base_url=server.url + "/v1", max_retries=0, timeout=60, **options)


def test_invoke_returns_answer_usage_and_routing(server: ServerThread) -> None:
    reply = chat(server).invoke("Write a poem about rain")
    assert reply.content == "Write a poem about rain"  # echo expert b (writing) repeats it
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 5
    moesaic = reply.response_metadata["moesaic"]
    assert moesaic["decision"]["experts"] == ["b"]
    assert [call["expert"] for call in moesaic["calls"]] == ["b"]
    assert reply.response_metadata["finish_reason"] == "stop"


async def test_ainvoke_with_routing_settings(server: ServerThread) -> None:
    reply = await chat(server, experts=["a", "b"], strategy="vote").ainvoke("Solve x plus one")
    assert reply.content == "Solve x plus one"
    moesaic = reply.response_metadata["moesaic"]
    assert moesaic["decision"]["experts"] == ["a", "b"] and moesaic["strategy"] == "vote"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 8  # both experts' tokens


def test_stream_yields_text_then_metadata_and_usage(server: ServerThread) -> None:
    chunks = list(chat(server).stream("Write a poem about the sea"))
    assert len([c for c in chunks if c.content]) == 6  # one per word: the echo expert streams word by word
    merged = chunks[0]
    for piece in chunks[1:]:
        merged = merged + piece
    assert isinstance(merged, AIMessageChunk)
    assert merged.content == "Write a poem about the sea"
    assert merged.response_metadata["moesaic"]["decision"]["experts"] == ["b"]
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] == 6


async def test_astream_to_one_expert(server: ServerThread) -> None:
    pieces = [chunk async for chunk in chat(server, model="expert/a").astream("count to three")]
    assert "".join(str(p.content) for p in pieces) == "count to three"
    final = [p for p in pieces if "moesaic" in p.response_metadata]
    assert final and final[0].response_metadata["moesaic"]["expert"] == "a"


def test_bind_tools_round_trip(server: ServerThread, tool_model: tuple[ToolModel, ServerThread]) -> None:
    """The tools reach the tool-capable expert; its call comes back; the tool's result goes back to it."""
    upstream = tool_model[0]
    model = chat(server, experts=["caller", "a"], strategy="passthrough").bind_tools([add])
    question = HumanMessage("What is 2 + 3?")
    first = model.invoke([question])
    assert first.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}]
    assert first.response_metadata["finish_reason"] == "tool_calls"
    passthrough = first.response_metadata["moesaic"]["passthrough"]
    assert passthrough == {"fields": ["tools"], "sent_to": ["caller"], "not_supported_by": ["a"]}
    sent = upstream.requests[-1]
    assert sent["tools"][0]["function"]["name"] == "add"
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]

    result = ToolMessage(str(add.invoke(first.tool_calls[0]["args"])), tool_call_id="call_1")
    second = model.invoke([question, first, result])
    assert second.content == "The tool said 5."
    assert not second.tool_calls
    replayed = upstream.requests[-1]["messages"]
    assert replayed[-2]["tool_calls"][0]["id"] == "call_1"
    assert replayed[-1] == {"role": "tool", "content": "5", "tool_call_id": "call_1"}


def test_streamed_tool_call(server: ServerThread) -> None:
    model = chat(server, experts=["caller"]).bind_tools([add], tool_choice="add")
    merged = None
    for chunk in model.stream("What is 2 + 3?"):
        merged = chunk if merged is None else merged + chunk
    assert isinstance(merged, AIMessageChunk)
    assert merged.tool_calls == [{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}]
    assert merged.response_metadata["finish_reason"] == "tool_calls"


def test_structured_output_by_function_calling(server: ServerThread) -> None:
    structured = chat(server, experts=["caller"]).with_structured_output(Sum, method="function_calling")
    assert structured.invoke("Two and three") == Sum(a=2, b=3)


def test_tools_to_local_experts_are_reported_not_dropped(server: ServerThread) -> None:
    reply = chat(server, experts=["a"]).bind_tools([add]).invoke("Solve 2 plus 3")
    assert reply.content == "Solve 2 plus 3" and not reply.tool_calls  # the echo expert cannot call tools
    assert reply.response_metadata["moesaic"]["passthrough"]["not_supported_by"] == ["a"]


def test_server_errors_surface_as_openai_errors(server: ServerThread) -> None:
    import openai

    with pytest.raises(openai.NotFoundError, match="nobody"):
        chat(server, model="expert/nobody").invoke("hi")
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        chat(server).invoke("hi", tool_choice="required")


@pytest.mark.model
def test_invoke_the_embedded_pool(api_server: ServerThread) -> None:
    reply = chat(api_server, max_tokens=8, temperature=0.0, k=1).invoke("Say hello.")
    assert isinstance(reply.content, str) and reply.content
    assert len(reply.response_metadata["moesaic"]["decision"]["experts"]) == 1
    assert reply.usage_metadata is not None and 0 < reply.usage_metadata["output_tokens"] <= 8
