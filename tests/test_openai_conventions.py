"""OpenAI's conventions, checked with the official client: ``n`` choices, ``logprobs`` refused with a 400 where no
engine has them, SSE keep-alive comments while a stream is silent.

Over a two-expert echo pool (fault-injection backend: it answers with the prompt), so the runs are fast and the
sums can be checked against each run's own calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.service_config import ServiceConfig
from tests.conftest import ServerThread, echo_pool_spec

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
async def echo_server(ray_session: None) -> AsyncIterator[ServerThread]:
    pool = ExpertPool(echo_pool_spec("conventions"))
    await pool.start()
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as server:
        yield server
    await pool.shutdown()


@pytest.fixture
def client(echo_server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=echo_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def calls_tokens(metadata: dict[str, Any]) -> tuple[int, int]:
    calls = metadata["calls"]
    return sum(c["prompt_tokens"] for c in calls), sum(c["completion_tokens"] for c in calls)


@pytest.mark.ray
def test_n_choices_are_independent_runs_with_usage_summed(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="moesaic", messages=QUESTION, n=3, seed=7, extra_body={"moesaic": {"experts": ["a", "b"]}}
    )
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert all(choice.message.content for choice in answer.choices)
    metadata = answer.model_extra["moesaic"]
    assert metadata["n"] == 3 and len(metadata["choices"]) == 3
    runs = [calls_tokens(run) for run in metadata["choices"]]
    assert all(len(run["decision"]["experts"]) == 2 for run in metadata["choices"])
    assert answer.usage.prompt_tokens == sum(p for p, _ in runs) > 0
    assert answer.usage.completion_tokens == sum(c for _, c in runs) > 0
    assert metadata["cost"] == pytest.approx(sum(run["cost"] for run in metadata["choices"]))


@pytest.mark.ray
def test_n_choices_stream_interleaved_under_their_index(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="moesaic", messages=QUESTION, n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    texts: dict[int, str] = {}
    finished: set[int] = set()
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert set(texts) == finished == {0, 1} and all(texts.values())
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    totals = last.model_extra["moesaic"]
    assert totals["n"] == 2 and len(totals["choices"]) == 2
    runs = [calls_tokens(run) for run in totals["choices"]]
    assert last.usage.prompt_tokens == sum(p for p, _ in runs) > 0
    assert last.usage.completion_tokens == sum(c for _, c in runs)


@pytest.mark.ray
def test_n_choices_of_one_expert(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="expert/a", messages=QUESTION, n=2)
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert [run["expert"] for run in answer.model_extra["moesaic"]["choices"]] == ["a", "a"]


@pytest.mark.ray
def test_a_failed_choice_fails_the_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="expert/nobody", messages=QUESTION, n=2)


@pytest.mark.ray
@pytest.mark.parametrize(
    ("options", "param"),
    [({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"), ({"n": 17}, "n")],
)
def test_what_is_not_available_is_a_400_naming_the_parameter(
    client: openai.OpenAI, options: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="moesaic", messages=QUESTION, **options)
    assert refused.value.body["param"] == param


@pytest.mark.ray
def test_logprobs_from_an_expert_whose_engine_has_none_is_a_400_that_says_which_do(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="expert/a", messages=QUESTION, logprobs=True, top_logprobs=2)
    assert refused.value.body["param"] == "logprobs" and refused.value.body["code"] == "logprobs_unavailable"
    assert "vLLM" in refused.value.body["message"]


@pytest.mark.ray
def test_cards_say_what_an_echo_expert_cannot_do(client: openai.OpenAI) -> None:
    card = client.models.retrieve("expert/a").model_extra
    assert card["context_window"] is None  # the echo backend has no model
    assert card["capabilities"]["response_format"] is False and card["capabilities"]["tools"] is False
    assert card["capabilities"]["logprobs"] is False
    assert client.models.retrieve("moesaic").model_extra["capabilities"]["response_format"] is False


@pytest.mark.ray
def test_logprobs_false_is_accepted_and_null_in_the_answer(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="moesaic", messages=QUESTION, logprobs=False, top_logprobs=0)
    assert answer.choices[0].logprobs is None


@pytest.fixture(scope="module")
async def slow_server(ray_session: None) -> AsyncIterator[ServerThread]:
    """Experts that take 1.2 s to answer, behind a service that sends a keep-alive after 0.3 s of silence."""
    pool = ExpertPool(echo_pool_spec("slow-conventions", delay_s=1.2))
    await pool.start()
    service = ServiceConfig.model_validate({"limits": {"sse_keepalive_s": 0.3}})
    with ServerThread(create_app(orchestrator=Orchestrator(pool), service=service)) as server:
        yield server
    await pool.shutdown()


@pytest.mark.ray
def test_a_silent_stream_sends_keep_alive_comments(slow_server: ServerThread) -> None:
    body = {"model": "moesaic", "messages": QUESTION, "stream": True, "moesaic": {"experts": ["a", "b"]}}
    with httpx.stream("POST", slow_server.url + "/v1/chat/completions", json=body, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
    comments = [i for i, line in enumerate(lines) if line.startswith(":")]
    data = [i for i, line in enumerate(lines) if line.startswith("data: ")]
    assert comments and lines[-1] == "data: [DONE]"
    assert all(lines[i] == ": keep-alive" for i in comments)
    assert data[0] < comments[0] < data[-1]  # between the role chunk and the answer, while the experts work
    client = openai.OpenAI(base_url=slow_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    chunks = list(client.chat.completions.create(model="moesaic", messages=QUESTION, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # comments are invisible
