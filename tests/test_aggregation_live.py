"""Aggregation live through the API: the consensus short-cut, synthesis, vote, rank, streaming, the bill.

A "twins" pool runs two experts with the same prompt on the embedded model at temperature 0,
so their answers agree word for word and the short-cut must fire; asking for no short-cut
makes the aggregator write. Everything goes through real uvicorn and the openai client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest

from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.conftest import ServerThread

pytestmark = [pytest.mark.ray, pytest.mark.model]

PROMPT = "You are a knowledgeable assistant. Answer accurately and concisely."
QUESTION = [{"role": "user", "content": "Name the largest planet in the solar system."}]


def twins_spec() -> Any:
    def expert(name: str, routable: bool = True) -> dict[str, Any]:
        return {
            "name": name,
            "backend": "local",
            "model": "embedded:smollm2-135m-instruct",
            "system_prompt": PROMPT,
            "skills": {"general_knowledge": 1.0},
            "routable": routable,
            "generation": {"max_tokens": 24, "temperature": 0.0},
            "resources": {"num_cpus": 0, "torch_threads": 1},
        }

    return parse_pool(
        {
            "name": "twins",
            "routing": {"k": 2},
            "roles": {"aggregator": "editor"},
            "aggregation": {"strategy": "synthesize", "consensus": 1.0, "max_tokens": 20},
            "experts": [expert("twin-a"), expert("twin-b"), expert("editor", routable=False)],
        },
        "<twins pool>",
    )


@pytest.fixture(scope="module")
async def twins_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(twins_spec())
    health = await pool.start()
    assert all(h["state"] == "ready" for h in health.values()), health
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def client(twins_pool: ExpertPool) -> Iterator[openai.OpenAI]:
    with ServerThread(create_app(orchestrator=Orchestrator(twins_pool))) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, **moesaic: Any) -> Any:
    return client.chat.completions.create(
        model="moesaic", messages=QUESTION, temperature=0, extra_body={"moesaic": moesaic} if moesaic else None
    )


def assert_billed(usage: Any, calls: list[dict[str, Any]]) -> None:
    assert usage.prompt_tokens == sum(call["prompt_tokens"] for call in calls) > 0
    assert usage.completion_tokens == sum(call["completion_tokens"] for call in calls) > 0
    for call in calls:
        assert set(call) >= {"expert", "role", "prompt_tokens", "completion_tokens", "cost"}


def test_agreeing_experts_take_the_short_cut(client: openai.OpenAI) -> None:
    completion = ask(client)
    metadata = completion.model_extra["moesaic"]
    assert metadata["shortcut"] is True and metadata["strategy"] == "synthesize"
    assert [call["role"] for call in metadata["calls"]] == ["expert", "expert"]  # no aggregator call
    answers = {answer["text"] for answer in metadata["answers"]}
    assert len(answers) == 1 and completion.choices[0].message.content in answers
    assert metadata["aggregation"]["agreement"] == 1.0 and metadata["aggregation"]["answer_kind"] == "text"
    assert_billed(completion.usage, metadata["calls"])


def test_without_the_short_cut_the_aggregator_synthesises_on_its_own_budget(client: openai.OpenAI) -> None:
    completion = ask(client, shortcut=False, aggregator_max_tokens=12)
    metadata = completion.model_extra["moesaic"]
    assert metadata["shortcut"] is False and metadata["strategy"] == "synthesize"
    roles = [(call["expert"], call["role"]) for call in metadata["calls"]]
    assert roles.count(("editor", "aggregator")) == 1 and len(roles) == 3
    aggregator_call = next(call for call in metadata["calls"] if call["role"] == "aggregator")
    assert 0 < aggregator_call["completion_tokens"] <= 12  # its own budget, not the experts' 24
    assert metadata["aggregation"]["chosen_expert"] is None  # the aggregator wrote the answer
    assert completion.choices[0].message.content.strip()
    assert_billed(completion.usage, metadata["calls"])


def test_the_aggregators_tokens_stream_and_the_short_cut_streams_the_agreed_text(client: openai.OpenAI) -> None:
    def stream(**moesaic: Any) -> tuple[list[str], dict[str, Any], Any]:
        chunks = list(
            client.chat.completions.create(
                model="moesaic",
                messages=QUESTION,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"moesaic": moesaic},
            )
        )
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        final = next(c for c in chunks if c.choices and c.choices[0].finish_reason).model_extra["moesaic"]
        return pieces, final, chunks[-1].usage

    pieces, metadata, usage = stream(shortcut=False)
    assert metadata["shortcut"] is False and len(pieces) > 1  # token by token from the aggregator
    assert_billed(usage, metadata["calls"])
    pieces, metadata, usage = stream()
    assert metadata["shortcut"] is True and "".join(pieces) == metadata["answers"][0]["text"]
    assert_billed(usage, metadata["calls"])


def test_vote_and_rank_return_a_candidates_text(client: openai.OpenAI) -> None:
    voted = ask(client, strategy="vote").model_extra["moesaic"]
    assert voted["strategy"] == "vote" and voted["shortcut"] is False
    assert voted["aggregation"]["chosen_expert"] in ("twin-a", "twin-b")
    assert [call["role"] for call in voted["calls"]] == ["expert", "expert"]
    ranked_completion = ask(client, strategy="rank", shortcut=False)
    ranked = ranked_completion.model_extra["moesaic"]
    assert ranked["strategy"] == "rank" and ("editor", "judge") in [(c["expert"], c["role"]) for c in ranked["calls"]]
    assert ranked_completion.choices[0].message.content in {a["text"] for a in ranked["answers"]}
    assert_billed(ranked_completion.usage, ranked["calls"])


def test_bad_aggregation_options_are_400(client: openai.OpenAI) -> None:
    for options in ({"strategy": "merge"}, {"consensus": 0}, {"aggregator_max_tokens": 0}):
        with pytest.raises(openai.BadRequestError) as raised:
            ask(client, **options)
        assert raised.value.body["param"].startswith("moesaic.")  # type: ignore[index]
