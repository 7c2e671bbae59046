"""bench/dispatch.py's naive concurrent baseline: load on demand, LRU eviction under the budget, max_running.

The baseline must be fair (never over the memory budget, never more experts generating than allowed) and
must not be crippled (calls to an expert already generating join it; an idle expert is evicted, not a busy one).
A recording pool stands in for the Ray actors, so every interleaving is checked at every step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from bench_scripts import load_bench

from experts.types import Completion, GenerationRequest, Message, Usage

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
