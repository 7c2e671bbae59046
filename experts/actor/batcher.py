"""Collect queued requests for one expert into batches: the heart of "batch by expert".

Requests arrive one at a time; the model is fastest when it sees many at once. A worker
takes the first waiting request, keeps collecting for at most ``max_wait_s`` or until
``max_batch_size`` are in hand, runs them as one backend call, and answers each caller.
A request whose caller gave up while it waited (its task was cancelled: the client went
away, or the pool cancelled the Ray task) is dropped, never generated, and counted. Once every
caller of a running batch has gone, the batch's backend call is cancelled too (``abandoned``), so
an engine stops generating for nobody (vLLM aborts the requests, ours frees their slots).
Pure asyncio, no Ray: the actor wraps it, the tests drive it directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable

from experts.backends.base import DeltaSink
from experts.types import Completion, GenerationRequest, TextDelta

RunBatch = Callable[[list[GenerationRequest], DeltaSink | None], Awaitable[list[Completion]]]


@dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future[Completion]
    on_delta: DeltaSink | None


@dataclass
class BatchStats:
    """Counters for health reports and benchmarks."""

    batches: int = 0
    requests: int = 0
    largest_batch: int = 0
    failed_batches: int = 0
    dropped: int = 0  # requests cancelled while queued: never generated
    abandoned: int = 0  # running batches cancelled because every one of their callers went away
    batch_sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.requests += size
        self.largest_batch = max(self.largest_batch, size)
        self.batch_sizes = (self.batch_sizes + [size])[-100:]  # the recent history is enough


class RequestBatcher:
    """Queue in front of a backend; ``concurrency`` batches may run at once."""

    def __init__(self, run_batch: RunBatch, max_batch_size: int, max_wait_s: float, concurrency: int = 1) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.concurrency = concurrency
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._workers: list[asyncio.Task[None]] = []

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, request: GenerationRequest, on_delta: DeltaSink | None = None) -> Completion:
        """Queue one request and wait for its completion (streaming through ``on_delta``)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(request, future, on_delta))
        return await future

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._next_live()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            batch = self._live(batch)  # a cancelled request does not take a place in the batch
        return self._live(batch)

    def _cancel_when_abandoned(self, run: asyncio.Future[list[Completion]], batch: list[_Pending]) -> None:
        """Cancel ``run`` once every caller of ``batch`` has given up (their futures are cancelled)."""

        def check(_: asyncio.Future[Completion]) -> None:
            if not run.done() and all(pending.future.cancelled() for pending in batch):
                run.cancel()

        for pending in batch:
            pending.future.add_done_callback(check)

    async def _next_live(self) -> _Pending:
        assert self._queue is not None
        while True:
            pending = await self._queue.get()
            if self._live([pending]):
                return pending

    def _live(self, batch: list[_Pending]) -> list[_Pending]:
        live = [pending for pending in batch if not pending.future.cancelled()]
        self.stats.dropped += len(batch) - len(live)
        return live

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            sinks = [pending.on_delta for pending in batch]

            def route_delta(delta: TextDelta) -> None:
                sink = sinks[delta.index]
                if sink is not None:
                    sink(replace(delta, index=0))

            run = asyncio.ensure_future(
                self._run_batch([pending.request for pending in batch], route_delta if any(sinks) else None)
            )
            self._cancel_when_abandoned(run, batch)
            try:
                completions = await run
                if len(completions) != len(batch):
                    raise RuntimeError(f"backend returned {len(completions)} completions for {len(batch)} requests")
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the worker itself is being stopped
                self.stats.abandoned += 1  # every caller of the batch went away: its backend call was cancelled
                continue
            except Exception as error:  # one failing batch must not kill the worker
                self.stats.failed_batches += 1
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            self.stats.record(len(batch))
            for pending, completion in zip(batch, completions):
                if not pending.future.done():
                    pending.future.set_result(completion)
