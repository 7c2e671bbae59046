"""Faults on real Ray actors (echo experts told to misbehave): killed actors, timeouts, transient and
permanent failures, the circuit breaker, re-recruiting and partial answers, cancellation, slow probes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from experts.config._pool_spec import PoolSpec, parse_pool
from experts.errors import ExpertCallFailed, ExpertUnavailable
from experts.runtime._pool import ExpertPool
from experts.types import Completion, GenerationRequest, Message
from orchestrator.pipeline.events import DecisionEvent, DoneEvent, TextEvent
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from orchestrator.pipeline.steps import AllExpertsFailed
from tests.conftest import ServerThread

pytestmark = pytest.mark.ray

FAST_RETRY = {"attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05}


def fault_pool(name: str, experts: dict[str, dict[str, Any]]) -> PoolSpec:
    """Echo experts (fault injection) named by ``experts``, each entry's keys on top of the echo defaults;
    retries are quick (10 ms backoff) so the tests stay short."""
    entries = [
        {"name": expert, "backend": "echo", "model": "echo", "resources": {"num_cpus": 0}, **entry}
        for expert, entry in experts.items()
    ]
    return parse_pool({"name": name, "resilience": {"retry": FAST_RETRY}, "experts": entries}, name)


async def started(spec: PoolSpec, **options: Any) -> ExpertPool:
    pool = ExpertPool(spec, **options)
    health = await pool.start()
    assert all(facts["state"] == "ready" for facts in health.values()), health
    return pool


def ask(text: str) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], max_tokens=16, temperature=0.0)


def routed(text: str, k: int) -> PipelineRequest:
    return PipelineRequest(ask(text), k=k, strategy="vote")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def echo_facts(pool: ExpertPool, name: str) -> dict[str, Any]:
    return (await pool.health())[name]


async def killed(actor: Any) -> None:
    """``ray.kill`` and wait until the actor is dead for Ray *and* its process is gone.

    The kill is asynchronous, and a call racing it (over the same-node channel it takes 0.1 ms)
    may still be answered by the dying actor: Ray can report the actor dead while its worker
    process still runs and serves its socket. "Unavailable" (a temporary state Ray may report on
    the way) is not dead yet.
    """
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError

    pid = await actor.__ray_call__.remote(lambda _actor: os.getpid())
    ray.kill(actor)
    deadline = asyncio.get_running_loop().time() + 30
    reported_dead = False
    while asyncio.get_running_loop().time() < deadline:
        if not reported_dead:
            try:
                await actor.health.remote()
            except ActorUnavailableError:
                pass
            except RayActorError:
                reported_dead = True
        if reported_dead and not _process_alive(pid):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"the killed actor is not dead after 30 s (Ray reports it dead: {reported_dead}; pid {pid})")


def _process_alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


async def until(pool: ExpertPool, name: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the expert's health until ``condition`` holds (liveness, not speed: up to a minute)."""
    deadline = asyncio.get_running_loop().time() + 60
    while not condition(facts := await echo_facts(pool, name)):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"expert {name}: condition not reached in 60 s; last health: {facts}")
        await asyncio.sleep(0.02)
    return facts


# -- retries ------------------------------------------------------------------------------------
async def test_transient_failures_are_retried_and_the_others_are_not(ray_session: None) -> None:
    pool = await started(
        fault_pool(
            "retries",
            {
                "flaky": {"options": {"fail_first_n": 2, "error_code": "rate_limited"}, "skills": ["writing"]},
                "crashy": {"options": {"fail_first_n": 1}, "skills": ["writing"]},
                "picky": {
                    "options": {"fail_generate": True, "error_code": "context_length_exceeded"},
                    "skills": ["math"],
                    "resilience": {"breaker": {"failures": 1}},
                },
            },
        )
    )
    try:
        # a 429 twice, then an answer: the caller sees only the answer
        assert (await pool.generate("flaky", ask("third time lucky"))).text == "third time lucky"
        flaky = await echo_facts(pool, "flaky")
        assert flaky["batches_run"] == 3 and flaky["retries"] == 2 and flaky["breaker"] == "closed"

        # a crash is not known to be transient: reported at once, the next call is answered
        with pytest.raises(ExpertCallFailed, match="expert 'crashy' failed: BackendError"):
            await pool.generate("crashy", ask("hello"))
        assert (await echo_facts(pool, "crashy"))["batches_run"] == 1
        assert (await pool.generate("crashy", ask("hello again"))).text == "hello again"

        # the caller's mistake: no retry, no replacement, not held against the expert (-> 400 in the API)
        with pytest.raises(AllExpertsFailed) as failed:
            await Orchestrator(pool).run(routed("solve 2 + 2", k=1))
        assert failed.value.codes == ["context_length_exceeded"]
        picky = await echo_facts(pool, "picky")
        assert picky["batches_run"] == 1 and picky["breaker"] == "closed" and pool.is_healthy("picky")
        assert (await echo_facts(pool, "flaky"))["batches_run"] == 3  # nobody stood in
    finally:
        await pool.shutdown()


