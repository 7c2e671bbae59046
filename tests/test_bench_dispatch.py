"""bench/dispatch.py's naive concurrent baseline: load on demand, LRU eviction under the budget, max_running.

The baseline must be fair (never over the memory budget, never more experts generating than allowed) and
must not be crippled (calls to an expert already generating join it; an idle expert is evicted, not a busy one).
A recording pool stands in for the Ray actors, so every interleaving is checked at every step.

The arrivals mode (bench/dispatch_arrivals.py): a seeded Poisson stream, each request started at its arrival and
timed from it, in both modes (the online one through the Orchestrator and the Dispatcher over a fake pool).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bench_scripts import load_bench

from experts.config._pool_spec import parse_pool
from experts.runtime.dispatch._dispatcher import Dispatcher
from experts.types import Completion, GenerationRequest, Message, Usage
from orchestrator.pipeline.orchestrator import Orchestrator
from tests.dispatch_fakes import FakePool, residency_spec

dispatch = load_bench("dispatch")


@dataclass
class RecordingPool:
    """``control`` and ``generate`` as the ExpertPool has them, with the invariants checked on every event."""

    capacity: int
    max_running: int
    resident: set[str] = field(default_factory=set)
    generating: dict[str, int] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)
    peak_generating: int = 0
    joined: int = 0

    async def control(self, name: str, action: str) -> None:
        await asyncio.sleep(0.002)
        if action == "load":
            assert name not in self.resident
            self.resident.add(name)
            self.loads.append(name)
            assert len(self.resident) <= self.capacity, f"over the budget: {sorted(self.resident)}"
        else:
            assert action == "unload" and name in self.resident and name not in self.generating
            self.resident.discard(name)

    async def generate(self, name: str, request: GenerationRequest) -> Completion:
        assert name in self.resident, f"{name} called while not resident"
        if name in self.generating:
            self.joined += 1
        self.generating[name] = self.generating.get(name, 0) + 1
        self.peak_generating = max(self.peak_generating, len(self.generating))
        assert len(self.generating) <= self.max_running
        await asyncio.sleep(0.005)
        self.generating[name] -= 1
        if not self.generating[name]:
            del self.generating[name]
        return Completion(f"{name}:{request.messages[0].content}", "stop", Usage(1, 1), name)


@pytest.mark.parametrize(("capacity", "max_running"), [(2, 2), (2, 1), (3, 2)])
async def test_naive_concurrent_keeps_budget_and_answers_every_call(capacity: int, max_running: int) -> None:
    work = dispatch.workload(48, 6, seed=3)
    pool = RecordingPool(capacity, max_running)
    answers = await dispatch.naive_concurrent(pool, work, capacity, max_running, max_tokens=4)
    expected = {(index, name): f"{name}:{question}" for index, (question, names) in enumerate(work) for name in names}
    assert answers == expected
    assert pool.resident == set()  # unload_all at the end
    assert pool.peak_generating == max_running  # the second core is used when allowed
    assert pool.joined > 0  # concurrent calls to a generating expert share its batch


async def test_lru_evicts_the_least_recently_used_idle_expert() -> None:
    pool = RecordingPool(capacity=2, max_running=1)
    residency = dispatch.OnDemandLRU(pool, capacity=2, max_running=1)
    request = GenerationRequest([Message("user", "q")], max_tokens=1)
    for name in ("a", "b", "a", "c"):  # b is the least recently used when c needs room
        await residency.generate(name, request)
    assert pool.resident == {"a", "c"}
    assert pool.loads == ["a", "b", "c"]


def test_arrivals_are_a_seeded_poisson_stream() -> None:
    offsets = dispatch.arrival_times(2000, rate=4.0, seed=7)
    assert offsets == dispatch.arrival_times(2000, rate=4.0, seed=7) != dispatch.arrival_times(2000, 4.0, seed=8)
    assert offsets[0] == 0.0 and all(later > earlier for earlier, later in zip(offsets, offsets[1:]))
    assert offsets[-1] / (len(offsets) - 1) == pytest.approx(0.25, rel=0.1)  # the mean gap is 1 / rate
    with pytest.raises(ValueError):
        dispatch.arrival_times(3, rate=0.0, seed=0)


async def test_naive_under_arrivals_starts_each_request_at_its_arrival_and_times_it_from_there() -> None:
    work = dispatch.workload(12, 6, seed=1)
    arrivals = [0.03 * index for index in range(len(work))]
    pool = RecordingPool(capacity=2, max_running=2)
    started = time.perf_counter()
    run = await dispatch.naive_on_demand(pool, work, 2, 2, 4, arrivals)
    assert run.answers == {
        (i, name): f"{name}:{question}" for i, (question, names) in enumerate(work) for name in names
    }
    assert len(run.latencies) == len(work) and all(0.005 <= latency < 1.0 for latency in run.latencies)
    assert arrivals[-1] <= run.seconds <= time.perf_counter() - started
    assert 1 <= run.peak_in_flight < len(work) and pool.resident == set()


async def test_online_under_arrivals_and_the_figures_of_both_modes() -> None:
    document = residency_spec("abcdef", budget_gb=2.0).document()
    document["aggregation"] = {"strategy": "vote"}  # as in the bench: no aggregator call
    pool = FakePool(parse_pool(document, "<fake>"), load_s=0.01, run_s=0.01)
    work = [(f"q{index}", list(names)) for index, names in enumerate(["ab", "c", "a", "de", "f", "b", "ac", "e"])]
    arrivals = dispatch.arrival_times(len(work), rate=100.0, seed=0)
    run = await dispatch.online(Orchestrator(Dispatcher(pool)), work, 4, arrivals)  # type: ignore[arg-type]
    expected = {(i, name): f"{name}: {question}" for i, (question, names) in enumerate(work) for name in names}
    assert run.answers == expected and len(run.latencies) == len(work)
    assert run.seconds >= arrivals[-1] and min(run.latencies) > 0

    run.loads = 4
    slower = dispatch.Replay(run.answers, [2 * latency for latency in run.latencies], 2 * run.seconds, 3, loads=9)
    figures = dispatch.arrival_figures(100.0, arrivals, slower, run)
    assert figures["loads_ratio"] == 2.25 and figures["loads_target_met"] and figures["p95_target_met"]
    assert figures["p95_ratio"] == 2.0 and figures["answers_match"] == 1.0 and figures["naive_peak_in_flight"] == 3
    assert not dispatch.arrival_figures(100.0, arrivals, run, slower)["loads_target_met"]


def test_engine_option_reaches_every_expert() -> None:
    copies = [Path(f"/models/expert-{index}") for index in range(3)]
    assert {e.options["engine"] for e in dispatch.pool_spec(copies, 1.0, 2).experts} == {"native"}
    vllm = dispatch.pool_spec(copies, 1.0, 2, engine="vllm")
    wanted = {"engine": "vllm", "dtype": "float32", "kv_cache_gb": dispatch.VLLM_KV_CACHE_GB}
    assert all(expert.options == wanted for expert in vllm.experts)
