"""The pipeline on real Ray actors: fan-out to experts, aggregation, batching by expert, health."""

from __future__ import annotations

import asyncio

import pytest

from experts.runtime._pool import ExpertCallFailed, ExpertPool, ExpertUnavailable
from experts.types import GenerationRequest, Message
from orchestrator.pipeline.events import DecisionEvent, DoneEvent, TextEvent
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from tests.conftest import echo_pool_spec

pytestmark = [pytest.mark.ray, pytest.mark.model]


async def test_every_expert_runs_in_its_own_ready_actor(embedded_pool: ExpertPool) -> None:
    health = await embedded_pool.health()
    assert set(health) == {"math", "coder", "writer", "generalist", "conductor"}
    assert all(h["state"] == "ready" and h["backend"] == "local" for h in health.values())
    assert embedded_pool.healthy_names() == embedded_pool.expert_names


async def test_two_experts_answer_and_the_aggregator_synthesises(orchestrator: Orchestrator) -> None:
    request = PipelineRequest(
        GenerationRequest([Message("user", "What is 12 * 7?")], max_tokens=24, temperature=0.0), k=2, consensus=None
    )
    result = await orchestrator.run(request)
    assert result.decision.experts[0] == "math" and len(result.decision.experts) == 2
    assert result.strategy == "synthesize" and result.text.strip()
    assert [call.role for call in result.calls].count("expert") == 2
    assert [call.expert for call in result.calls if call.role == "aggregator"] == ["conductor"]
    assert {a.expert for a in result.answers} == set(result.decision.experts)
    # usage is summed over every model call, the fan-out included
    assert result.usage.prompt_tokens == sum(c.prompt_tokens for c in result.calls) > 0
    assert result.usage.completion_tokens == sum(c.completion_tokens for c in result.calls) > 0
    for step in ("understand", "recruit", "aggregate", "total", "expert:math"):
        assert step in result.timings_ms


async def test_one_expert_passes_through(orchestrator: Orchestrator) -> None:
    result = await orchestrator.run(
        PipelineRequest(
            GenerationRequest([Message("user", "Write a haiku about rain.")], max_tokens=16, temperature=0.0), k=1
        )
    )
    assert result.strategy == "passthrough" and result.decision.experts == ["writer"]
    assert len(result.calls) == 1 and result.text == result.answers[0].text


async def test_a_single_expert_plan_is_one_graph_step_and_a_fan_out_takes_more(orchestrator: Orchestrator) -> None:
    def state(k: int) -> dict[str, object]:
        question = GenerationRequest([Message("user", "Write a haiku about rain.")], max_tokens=8, temperature=0.0)
        return {"request": PipelineRequest(question, k=k, consensus=None), "timings_ms": {}}

    single = [list(update) async for update in orchestrator.graph.astream(state(1), stream_mode="updates")]
    assert single == [["route"]]  # asked and aggregated inside the route step: one super-step
    several = [list(update) async for update in orchestrator.graph.astream(state(2), stream_mode="updates")]
    assert several == [["route"], ["ask_expert"], ["ask_expert"], ["aggregate"]]


async def test_streaming_sends_decision_then_the_aggregators_text(orchestrator: Orchestrator) -> None:
    events = [
        event
        async for event in orchestrator.stream(
            PipelineRequest(
                GenerationRequest([Message("user", "Explain what a prime number is.")], max_tokens=16, temperature=0.0),
                k=2,
                consensus=None,  # the two experts may agree word for word: make the aggregator write
            )
        )
    ]
    assert isinstance(events[0], DecisionEvent) and isinstance(events[-1], DoneEvent)
    texts = [event.text for event in events if isinstance(event, TextEvent)]
    assert len(texts) > 1 and "".join(texts) == events[-1].result.text
    assert events[-1].result.strategy == "synthesize"


async def test_concurrent_requests_for_one_expert_run_as_a_batch(embedded_pool: ExpertPool) -> None:
    before = (await embedded_pool.health())["coder"]
    prompts = [f"Write a Python one-liner that prints {n}." for n in range(6)]
    completions = await asyncio.gather(
        *(
            embedded_pool.generate("coder", GenerationRequest([Message("user", p)], max_tokens=8, temperature=0.0))
            for p in prompts
        )
    )
    after = (await embedded_pool.health())["coder"]
    assert len(completions) == 6 and all(c.text for c in completions)
    assert after["requests"] - before["requests"] == 6
    # grouped where it counts: the continuous engine decoded them together (a completion's batch_size is the
    # most requests it shared a forward with), however the actor's batcher happened to hand them over; each
    # takes several decode steps, so none of the six ran alone
    assert all(c.batch_size > 1 for c in completions), [c.batch_size for c in completions]


