"""The dispatcher: its scheduling policy (fake clock), its queues and residency over a fake pool, then the
real thing: three embedded experts in Ray actors under a budget that holds two, and ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from experts.runtime._pool import ExpertCallFailed, ExpertPool
from experts.runtime.dispatch import scheduler
from experts.runtime.dispatch._dispatcher import Dispatcher, dispatching
from experts.runtime.dispatch.scheduler import QueueView
from experts.types import Completion, GenerationRequest, Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from tests.conftest import ServerThread, echo_pool_spec
from tests.dispatch_fakes import FakePool, residency_spec


def ask(text: str, max_tokens: int | None = None) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], max_tokens=max_tokens, temperature=0.0)


# -- the policy --------------------------------------------------------------------------------
def test_order_prefers_overdue_then_resident_then_most_work_then_oldest() -> None:
    views = [
        QueueView("disk_big", depth=9, oldest=5.0, residency="disk"),
        QueueView("resident_small", depth=1, oldest=8.0, residency="resident"),
        QueueView("resident_big", depth=4, oldest=9.0, residency="resident"),
        QueueView("parked", depth=2, oldest=7.0, residency="parked"),
        QueueView("empty", depth=0, oldest=0.0),
    ]
    assert scheduler.order(views, now=10.0, latency_bound_s=30) == [
        "resident_big",
        "resident_small",
        "parked",
        "disk_big",
    ]
    overdue = scheduler.order(views, now=10.0, latency_bound_s=4)  # disk_big waited 5 s > 4 s
    assert overdue[0] == "disk_big"
    assert scheduler.pick([], now=0.0, latency_bound_s=1) is None


def test_no_starvation_under_a_steady_stream_for_one_resident_expert() -> None:
    def first_turn_of_b(bound: float | None, steps: int = 200) -> float | None:
        now, run_s = 0.0, 1.0
        a_oldest, a_depth = 0.0, 2
        for _ in range(steps):
            views = [QueueView("a", a_depth, a_oldest, "resident"), QueueView("b", 1, 0.0, "disk")]
            if scheduler.pick(views, now, bound) == "b":
                return now
            now += run_s  # a runs over its queue; two more requests arrived meanwhile
            a_oldest, a_depth = now - run_s / 2, 2
        return None

    assert first_turn_of_b(None) is None  # without a bound the resident expert would win forever
    waited = first_turn_of_b(5.0)
    assert waited is not None and waited <= 5.0 + 1.0  # the bound plus at most the run in progress


# -- queues, batches and residency over a fake pool ---------------------------------------------
async def test_requests_for_one_expert_go_as_one_batch_and_each_expert_loads_once() -> None:
    pool = FakePool(residency_spec("abc", budget_gb=1.0), load_s=0.01)
    dispatcher = Dispatcher(pool)  # type: ignore[arg-type]
    calls = [("a", 10), ("b", 5), ("c", 3)]
    results = await asyncio.gather(
        *(dispatcher.generate(name, ask(f"{name} {i}")) for name, count in calls for i in range(count))
    )
    assert [r.text for r in results[:2]] == ["a: a 0", "a: a 1"] and len(results) == 18
    batches = [(name, size) for _, kind, name, size in pool.events if kind == "batch"]
    assert batches == [("a", 10), ("b", 5), ("c", 3)]  # the most work first, each expert once
    assert pool.actions("load") == ["a", "b", "c"] and dispatcher.stats["a"].batch_sizes == {10: 1}
    assert dispatcher.queue_depth("a") == 0


async def test_the_next_expert_is_prefetched_while_another_runs() -> None:
    pool = FakePool(residency_spec("ab", budget_gb=2.0, max_running=1), load_s=0.05, run_s=0.2)
    dispatcher = Dispatcher(pool)  # type: ignore[arg-type]
    await asyncio.gather(*(dispatcher.generate("a", ask("x")) for _ in range(4)), dispatcher.generate("b", ask("y")))
    when = {(kind, name): at for at, kind, name, _ in pool.events}
    assert when[("load", "b")] < when[("done", "a")]  # b loaded during a's batch, not after it
    assert when[("batch", "b")] - when[("done", "a")] < 0.04  # so b started without waiting for a load


async def test_a_request_for_a_running_expert_joins_its_run_without_waiting_for_it_to_end() -> None:
    pool = FakePool(residency_spec("ab", budget_gb=1.0, max_running=1), load_s=0.05, run_s=0.3)
    dispatcher = Dispatcher(pool)  # type: ignore[arg-type]
    first = asyncio.create_task(dispatcher.generate("a", ask("first")))
    await asyncio.sleep(0.1)  # a is loaded and generating
    late = await dispatcher.generate("a", ask("late"))
    await first
    batches = [(at, size) for at, kind, name, size in pool.events if kind == "batch" and name == "a"]
    done_first = next(at for at, kind, name, _ in pool.events if kind == "done")
    assert len(batches) == 2 and batches[1][0] < done_first  # sent while the first batch ran, not after it
    assert pool.actions("load") == ["a"] and late.text == "a: late"
    assert dispatcher.stats["a"].requests == 2


async def test_a_request_past_the_latency_bound_makes_its_expert_run_next() -> None:
    pool = FakePool(residency_spec("ab", budget_gb=1.0, latency_bound_s=0.15), load_s=0.01, run_s=0.03)
    dispatcher = Dispatcher(pool)  # type: ignore[arg-type]
    stop = time.monotonic() + 1.5

    async def steady_stream() -> None:
        while time.monotonic() < stop:
            asyncio.ensure_future(dispatcher.generate("a", ask("more")))
            await asyncio.sleep(0.01)

    stream = asyncio.create_task(steady_stream())
    await asyncio.sleep(0.05)  # a is resident and busy
    started = time.monotonic()
    await asyncio.wait_for(dispatcher.generate("b", ask("me too")), 1.0)
    waited = time.monotonic() - started
    await stream
    assert waited < 0.15 + 0.2  # the bound, a run in progress and a load; not the 1.5 s of the stream


async def test_streaming_through_the_queue_and_failed_loads_are_reported() -> None:
    pool = FakePool(residency_spec("ab", budget_gb=1.0))
    pool.fail_load.add("b")
    dispatcher = Dispatcher(pool)  # type: ignore[arg-type]
    items = [item async for item in dispatcher.stream("a", ask("one two three"))]
    assert items[:3] == ["one ", "two ", "three "] and isinstance(items[-1], Completion)
    with pytest.raises(ExpertCallFailed, match="expert 'b' could not be loaded: .*no weights for b"):
        await dispatcher.generate("b", ask("x"))
    assert (await dispatcher.generate("a", ask("still here"))).text == "a: still here"


def test_only_a_pool_with_a_residency_section_gets_a_dispatcher_and_its_caller_owns_it() -> None:
    plain = ExpertPool(echo_pool_spec("plain"))
    assert dispatching(plain) is plain and isinstance(dispatching(plain, always=True), Dispatcher)
    managed = ExpertPool(residency_spec("ab"))
    dispatcher = dispatching(managed)
    assert isinstance(dispatcher, Dispatcher) and dispatching(dispatcher) is dispatcher
    assert not hasattr(managed, "dispatcher")  # no back-link: the pool does not know who dispatches for it
    orchestrator = Orchestrator(dispatcher)
    assert orchestrator.pool is dispatcher  # an orchestrator over a dispatcher uses it as it is


# -- real actors, the embedded model -----------------------------------------------------------
def loads(health: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: facts["loads"] for name, facts in health.items()}


@pytest.mark.ray
@pytest.mark.model
async def test_end_to_end_three_embedded_experts_with_room_for_two(residency_pool: Dispatcher) -> None:
    await residency_pool.release_all()
    health = await residency_pool.health()
    assert {facts["residency"] for facts in health.values()} == {"disk"}
    assert all(0.45 < facts["memory_gb"] < 0.56 for facts in health.values())  # measured, fp32
    with pytest.raises(ExpertCallFailed, match="not loaded .*manages residency"):
        await residency_pool.pool.generate("maths", ask("hi"))  # around the dispatcher: a clear refusal
    before = loads(health)
    orchestrator = Orchestrator(residency_pool)  # the fixture's dispatcher: one view of what is resident
    assert orchestrator.pool is residency_pool
    questions = ["What is 2 + 3?", "Name a colour.", "Say hello.", "What is the capital of Italy?"]
    requests = [
        PipelineRequest(ask(question, max_tokens=6), experts=[name])
        for name in ("maths", "writer", "helper")
        for question in questions
    ]
    results = await asyncio.gather(*(orchestrator.run(request) for request in requests))
    assert all(result.text.strip() for result in results)
    assert {result.calls[0].batch_size for result in results} == {4}  # each expert's four requests ran together
    after = await residency_pool.health()
    assert {name: loads(after)[name] - before[name] for name in before} == {"maths": 1, "writer": 1, "helper": 1}
    assert sum(facts["residency"] == "resident" for facts in after.values()) <= 2
    assert residency_pool.residency is not None and residency_pool.residency.used_gb(after["maths"]["node"]) <= 1.1
    assert all(facts["generate_seconds_total"] > 0 for facts in after.values())


# -- /metrics ----------------------------------------------------------------------------------
@pytest.mark.ray
async def test_metrics_in_prometheus_text_format(ray_session: None) -> None:
    from orchestrator.server.api.app import create_app
    from orchestrator.server.api.metrics_endpoint import render

    plain = ExpertPool(echo_pool_spec("metrics-plain"))
    await plain.start()
    try:
        await plain.generate("a", ask("hello"))
        text = await render(plain)
        assert 'moesaic_expert_loads_total{expert="a"} 1' in text and "moesaic_dispatch" not in text
        assert 'moesaic_actor_batch_size_count{expert="a"} 1' in text
    finally:
        await plain.shutdown()

    pool = ExpertPool(residency_spec("ab", budget_gb=1.0))
    await pool.start()
    try:
        with ServerThread(create_app(orchestrator=Orchestrator(pool))) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                body = {"messages": [{"role": "user", "content": "two words"}], "max_tokens": 4}
                replies = await asyncio.gather(
                    *(client.post("/v1/chat/completions", json={**body, "model": f"expert/{n}"}) for n in "aab")
                )
                assert [reply.status_code for reply in replies] == [200, 200, 200]
                response = await client.get("/metrics")
    finally:
        await pool.shutdown()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    for line in (
        "# TYPE moesaic_dispatch_batch_size histogram",
        'moesaic_dispatch_queue_depth{expert="a"} 0',
        'moesaic_dispatch_batch_size_bucket{expert="a",le="+Inf"}',
        'moesaic_expert_loads_total{expert="b"} 1',
        "# TYPE moesaic_expert_load_seconds_total counter",
        'moesaic_expert_generate_seconds_total{expert="a"}',
        'moesaic_expert_residency{expert="b",state="resident"} 1',
        'moesaic_expert_residency{expert="a",state="disk"} 1',  # the budget holds one: b's load evicted a
        "moesaic_residency_budget_bytes{node=",
    ):
        assert line in text, line
    assert (
        sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("moesaic_dispatch_batch_size_sum"))
        == 3
    )
