"""``Dispatcher``: per-expert queues in front of an ``ExpertPool`` whose local experts load on demand.

When the pool holds more local models than fit in memory, running requests in arrival order
spends the time loading. The dispatcher instead lets routed requests wait in one queue per
expert, runs an expert over everything queued for it as one batch (Symbolic-MoE: group work
by assigned expert so each model loads once), picks the next expert with
``experts.runtime.dispatch.scheduler`` (overdue first, then resident, then most work), lets a request for an
expert already running join its run (the actor batches it in), and tells the ``ResidencyManager`` what is
queued, so eviction keeps the experts needed next and the next expert is prefetched while another one runs
(Read-ME, Pre-gated MoE).

It offers the pool's interface (``generate``, ``stream``, health), so the orchestrator uses
it in place of the pool when the pool file has a ``residency`` section (``dispatching``).
Experts that are not residency-managed (hosted APIs) go straight to the pool.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from experts._health import HealthReport, is_ready
from experts.config import PoolSpec
from experts.runtime._client import ExpertClient
from experts.runtime._pool import ExpertCallFailed, ExpertPool
from experts.runtime.dispatch import scheduler
from experts.runtime.dispatch._residency import ExpertFootprint, ResidencyManager
from experts.types import Completion, GenerationRequest

_END = object()  # closes a streamed job's delta queue


@dataclass
class _Job:
    request: GenerationRequest
    enqueued: float
    future: asyncio.Future[Completion]
    deltas: asyncio.Queue[Any] | None = None  # streamed jobs: text pieces, then _END


@dataclass
class ExpertDispatchStats:
    """What the dispatcher did for one expert: batches sent (by size) and time its requests waited."""

    batch_sizes: Counter[int] = field(default_factory=Counter)
    requests: int = 0
    wait_seconds_total: float = 0.0

    @property
    def batches(self) -> int:
        return sum(self.batch_sizes.values())


class Dispatcher:
    """The ``ExpertPool`` interface, with queues, a scheduler and residency in front of managed experts."""

    def __init__(self, pool: ExpertPool, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        settings = pool.spec.residency
        self.latency_bound_s: float | None = settings.latency_bound_s if settings else None
        self.max_running = settings.max_running if settings else 1
        self.prefetching = settings.prefetch if settings else False
        self.clock = clock
        self.residency: ResidencyManager | None = None
        self.stats: dict[str, ExpertDispatchStats] = {}
        self._queues: dict[str, deque[_Job]] = {}
        self._running: set[str] = set()
        self._acquiring: set[str] = set()  # runs started that do not hold their expert in memory yet
        self._serving: dict[str, set[asyncio.Task[None]]] = {}  # runs sending work: requests that joined them
        self._expected: Counter[str] = Counter()  # calls known to come later (batch mode: the aggregator's)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._prepared = asyncio.Lock()

    # -- the pool's interface --------------------------------------------------------------
    @property
    def spec(self) -> PoolSpec:
        return self.pool.spec

    @property
    def expert_names(self) -> list[str]:
        return self.pool.expert_names

    def is_healthy(self, name: str) -> bool:
        return self.pool.is_healthy(name)

    def healthy_names(self) -> list[str]:
        return self.pool.healthy_names()

    def honours(self, name: str, field: str) -> bool:
        return self.pool.honours(name, field)

    def breaker_states(self) -> dict[str, str]:
        """The pool's circuit breakers ("closed", "open", "half_open" per expert)."""
        return self.pool.breaker_states()

    @property
    def restarts(self) -> dict[str, int]:
        """The pool's actor restarts per expert."""
        return self.pool.restarts

    async def start(self) -> dict[str, HealthReport]:
        return await self.pool.start()

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pool.shutdown()

    async def health(self, timeout_s: float = 5.0) -> dict[str, HealthReport]:
        """The pool's health table, with each expert's dispatcher queue depth added."""
        table = await self.pool.health(timeout_s)
        return {name: {**facts, "dispatch_queue_depth": self.queue_depth(name)} for name, facts in table.items()}

    def queue_depth(self, name: str) -> int:
        return sum(1 for job in self._queues.get(name, ()) if not job.future.done())

    def expect(self, calls: Counter[str]) -> None:
        """Calls known to come later (replacing earlier ones): eviction keeps these experts like queued ones."""
        self._expected = Counter(calls)

    def _demand(self, name: str) -> int:
        return self.queue_depth(name) + self._expected[name]

    async def generate(self, name: str, request: GenerationRequest) -> Completion:
        if not self._managed(name):
            return await self.pool.generate(name, request)
        job = self._enqueue(name, request, streamed=False)
        return await job.future

    async def stream(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        """Yield text pieces as the expert produces them (once its turn comes), then its ``Completion``."""
        if not self._managed(name):
            async for item in self.pool.stream(name, request):
                yield item
            return
        job = self._enqueue(name, request, streamed=True)
        assert job.deltas is not None
        try:
            while (piece := await job.deltas.get()) is not _END:
                yield piece
            yield await job.future
        finally:
            if not job.future.done():  # the caller stopped listening: the job leaves the queue
                job.future.cancel()

    # -- residency -------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Build the residency manager from the actors' reports (footprint, node, state); idempotent."""
        async with self._prepared:
            if self.residency is not None or self.pool.spec.residency is None:
                return
            settings = self.pool.spec.residency
            table = await self.pool.health()
            footprints = [
                _footprint(self.pool.spec, name, facts)
                for name, facts in table.items()
                if self.pool.spec.residency_managed(name) and is_ready(facts)
            ]
            self.residency = ResidencyManager(
                footprints,
                settings.budget_gb,
                _PoolControl(self.pool),
                self._demand,
                host_budget_gb=settings.host_budget_gb,
                clock=self.clock,
            )

    async def release_all(self) -> None:
        """Unload every managed expert that is not running (end of a batch job; benchmark resets)."""
        await self.prepare()
        if self.residency is not None:
            await self.residency.release_all()

    def _managed(self, name: str) -> bool:
        """Whether ``name``'s requests queue here (synchronous: callers that submit together queue together)."""
        if name not in self.pool.expert_names or not self.pool.is_healthy(name):
            return False  # the pool raises ExpertUnavailable with the reason
        return self.pool.spec.residency_managed(name)

    # -- queues and the pump ---------------------------------------------------------------
    def _enqueue(self, name: str, request: GenerationRequest, streamed: bool) -> _Job:
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        job = _Job(request, self.clock(), future, asyncio.Queue() if streamed else None)
        self._queues.setdefault(name, deque()).append(job)
        self._kick()
        return job

    def _kick(self) -> None:
        self._wake.set()
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        await asyncio.sleep(0)  # callers that submit together have all queued before the first pick
        await self.prepare()
        while True:
            self._wake.clear()
            self._launch()
            if not self._running and not any(self.queue_depth(name) for name in self._queues):
                return
            await self._wake.wait()

    def _order(self) -> list[str]:
        now = self.clock()
        views = []
        for name, queue in self._queues.items():
            while queue and queue[0].future.done():  # callers that gave up
                queue.popleft()
            if name in self._running or not queue:
                continue
            residency = self.residency.state(name) if self.residency is not None else "resident"
            views.append(scheduler.QueueView(name, self.queue_depth(name), queue[0].enqueued, residency))
        return scheduler.order(views, now, self.latency_bound_s)

    def _launch(self) -> None:
        """Let requests join their expert's run; start runs while slots are free; prefetch the expert in line."""
        self._join_runs()
        while len(self._running) < self.max_running:
            if self.residency is not None and self.residency.waiting_for_room:
                break  # a run waits for memory: starting others would only pin what it needs evicted
            ranked = self._order()
            if not ranked:
                break
            self._running.add(ranked[0])
            self._acquiring.add(ranked[0])
            task = asyncio.create_task(self._run(ranked[0]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.prefetching and self.residency is not None and not self._acquiring:  # their needs come first
            upcoming = next(iter(self._order()), None)
            if upcoming is not None and self.residency.state(upcoming) in ("disk", "parked"):
                self.residency.prefetch(upcoming)

    def _join_runs(self) -> None:
        """A request for an expert that is running (in memory, generating) joins its run at once: the actor takes it
        into its running batch, where waiting for the run to end would cost a whole turn. Unless another expert's
        request is overdue: then the run ends with what it has, so the overdue one gets its turn."""
        for name, joined in self._serving.items():
            if not self.queue_depth(name) or self._overdue_elsewhere(name):
                continue
            task = asyncio.create_task(self._send(name, self._take(name)))
            for tracked in (joined, self._tasks):
                tracked.add(task)
                task.add_done_callback(tracked.discard)

    def _overdue_elsewhere(self, name: str) -> bool:
        if self.latency_bound_s is None:
            return False
        now = self.clock()
        return any(
            other != name and any(now - job.enqueued > self.latency_bound_s for job in queue if not job.future.done())
            for other, queue in self._queues.items()
        )

    async def _run(self, name: str) -> None:
        try:
            if self.residency is not None:
                try:
                    if name not in self.residency:
                        raise RuntimeError("its actor was not ready when the dispatcher started")
                    await self.residency.acquire(name)
                except Exception as error:
                    self._fail(self._take(name), ExpertCallFailed(f"expert {name!r} could not be loaded: {error}"))
                    return
                finally:
                    self._acquiring.discard(name)
                    self._kick()  # room is settled: the pump may prefetch the next expert
            joined = self._serving[name] = set()
            try:
                jobs = self._take(name)
                if jobs:
                    await self._send(name, jobs)
                while joined:  # requests that joined while it ran (more may join while these finish)
                    await asyncio.gather(*list(joined), return_exceptions=True)
            finally:
                del self._serving[name]
                if self.residency is not None:
                    self.residency.release(name)
        finally:
            self._running.discard(name)
            self._kick()

    def _take(self, name: str) -> list[_Job]:
        queue = self._queues.get(name, deque())
        jobs = [job for job in queue if not job.future.done()]
        queue.clear()
        return jobs

    async def _send(self, name: str, jobs: list[_Job]) -> None:
        stats = self.stats.setdefault(name, ExpertDispatchStats())
        now = self.clock()
        stats.batch_sizes[len(jobs)] += 1
        stats.requests += len(jobs)
        stats.wait_seconds_total += sum(now - job.enqueued for job in jobs)
        plain = [job for job in jobs if job.deltas is None]
        calls = [self._send_plain(name, plain)] if plain else []
        calls += [self._send_streamed(name, job) for job in jobs if job.deltas is not None]
        await asyncio.gather(*calls)

    async def _send_plain(self, name: str, jobs: list[_Job]) -> None:
        try:
            results = await self.pool.generate_batch(name, [job.request for job in jobs])
        except Exception as error:
            self._fail(jobs, error)
            return
        for job, result in zip(jobs, results):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    async def _send_streamed(self, name: str, job: _Job) -> None:
        assert job.deltas is not None
        completion: Completion | None = None
        try:
            async for item in self.pool.stream(name, job.request):
                if isinstance(item, str):
                    job.deltas.put_nowait(item)
                else:
                    completion = item
            if completion is None:
                raise ExpertCallFailed(f"expert {name!r} ended its stream without a completion")
        except Exception as error:
            self._fail([job], error)
            return
        if not job.future.done():
            job.future.set_result(completion)
        job.deltas.put_nowait(_END)

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)
            if job.deltas is not None:
                job.deltas.put_nowait(_END)


def _footprint(spec: PoolSpec, name: str, facts: dict[str, Any]) -> ExpertFootprint:
    """A managed expert as its actor reported it at start: measured memory, node, current state."""
    state = facts.get("residency")
    return ExpertFootprint(
        name,
        float(facts.get("memory_gb") or 0.0),
        str(facts.get("node") or "local"),
        spec.expert(name).on_gpu,
        state if state in ("disk", "parked", "resident") else "disk",
    )


class _PoolControl:
    """``ResidencyControl`` on the pool's actors."""

    def __init__(self, pool: ExpertPool) -> None:
        self.pool = pool

    async def load(self, name: str) -> None:
        await self.pool.control(name, "load")

    async def park(self, name: str) -> str:
        return str((await self.pool.control(name, "park"))["residency"])

    async def unload(self, name: str) -> None:
        await self.pool.control(name, "unload")


def dispatching(pool: ExpertClient, always: bool = False) -> ExpertClient:
    """A new ``Dispatcher`` over the pool when its pool file has a ``residency`` section (or ``always``); else the
    pool itself (a ``Dispatcher`` is returned as it is).

    Its caller owns it (the ``Orchestrator`` does): the dispatcher keeps the view of which experts are resident, so
    code that needs it uses the orchestrator's (``Orchestrator.pool``) rather than building a second view of the same
    actors, which would book the same memory twice.
    """
    if not isinstance(pool, ExpertPool):  # a Dispatcher already
        return pool
    if pool.spec.residency is None and not always:
        return pool
    return Dispatcher(pool)