# -- timeouts, re-recruiting, partial answers, the breaker ------------------------------------
async def test_a_timing_out_expert_is_replaced_the_answer_flagged_and_its_circuit_opens(ray_session: None) -> None:
    from orchestrator.server.api.app import create_app

    pool = await started(
        fault_pool(
            "timeouts",
            {
                "slow": {
                    "skills": {"math": 1.0},
                    "options": {"delay_s": 3.0},
                    "resilience": {"timeout_s": 0.4, "retry": {"attempts": 1}, "breaker": {"failures": 3}},
                },
                "steady": {"skills": {"math": 0.6}},
                "broken": {"skills": {"math": 0.3}, "options": {"fail_generate": True}},
            },
        )
    )
    orchestrator = Orchestrator(pool)
    try:
        # streamed, k = 1: slow sends nothing before its timeout, so steady's answer streams in its place, once
        events = [event async for event in orchestrator.stream(routed("solve 1 + 1", k=1))]
        assert isinstance(events[0], DecisionEvent) and events[0].decision.experts == ["slow"]
        assert "".join(event.text for event in events if isinstance(event, TextEvent)) == "solve 1 + 1"
        assert isinstance(events[-1], DoneEvent) and events[-1].result.failed_experts == ["slow"]

        # k = 1: slow times out, the next best (steady) answers in its place; nothing is missing
        result = await orchestrator.run(routed("solve 2 + 2", k=1))
        assert result.text == "solve 2 + 2" and not result.partial
        assert result.failed_experts == ["slow"]
        assert [(r.failed, r.replacement) for r in result.replacements] == [("slow", "steady")]
        assert "timed out" in result.replacements[0].reason
        assert result.decision.experts == ["slow", "steady"]
        standing = {score.name: score for score in result.decision.scores}
        assert standing["steady"].chosen and "replacement for 'slow'" in standing["steady"].reason

        # k = 2 over HTTP: slow fails again, its replacement (broken) fails too; steady's answer is flagged partial
        with ServerThread(create_app(orchestrator=orchestrator)) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                reply = await client.post(
                    "/v1/chat/completions",
                    json={"model": "moesaic", "messages": [{"role": "user", "content": "solve 3 + 3"}],
                          "moesaic": {"k": 2, "strategy": "vote"}},
                )  # fmt: skip
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["choices"][0]["message"]["content"] == "solve 3 + 3"
        moesaic = body["moesaic"]
        assert moesaic["partial"] is True and moesaic["failed_experts"] == ["slow", "broken"]
        assert [(r["failed"], r["replacement"]) for r in moesaic["replacements"]] == [("slow", "broken")]

        # three timeouts in a row opened slow's circuit: unroutable, so the router recruits steady directly
        assert pool.breaker_states() == {"slow": "open", "steady": "closed", "broken": "closed"}
        assert "slow" not in pool.healthy_names()
        with pytest.raises(ExpertUnavailable, match="circuit open"):
            await pool.generate("slow", ask("hi"))
        result = await orchestrator.run(routed("solve 4 + 4", k=1))
        assert result.decision.experts == ["steady"] and result.failed_experts == [] and not result.partial
    finally:
        await pool.shutdown()


# -- a dead actor ------------------------------------------------------------------------------
async def test_a_killed_actor_mid_request_is_restarted_and_the_request_answered(ray_session: None) -> None:
    import ray

    pool = await started(
        fault_pool(
            "killed",
            {
                "victim": {"skills": {"math": 1.0}, "options": {"delay_s": 1.0}, "resilience": {"timeout_s": 60}},
                "backup": {"skills": {"math": 0.5}},
            },
        )
    )
    orchestrator = Orchestrator(pool)
    try:
        running = asyncio.create_task(orchestrator.run(routed("solve 5 + 5", k=1)))
        await asyncio.sleep(0.4)  # victim holds the request now
        ray.kill(pool._actors["victim"])
        result = await asyncio.wait_for(running, 60)
        # the call saw the actor die, waited for its replacement actor and was answered there
        assert result.text == "solve 5 + 5" and not result.partial and result.failed_experts == []
        assert [call.expert for call in result.calls] == ["victim"]
        assert pool.restarts == {"victim": 1, "backup": 0}
        facts = await echo_facts(pool, "victim")
        assert facts["state"] == "ready" and facts["restarts"] == 1 and facts["retries"] == 1
        assert (await pool.generate("victim", ask("alive again"))).text == "alive again"

        # an idle actor that dies is found by the health probe and restarted
        ray.kill(pool._actors["backup"])
        seen: set[str] = set()

        def restarted(facts: dict[str, Any]) -> bool:
            seen.add(facts["state"])
            return facts["restarts"] == 1 and facts["state"] == "ready"

        await until(pool, "backup", restarted)
        assert seen <= {"ready", "restarting"}
        assert (await pool.generate("backup", ask("back"))).text == "back"
    finally:
        await pool.shutdown()


