"""Interop: the HTTP API driven by the clients people already use, unchanged.

The official ``openai`` client, LangChain's ``ChatOpenAI(base_url=...)`` and LiteLLM's ``openai/``
provider, each against a real uvicorn server over a pool of echo experts (they repeat the last
user turn, so every answer is known in advance).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.conftest import ServerThread, echo_pool_spec

pytestmark = pytest.mark.ray
QUESTION = "Write a haiku about rain"


@pytest.fixture(scope="module")
async def server(ray_session: None) -> AsyncIterator[ServerThread]:
    pool = ExpertPool(echo_pool_spec("interop"))
    await pool.start()
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as thread:
        yield thread
    await pool.shutdown()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


# -- the official openai client -----------------------------------------------------------
def test_openai_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="moesaic",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"moesaic": {"experts": ["a", "b"], "strategy": "vote"}},
    )
    assert reply.choices[0].message.content == QUESTION
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 2 * len(QUESTION.split())
    moesaic = reply.model_extra["moesaic"]
    assert moesaic["decision"]["experts"] == ["a", "b"] and moesaic["strategy"] == "vote"


def test_openai_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="expert/a",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == QUESTION
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(QUESTION.split())
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals[0].choices[0].finish_reason == "stop" and finals[0].model_extra["moesaic"]["expert"] == "a"


def test_openai_models_and_errors(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"moesaic", "expert/a", "expert/b"} <= ids
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-nothing", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]


# -- LangChain's ChatOpenAI ------------------------------------------------------------------
def chat_openai(server: ServerThread, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60, **options)


def test_langchain_chat_openai_invoke(server: ServerThread) -> None:
    reply = chat_openai(server, model="moesaic").invoke(QUESTION)
    assert reply.content == QUESTION
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == len(QUESTION.split())
    assert reply.response_metadata["finish_reason"] == "stop"


async def test_langchain_chat_openai_astream(server: ServerThread) -> None:
    model = chat_openai(server, model="expert/b", stream_usage=True)
    merged = None
    async for chunk in model.astream(QUESTION):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.content == QUESTION
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] == len(QUESTION.split())


# -- LiteLLM's openai/ provider ----------------------------------------------------------------
def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


async def test_litellm_openai_provider(server: ServerThread) -> None:
    litellm = _litellm()
    reply = await litellm.acompletion(
        model="openai/moesaic",
        api_base=server.url + "/v1",
        api_key="unused",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"moesaic": {"experts": ["b"]}},
    )
    assert reply.choices[0].message.content == QUESTION
    assert reply.usage.completion_tokens == len(QUESTION.split())
    assert reply.model_extra["moesaic"]["decision"]["experts"] == ["b"]


async def test_litellm_openai_provider_streams(server: ServerThread) -> None:
    litellm = _litellm()
    stream = await litellm.acompletion(
        model="openai/expert/a",
        api_base=server.url + "/v1",
        api_key="unused",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async for chunk in stream:
        pieces += [choice.delta.content or "" for choice in chunk.choices]
        usage = getattr(chunk, "usage", None) or usage
    assert "".join(pieces) == QUESTION
    assert usage is not None and usage.completion_tokens == len(QUESTION.split())
