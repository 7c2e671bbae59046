"""Escalation live: the LangGraph pipeline asks a second stage only when the first stage disagrees.

A pool of three echo experts (fault injection: scripted answers) routed by measured profiles: two cheap
experts answer first; the strong one is asked only when they disagree. Over the real Ray actors, the
pipeline, streaming and uvicorn with the openai client; the cost policy's plans and a per-request budget
through ``POST /v1/route``; and once over the embedded model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pandas as pd
import pytest
import yaml

from experts.config._pool_spec import RoutingSpec, load_pool
from experts.runtime._pool import ExpertPool
from experts.types import GenerationRequest, Message
from orchestrator.pipeline.batch import BatchRunner
from orchestrator.pipeline.events import DecisionEvent, DoneEvent
from orchestrator.pipeline.graph import build_graph
from orchestrator.pipeline.nodes import PipelineNodes
from orchestrator.pipeline.orchestrator import Orchestrator, build_aggregator
from orchestrator.pipeline.state import PipelineRequest
from orchestrator.server.api.app import create_app
from router._factory import load_profiles
from router._profiled import ProfiledRouter
from router._profiles import build_profiles
from router._store import export_json
from router.offline._outcomes import load_outcomes
from tests.conftest import ServerThread

pytestmark = pytest.mark.ray

# profile names carry known model families, so each call has a cost (active params x chars / 4)
CHEAP_A, CHEAP_B, STRONG = "Phi-3-mini-a", "Phi-3-mini-b", "Meta-Llama-3_1-70B-s"
AGREE = "Which planet is the largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth"
DISAGREE = "Which metal is liquid at room temperature?\nA. Iron\nB. Lead\nC. Mercury\nD. Tin"


def outcome_frame(questions: int = 120) -> pd.DataFrame:
    """Measured outcomes: the strong model right 90% of the time, the cheap ones 60%, on science questions."""
    rng = np.random.default_rng(7)
    rows = []
    for n in range(questions):
        row: dict[str, Any] = {
            "question_id": f"q{n}",
            "question": f"Which element or planet fits clue number {n} about {['atoms', 'orbits', 'metals'][n % 3]}?",
            "category": ["chemistry", "astronomy"][n % 2],
            "answer": "A",
        }
        for name, accuracy, chars in ((CHEAP_A, 0.6, 400), (CHEAP_B, 0.6, 420), (STRONG, 0.9, 600)):
            right = bool(rng.random() < accuracy)
            row[f"{name}|correct"] = right
            row[f"{name}|pred"] = "A" if right else str(rng.choice(list("BCD")))
            row[f"{name}|chars"] = chars
        rows.append(row)
    return pd.DataFrame(rows)


def escalation_pool(folder: Path, policy: str = "escalate") -> Path:
    outcomes = folder / "outcomes.csv"
    outcome_frame().to_csv(outcomes, index=False)
    export_json(build_profiles(load_outcomes(outcomes)["all"], pool="escalation"), folder / "profiles.json")

    def expert(name: str, profile: str, replies: dict[str, str]) -> dict[str, Any]:
        return {
            "name": name,
            "profile_name": profile,
            "backend": "echo",
            "model": "echo",
            "options": {"replies": replies},
            "resources": {"num_cpus": 0},
        }

    pool = {
        "name": "escalation",
        "routing": {"k": None, "max_experts": 3, "policy": policy, "profiles": {"json": "profiles.json"}},
        "aggregation": {"strategy": "vote", "answer_kind": "choice"},
        "experts": [
            expert("cheap-a", CHEAP_A, {"planet": "The answer is (B).", "metal": "The answer is (C)."}),
            expert("cheap-b", CHEAP_B, {"planet": "The answer is (B).", "metal": "The answer is (D)."}),
            expert("strong", STRONG, {"planet": "The answer is (B).", "metal": "The answer is (C)."}),
        ],
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return escalation_pool(tmp_path_factory.mktemp("escalation"))


@pytest.fixture(scope="module")
async def pool(ray_session: None, pool_file: Path) -> AsyncIterator[ExpertPool]:
    expert_pool = ExpertPool(load_pool(pool_file))
    health = await expert_pool.start()
    assert all(h["state"] == "ready" for h in health.values()), health
    yield expert_pool
    await expert_pool.shutdown()


@pytest.fixture(scope="module")
def orchestrator(pool: ExpertPool) -> Orchestrator:
    return Orchestrator(pool)


def request(question: str, **changes: Any) -> PipelineRequest:
    return PipelineRequest(GenerationRequest(messages=[Message("user", question)], max_tokens=32), **changes)


def stages(calls: list[Any]) -> list[tuple[str, int]]:
    return sorted((call.expert, call.stage) for call in calls)


async def test_agreeing_first_stage_stops(orchestrator: Orchestrator) -> None:
    result = await orchestrator.run(request(AGREE))
    escalation = result.decision.escalation
    assert escalation is not None and escalation.then == ["strong"]
    assert escalation.escalated is False and "agreed on 'B'" in escalation.reason
    assert stages(result.calls) == [("cheap-a", 1), ("cheap-b", 1)]
    assert result.verdict.answer == "B" and sorted(result.decision.experts) == ["cheap-a", "cheap-b"]


async def test_disagreeing_first_stage_asks_the_strong_expert(orchestrator: Orchestrator) -> None:
    result = await orchestrator.run(request(DISAGREE))
    escalation = result.decision.escalation
    assert escalation is not None and escalation.escalated is True
    assert "did not agree" in escalation.reason and "'C'" in escalation.reason and "'D'" in escalation.reason
    assert stages(result.calls) == [("cheap-a", 1), ("cheap-b", 1), ("strong", 2)]
    assert result.decision.experts[-1] == "strong" and result.decision.k == 3
    assert result.verdict.answer == "C"  # cheap-a and strong outvote cheap-b
    assert "review" in result.timings_ms


async def test_a_threshold_above_the_first_stages_competence_escalates_an_agreement(pool: ExpertPool) -> None:
    spec = pool.spec.model_copy(update={"routing": pool.spec.routing.model_copy(update={"escalate_threshold": 0.99})})
    router = ProfiledRouter(spec, load_profiles(spec))
    graph = build_graph(PipelineNodes(pool, router, build_aggregator(spec)))
    state = await graph.ainvoke({"request": request(AGREE), "timings_ms": {}})
    escalation = state["decision"].escalation
    assert escalation.escalated is True and "mean competence" in escalation.reason and "< 0.99" in escalation.reason
    assert sorted((c.expert, c.stage) for c in state["calls"]) == [("cheap-a", 1), ("cheap-b", 1), ("strong", 2)]


async def test_streaming_escalation(orchestrator: Orchestrator) -> None:
    events = [event async for event in orchestrator.stream(request(DISAGREE))]
    assert isinstance(events[0], DecisionEvent) and events[0].decision.escalation is not None
    assert events[0].decision.escalation.escalated is None  # decided after the first stage
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert stages(done.result.calls) == [("cheap-a", 1), ("cheap-b", 1), ("strong", 2)]
    assert "".join(event.text for event in events[1:-1] if hasattr(event, "text")) == "The answer is (C)."


@pytest.fixture(scope="module")
def client(orchestrator: Orchestrator) -> Iterator[tuple[openai.OpenAI, str]]:
    with ServerThread(create_app(orchestrator=orchestrator)) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60), server.url


def test_escalation_over_http_shows_each_stage(client: tuple[openai.OpenAI, str]) -> None:
    api, _ = client
    answer = api.chat.completions.create(model="moesaic", messages=[{"role": "user", "content": DISAGREE}])
    metadata = answer.model_extra["moesaic"]
    assert metadata["decision"]["escalation"]["escalated"] is True
    assert sorted((call["expert"], call["stage"]) for call in metadata["calls"]) == [
        ("cheap-a", 1),
        ("cheap-b", 1),
        ("strong", 2),
    ]
    chunks = list(
        api.chat.completions.create(model="moesaic", messages=[{"role": "user", "content": AGREE}], stream=True)
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "The answer is (B)."


async def test_batch_mode_runs_the_second_stage_only_where_the_first_disagreed(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": "agree", "question": AGREE}) + "\n" + json.dumps({"id": "split", "question": DISAGREE}) + "\n"
    )
    report = await BatchRunner(orchestrator, max_tokens=32).run(source, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert report.failed == 0 and report.calls_made == 5  # 2 + 3
    assert sorted(rows[0]["experts"]) == ["cheap-a", "cheap-b"] and rows[0]["answer"] == "The answer is (B)."
    assert rows[1]["experts"][-1] == "strong" and rows[1]["answer"] == "The answer is (C)."
    again = await BatchRunner(orchestrator, max_tokens=32).run(source, tmp_path / "out.jsonl")
    assert again.calls_made == 0 and again.calls_reused == 5  # resumed: the reviewed decisions were kept


def test_route_explains_the_cost_plans_and_takes_a_budget(client: tuple[openai.OpenAI, str]) -> None:
    _, url = client
    body = {"model": "moesaic/cost", "query": DISAGREE}
    routed = httpx.post(f"{url}/v1/route", json=body, timeout=30).json()
    decision = routed["decision"]
    assert "plans (lambda" in routed["explanation"]
    assert decision["budget"] is None and decision["cost_lambda"] == 0.0  # the pool sets no budget
    plans = decision["plans"]
    assert len(plans) >= 4 and sum(plan["chosen"] for plan in plans) == 1
    assert {plan["kind"] for plan in plans} >= {"single", "vote", "escalate"}
    values = [plan["value"] for plan in plans]
    assert values == sorted(values, reverse=True) and plans[0]["chosen"]  # best first, and it won
    assert all(plan["value"] == pytest.approx(plan["estimated_accuracy"], abs=1e-3) for plan in plans)
    chosen = plans[0]
    assert sorted(decision["experts"]) == sorted(chosen["experts"])

    budgeted = httpx.post(f"{url}/v1/route", json={**body, "moesaic": {"budget": 0.5}}, timeout=30).json()
    decision = budgeted["decision"]
    assert decision["budget"] == 0.5 and decision["cost_lambda"] > 0.0
    for plan in decision["plans"]:
        expected = plan["estimated_accuracy"] - decision["cost_lambda"] * plan["expected_cost"]
        assert plan["value"] == pytest.approx(expected, abs=1e-3)
    # on 120 profiled questions the optimiser does not beat the budget's random mix by two standard errors
    reasons = [score["reason"] for score in decision["scores"] if score["chosen"]]
    assert not any(plan["chosen"] for plan in decision["plans"]) and "random mix" in reasons[0]

    refused = httpx.post(f"{url}/v1/route", json={**body, "model": "moesaic/skills", "moesaic": {"budget": 1}})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "moesaic.budget"
    bad = httpx.post(f"{url}/v1/route", json={**body, "moesaic": {"budget": -1}}, timeout=30)
    assert bad.status_code == 400 and "budget" in bad.text


@pytest.mark.model
async def test_escalation_over_the_embedded_model(embedded_pool: ExpertPool, tmp_path: Path) -> None:
    """The default pool's experts as an escalation: whatever they answer, the review decides and says why."""
    frame = outcome_frame().rename(
        columns=lambda c: c.replace(CHEAP_A, "math").replace(CHEAP_B, "writer").replace(STRONG, "generalist")
    )
    path = tmp_path / "outcomes.csv"
    frame.to_csv(path, index=False)
    profiles = build_profiles(load_outcomes(path)["all"], pool="default")
    spec_experts = embedded_pool.spec.experts
    profiles.mean_cost = np.tile(np.array([[1.0, 1.0, 10.0]]), (len(profiles.categories), 1))
    experts = [e.model_copy(update={"routable": e.name in ("math", "writer", "generalist")}) for e in spec_experts]
    spec = embedded_pool.spec.model_copy(
        update={"routing": RoutingSpec(k=None, max_experts=3, policy="escalate"), "experts": experts}
    )
    router = ProfiledRouter(spec, profiles)
    graph = build_graph(PipelineNodes(embedded_pool, router, build_aggregator(embedded_pool.spec)))
    question = "What is 12 * 7? Answer with the number."
    state = await graph.ainvoke({"request": request(question, strategy="vote"), "timings_ms": {}})
    escalation = state["decision"].escalation
    assert escalation is not None and escalation.escalated is not None and escalation.reason
    expected = [("generalist", 2)] if escalation.escalated else []
    first = sorted((c.expert, c.stage) for c in state["calls"] if c.role == "expert" and c.stage == 1)
    assert first == [("math", 1), ("writer", 1)]
    assert sorted((c.expert, c.stage) for c in state["calls"] if c.stage == 2) == expected
    assert state["final"].text


