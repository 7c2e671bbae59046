"""``moesaic.events``: a streamed pipeline answer also carries its progress (decision, each expert's answer as it
lands) as chunks without choices, for consoles; clients that do not ask see the usual stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.conftest import ServerThread, echo_pool_spec

pytestmark = pytest.mark.ray
ASK = {"model": "moesaic", "messages": [{"role": "user", "content": "one two three"}], "stream": True}


@pytest.fixture(scope="module")
async def pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("events"))
    await pool.start()
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def server(pool: ExpertPool) -> Iterator[ServerThread]:
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as running:
        yield running


def chunks(server: ServerThread, **moesaic: Any) -> list[dict[str, Any]]:
    body = {**ASK, "moesaic": {"experts": ["a", "b"], "strategy": "vote", **moesaic}}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
        data = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def test_progress_comes_as_event_chunks_before_the_answer(server: ServerThread) -> None:
    received = chunks(server, events=True)
    events = [c["moesaic"] for c in received if c["choices"] == [] and "event" in c.get("moesaic", {})]
    assert events[0]["event"] == "decision" and events[0]["decision"]["experts"] == ["a", "b"]
    answers = [e for e in events if e["event"] == "answer"]
    assert sorted(a["expert"] for a in answers) == ["a", "b"]
    assert all(a["text"] == "one two three" and a["call"]["completion_tokens"] == 3 for a in answers)
    first_text = next(i for i, c in enumerate(received) if c["choices"] and c["choices"][0]["delta"].get("content"))
    last_event = max(i for i, c in enumerate(received) if "event" in c.get("moesaic", {}))
    assert last_event < first_text  # a vote's text goes out once both answers are in
    assert "event" not in received[-1]["moesaic"] and received[-1]["moesaic"]["strategy"] == "vote"


def test_each_expert_writes_into_its_own_events_before_its_answer_lands(server: ServerThread) -> None:
    events = [c["moesaic"] for c in chunks(server, events=True) if "event" in c.get("moesaic", {})]
    for name in ("a", "b"):
        own = [i for i, e in enumerate(events) if e["event"] == "expert_delta" and e["expert"] == name]
        answer = next(i for i, e in enumerate(events) if e["event"] == "answer" and e["expert"] == name)
        assert len(own) == 3 and max(own) < answer  # the echo backend streams word by word
        assert "".join(events[i]["text"] for i in own) == events[answer]["text"] == "one two three"


def test_without_asking_the_stream_is_as_before(server: ServerThread) -> None:
    assert not [c for c in chunks(server) if "event" in (c.get("moesaic") or {})]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    stream = client.chat.completions.create(
        model="moesaic",
        messages=ASK["messages"],
        stream=True,
        extra_body={"moesaic": {"experts": ["a", "b"], "events": True}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)  # event chunks: no choices
    assert text == "one two three"