async def test_forced_experts_and_unknown_expert(orchestrator: Orchestrator, embedded_pool: ExpertPool) -> None:
    result = await orchestrator.run(
        PipelineRequest(
            GenerationRequest([Message("user", "hi")], max_tokens=8, temperature=0.0), experts=["generalist"]
        )
    )
    assert result.decision.policy == "forced" and result.decision.experts == ["generalist"]
    with pytest.raises(ExpertUnavailable, match="no expert named 'nobody'"):
        await embedded_pool.generate("nobody", GenerationRequest([Message("user", "hi")]))


async def test_failed_experts_are_reported_not_called(ray_session: None) -> None:
    pool = ExpertPool(echo_pool_spec("broken", fail_load=True))
    try:
        health = await pool.start()
        assert {h["state"] for h in health.values()} == {"failed"}
        assert "fail at load" in health["a"]["error"]
        assert pool.healthy_names() == []
        with pytest.raises(ExpertUnavailable, match="not healthy"):
            await pool.generate("a", GenerationRequest([Message("user", "hi")]))
    finally:
        await pool.shutdown()


async def test_an_expert_that_fails_while_answering(ray_session: None) -> None:
    pool = ExpertPool(echo_pool_spec("flaky", fail_generate=True))
    try:
        await pool.start()
        with pytest.raises(ExpertCallFailed, match="expert 'a' failed: BackendError"):
            await pool.generate("a", GenerationRequest([Message("user", "hi")]))
        from orchestrator.pipeline.steps import AllExpertsFailed

        with pytest.raises(AllExpertsFailed, match="every recruited expert failed"):
            await Orchestrator(pool).run(PipelineRequest(GenerationRequest([Message("user", "solve 1 + 1")]), k=2))
    finally:
        await pool.shutdown()


async def test_shutdown_stops_the_actors(ray_session: None) -> None:
    import ray

    pool = ExpertPool(echo_pool_spec("short-lived"))
    await pool.start()
    actors = list(pool._actors.values())
    await pool.shutdown()
    assert ray.is_initialized()  # the session's Ray is not ours to stop
    # ray.kill is asynchronous: a call racing it may still be served; within a few seconds every call must fail
    for actor in actors:
        for _ in range(100):
            try:
                await actor.health.remote()
            except ray.exceptions.RayActorError:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("an actor still answers 10 s after the pool shut down")


def test_cli_ask_explains_and_prints_json(ray_session: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import yaml
    from typer.testing import CliRunner

    from orchestrator.cli.main import app

    pool = {
        "name": "cli-echo",
        "roles": {"aggregator": "b"},
        "experts": [
            {"name": "a", "backend": "echo", "model": "echo", "skills": ["math"], "resources": {"num_cpus": 0}},
            {"name": "b", "backend": "echo", "model": "echo", "skills": ["writing"], "resources": {"num_cpus": 0}},
        ],
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    result = CliRunner().invoke(app, ["ask", "solve 3 + 4", "--pool", str(path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["answer"] == "solve 3 + 4" and payload["decision"]["experts"] == ["a"]
    three = CliRunner().invoke(app, ["ask", "solve 3 + 4", "--pool", str(path), "-k", "3", "--json"])
    assert three.exit_code == 0, three.output
    said = json.loads(three.stdout)["fewer_experts"]  # why not three, in the JSON too
    assert said.startswith("answered by") and "of the 3 experts asked for (-k 3)" in said
    assert "the pool has 2 routable expert(s) (a, b)" in said
    explained = CliRunner().invoke(app, ["ask", "solve 3 + 4", "--pool", str(path), "--explain"])
    assert explained.exit_code == 0 and "routing" in explained.output and "timings" in explained.output
    refused = CliRunner().invoke(app, ["ask", "solve 3 + 4", "--pool", str(path), "--policy", "cost"])
    assert refused.exit_code == 1 and "needs measured expert profiles" in refused.output