async def test_a_restarted_residency_managed_expert_is_loaded_again(ray_session: None) -> None:

    from experts.runtime.dispatch._dispatcher import dispatching
    from tests.dispatch_fakes import residency_spec

    pool = await started(residency_spec("ab", budget_gb=2.0))
    dispatcher = dispatching(pool)
    try:
        assert (await dispatcher.generate("a", ask("load me"))).text == "load me"
        assert dispatcher.residency is not None and dispatcher.residency.state("a") == "resident"
        await killed(pool._actors["a"])
        # the dispatcher counts a as resident: the new actor is loaded before the call is tried again
        assert (await dispatcher.generate("a", ask("still resident"))).text == "still resident"
        facts = (await dispatcher.health())["a"]
        assert facts["residency"] == "resident" and facts["restarts"] == 1 and dispatcher.restarts["a"] == 1
        assert dispatcher.breaker_states() == {"a": "closed", "b": "closed"}
    finally:
        await pool.shutdown()


# -- the breaker's probe, cancellation, stalled streams, slow probes -------------------------------
async def test_half_open_probe_cancellation_stalled_streams_and_slow_probes(ray_session: None) -> None:
    clock = FakeClock()
    pool = await started(
        fault_pool(
            "misc",
            {
                "probed": {
                    "options": {"fail_first_n": 2},
                    "resilience": {"breaker": {"failures": 2, "cooldown_s": 30}},
                },
                "queued": {"options": {"delay_s": 2.0}, "batching": {"max_wait_ms": 0}},
                "stalls": {"options": {"piece_delay_s": 2.0}, "resilience": {"timeout_s": 0.3}},
            },
        ),
        clock=clock,
    )
    try:
        # two failures open the circuit; after the cool-down one probe goes through and closes it
        for _ in range(2):
            with pytest.raises(ExpertCallFailed, match="BackendError"):
                await pool.generate("probed", ask("x"))
        assert pool.breaker_states()["probed"] == "open" and not pool.is_healthy("probed")
        clock.now += 30
        assert pool.breaker_states()["probed"] == "half_open" and pool.is_healthy("probed")
        assert (await pool.generate("probed", ask("probe"))).text == "probe"
        assert pool.breaker_states()["probed"] == "closed"

        # requests cancelled while queued behind a running batch are never generated
        first = asyncio.create_task(pool.generate("queued", ask("first")))
        await until(pool, "queued", lambda facts: facts["batches_run"] == 1)  # first's batch is running
        second = asyncio.create_task(pool.generate("queued", ask("second")))
        stream = asyncio.create_task(_drain(pool.stream("queued", ask("third"))))
        await until(pool, "queued", lambda facts: facts["queue_depth"] == 2)  # both wait in the actor's batcher
        second.cancel()
        stream.cancel()
        assert (await first).text == "first"
        for task in (second, stream):
            with pytest.raises(asyncio.CancelledError):
                await task
        facts = await until(pool, "queued", lambda facts: facts["dropped"] == 2)
        assert facts["requests"] == 1 and facts["batches_run"] == 1

        # a stream that stalls after its first piece times out and is not tried again
        received: list[str | Completion] = []
        with pytest.raises(ExpertCallFailed, match="timed out") as stalled:
            async for item in pool.stream("stalls", ask("one two three")):
                received.append(item)
        assert received == ["one "] and stalled.value.code == "expert_timeout"
        assert (await echo_facts(pool, "stalls"))["batches_run"] == 1

        # a probe that does not answer in time keeps the last state: still routable
        slow = await pool.health(timeout_s=1e-4)
        assert {facts["probe"] for facts in slow.values()} == {"slow"}
        assert {facts["state"] for facts in slow.values()} == {"ready"} and len(pool.healthy_names()) == 3
    finally:
        await pool.shutdown()


async def _drain(items: AsyncIterator[str | Completion]) -> list[str | Completion]:
    return [item async for item in items]