def test_cli_route_lists_the_plans_and_refuses_a_budget_without_a_plan_policy(pool_file: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli.main import app

    shown = CliRunner().invoke(
        app, ["route", DISAGREE, "--pool", str(pool_file), "--policy", "cost", "--budget", "0.5"]
    )
    assert shown.exit_code == 0, shown.output
    assert "plans weighed: lambda" in shown.output and "budget 0.5x" in shown.output
    assert "escalate" in shown.output and "vote" in shown.output and "single" in shown.output
    as_json = CliRunner().invoke(app, ["route", AGREE, "--pool", str(pool_file), "--json"])
    decision = json.loads(as_json.stdout)
    assert decision["policy"] == "escalate" and decision["escalation"]["then"] == ["strong"]
    refused = CliRunner().invoke(app, ["route", AGREE, "--pool", str(pool_file), "--policy", "skills", "--budget", "1"])
    assert refused.exit_code == 2 and "budget applies to the cost and escalate policies" in refused.output


def test_a_chat_request_carries_its_budget_through_the_pipeline(client: tuple[openai.OpenAI, str]) -> None:
    api, _ = client
    question = [{"role": "user", "content": DISAGREE}]
    answer = api.chat.completions.create(
        model="moesaic/cost", messages=question, extra_body={"moesaic": {"budget": 0.5}}
    )
    decision = answer.model_extra["moesaic"]["decision"]
    assert decision["policy"] == "cost" and decision["budget"] == 0.5 and decision["cost_lambda"] > 0
    assert answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(model="moesaic/skills", messages=question, extra_body={"moesaic": {"budget": 0.5}})
    assert refused.value.body["param"] == "moesaic.budget"
