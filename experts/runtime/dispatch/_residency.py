"""Which experts are in memory, within a budget per node, and which to evict: driver-side bookkeeping.

Why not plain LRU: the dispatcher knows which experts have routed-but-not-yet-run requests
(Read-ME and Pre-gated MoE: routing decided ahead tells what is needed next). So an expert
with queued work is never evicted while one without queued work can be; among equals the one
with less queued work, then the least recently used, goes first. The same knowledge lets the
dispatcher prefetch the expert it will run next while another one generates, if that fits
without evicting anything that has work waiting.

States: ``disk`` -> ``loading`` -> ``resident`` -> ``evicting`` -> ``parked`` | ``disk``.
Parking (weights to host RAM, quick to bring back) only exists for experts on a GPU; on a CPU
node the weights already live in host RAM, so parking would free nothing and eviction sends
the expert back to disk. Memory is booked before a load starts and a load waits for the
evictions that make its room, so the budget holds at every moment, with several loads in
flight. Pure asyncio, no Ray: ``ResidencyControl`` is the dispatcher's bridge to the actors,
and tests pass fakes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

log = logging.getLogger(__name__)

State = Literal["disk", "parked", "loading", "resident", "evicting"]
_EPSILON_GB = 1e-9


class ResidencyError(RuntimeError):
    """An expert cannot be made resident; the message says which setting to change."""


class ResidencyControl(Protocol):
    """The actor calls the manager needs (``Dispatcher`` implements them on the ``ExpertPool``)."""

    async def load(self, name: str) -> None: ...

    async def park(self, name: str) -> str:
        """Move the weights to host RAM; return the state reached ("parked", or "disk" where parking frees nothing)."""
        ...

    async def unload(self, name: str) -> None: ...


@dataclass(frozen=True)
class ExpertFootprint:
    """What one managed expert occupies when resident, and where."""

    name: str
    memory_gb: float
    node: str = "local"
    gpu: bool = False  # weights in GPU memory: evicting may park them in host RAM
    state: State = "disk"  # what the actor reports at start


@dataclass
class _Entry:
    footprint: ExpertFootprint
    state: State
    pins: int = 0  # runs and loads in progress: never evicted while pinned
    last_used: float = 0.0


class ResidencyManager:
    """Books memory per node, chooses victims with the dispatcher's queue, loads and evicts through ``control``."""

    def __init__(
        self,
        experts: list[ExpertFootprint],
        budget_gb: float,
        control: ResidencyControl,
        demand: Callable[[str], int],
        host_budget_gb: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget_gb = budget_gb
        self.host_budget_gb = host_budget_gb
        self._control = control
        self._demand = demand  # queued requests per expert, from the dispatcher
        self._clock = clock
        self._entries = {f.name: _Entry(f, f.state) for f in experts}
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.waiting_for_room: set[str] = set()

    # -- views -----------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def state(self, name: str) -> State:
        return self._entries[name].state

    def used_gb(self, node: str) -> float:
        """Device memory booked on ``node``: resident experts and loads in flight (evictions count as freed)."""
        return sum(e.footprint.memory_gb for e in self._on(node) if e.state in ("resident", "loading"))

    def parked_gb(self, node: str) -> float:
        return sum(e.footprint.memory_gb for e in self._on(node) if e.state == "parked")

    def nodes(self) -> list[str]:
        return sorted({e.footprint.node for e in self._entries.values()})

    def snapshot(self) -> dict[str, State]:
        return {name: entry.state for name, entry in self._entries.items()}

    def _on(self, node: str) -> list[_Entry]:
        return [e for e in self._entries.values() if e.footprint.node == node]

    # -- planning (synchronous: nothing else runs between a plan and its booking) -----------
    def plan(self, name: str, idle_only: bool = False) -> list[str] | None:
        """Experts to evict so ``name`` fits; [] when it fits now; None when it cannot fit yet.

        ``idle_only`` (prefetching): only experts without queued work may go.
        """
        entry = self._entries[name]
        need = entry.footprint.memory_gb
        if need > self.budget_gb + _EPSILON_GB:
            raise ResidencyError(
                f"expert {name!r} needs {need:.2f} GB, more than residency.budget_gb {self.budget_gb:g}; raise the "
                "budget or, if the measure is too high, declare the expert's residency.memory_gb"
            )
        free = self.budget_gb - self.used_gb(entry.footprint.node)
        if free >= need - _EPSILON_GB:
            return []
        candidates = [
            e
            for e in self._on(entry.footprint.node)
            if e.state == "resident" and e.pins == 0 and e.footprint.name != name
        ]
        if idle_only:
            candidates = [e for e in candidates if self._demand(e.footprint.name) == 0]
        candidates.sort(key=lambda e: (self._demand(e.footprint.name) > 0, self._demand(e.footprint.name), e.last_used))
        victims: list[str] = []
        for candidate in candidates:
            victims.append(candidate.footprint.name)
            free += candidate.footprint.memory_gb
            if free >= need - _EPSILON_GB:
                return victims
        return None

    def _book(self, name: str, victims: list[str]) -> None:
        for victim in victims:
            self._entries[victim].state = "evicting"
        self._entries[name].state = "loading"

    # -- actions ---------------------------------------------------------------------------
    async def acquire(self, name: str) -> None:
        """Return once ``name`` is resident, pinned until ``release``; loads it (evicting others) if needed."""
        entry = self._entries[name]
        while True:
            if entry.state == "resident":
                entry.pins += 1
                return
            if entry.state in ("disk", "parked"):
                victims = self.plan(name)
                if victims is not None:
                    break
                self.waiting_for_room.add(name)
            changed = self._changed
            try:
                await changed.wait()
            finally:
                self.waiting_for_room.discard(name)
        entry.pins += 1  # held from now on: for the load, then for the caller's run
        self._book(name, victims)
        try:
            await self._evict_then_load(name, victims)
        except BaseException:
            entry.pins -= 1
            raise

    def release(self, name: str) -> None:
        """The run is over: ``name`` may be evicted again."""
        entry = self._entries[name]
        entry.pins = max(0, entry.pins - 1)
        entry.last_used = self._clock()
        self._notify()

    def prefetch(self, name: str) -> bool:
        """Start loading ``name`` in the background if it fits without evicting experts that have work queued."""
        entry = self._entries.get(name)
        if entry is None or entry.state not in ("disk", "parked"):
            return False
        try:
            victims = self.plan(name, idle_only=True)
        except ResidencyError:
            return False  # the run itself will report it
        if victims is None:
            return False
        self._book(name, victims)
        task = asyncio.create_task(self._prefetch(name, victims))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    async def _prefetch(self, name: str, victims: list[str]) -> None:
        try:
            await self._evict_then_load(name, victims)
        except Exception as error:  # the run that needs it retries the load and reports the failure
            log.warning("prefetching expert %s failed: %s", name, error)

    async def release_all(self) -> None:
        """Unload every expert that is not in use (the end of a batch job, or a benchmark reset)."""
        names = [n for n, e in self._entries.items() if e.state in ("resident", "parked") and e.pins == 0]
        for name in names:
            self._entries[name].state = "evicting"
        await asyncio.gather(*(self._unload(name) for name in names))
        self._notify()

    async def _evict_then_load(self, name: str, victims: list[str]) -> None:
        entry = self._entries[name]
        try:
            await asyncio.gather(*(self._evict(victim) for victim in victims))
            await self._control.load(name)
        except BaseException:
            entry.state = "disk"
            self._notify()
            raise
        entry.state = "resident"
        entry.last_used = self._clock()
        self._notify()

    async def _evict(self, name: str) -> None:
        entry = self._entries[name]
        room = self.host_budget_gb is None or (
            self.parked_gb(entry.footprint.node) + entry.footprint.memory_gb <= self.host_budget_gb + _EPSILON_GB
        )
        try:
            if entry.footprint.gpu and room:
                reached = await self._control.park(name)
                entry.state = "parked" if reached == "parked" else "disk"
            else:
                await self._control.unload(name)
                entry.state = "disk"
        except Exception as error:  # a dead actor holds no memory; a live one that failed is reported
            log.warning("evicting expert %s failed (counted as unloaded): %s", name, error)
            entry.state = "disk"
        self._notify()

    async def _unload(self, name: str) -> None:
        try:
            await self._control.unload(name)
        except Exception as error:
            log.warning("unloading expert %s failed: %s", name, error)
        self._entries[name].state = "disk"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
