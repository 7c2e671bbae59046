"""The expert actor: one model, one request queue, batches out.

``ExpertActor`` is a plain class so it can be tested in-process; ``ExpertPool`` turns it
into a Ray actor with the resources from the pool file. Every request for an expert goes
through its actor's ``RequestBatcher``, so requests are batched by assigned expert.

In a pool with a ``residency`` section the actor starts without loading its model (it only
measures what the model will occupy); the dispatcher then calls ``load``, ``park`` and
``unload`` (``experts/actor/lifecycle.py``) as its queues say which experts are needed next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any, AsyncIterator

from experts._channel import ChannelServer
from experts._health import ExpertState, HealthReport
from experts._log_format import configure_from_env
from experts._tracing import configure_from_env as configure_tracing
from experts._tracing import span
from experts.actor.batcher import RequestBatcher
from experts.actor.lifecycle import ModelLifecycle, weights_gb
from experts.backends import create_backend
from experts.config import ExpertSpec
from experts.types import Completion, GenerationRequest, Message, TextDelta, TextPiece

log = logging.getLogger(__name__)


class ExpertActor:
    """Hosts one expert: loads its backend, fills in its defaults, batches its requests."""

    def __init__(
        self,
        spec_data: dict[str, Any],
        load_at_start: bool = True,
        serve_channel: bool = False,
        engine_actor: str | None = None,
        namespace: str | None = None,
    ) -> None:
        """``engine_actor``: the shared vLLM engine this (``local``) expert's requests go to, if the pool put it on
        one (``experts.runtime._engines``); the expert's own actor then holds no model."""
        if _in_ray_actor():  # its own process: log (JSON lines by default) and trace as the serving process does
            configure_from_env()
            configure_tracing("moesaic-expert")
        self.spec = ExpertSpec.model_validate(spec_data)
        self.backend = create_backend(self.spec, engine_actor, namespace)
        self.lifecycle = ModelLifecycle(self.backend, self.spec)
        self.load_at_start = load_at_start
        self.memory_gb: float | None = None
        concurrency = self.spec.concurrency
        if self.backend.joins_running_batch:
            # batches join one running decode loop: let as many reach it at once as it has slots
            concurrency = max(concurrency, self.backend.max_slots)
        batch_size, wait_ms = self.spec.batching.max_batch_size, self.spec.batching.max_wait_ms
        if self.backend.schedules_itself:  # the engine's scheduler batches: hand each request over at once
            batch_size, wait_ms = 1, 0.0
        self.batcher = RequestBatcher(
            self._timed_generate, max_batch_size=batch_size, max_wait_s=wait_ms / 1000.0, concurrency=concurrency
        )
        self.state = ExpertState.STARTING
        self.error: str | None = None
        self.load_seconds: float | None = None
        # the same-node fast lane (experts/_channel.py); the pool decides whether callers use it
        self.channel = ChannelServer(self) if serve_channel else None

    async def start(self) -> dict[str, Any]:
        """Load the model (or, residency-managed, measure it); report health (never raises)."""
        started = time.perf_counter()
        try:
            if self.load_at_start:
                await self.lifecycle.load()
            else:
                weights = await asyncio.to_thread(weights_gb, self.spec)
                declared = self.spec.residency.memory_gb is not None  # a declared footprint is the whole of it
                self.memory_gb = weights if declared else weights + self.backend.runtime_memory_gb
        except Exception as error:
            self.state, self.error = ExpertState.FAILED, f"{type(error).__name__}: {error}"
        else:
            self.state = ExpertState.READY
        self.load_seconds = time.perf_counter() - started
        if self.channel is not None and self.channel.path is None:
            try:
                await self.channel.start()
            except (OSError, AttributeError, NotImplementedError) as error:  # no Unix sockets here: Ray calls
                log.warning("expert %s: no same-node channel: %s", self.spec.name, error)
                self.channel = None
        return await self.health()

    async def health(self) -> HealthReport:
        stats = self.batcher.stats
        report: HealthReport = {
            "name": self.spec.name,
            "state": self.state,
            "error": self.error,
            "load_seconds": self.load_seconds,
            "queue_depth": self.batcher.queue_depth,
            "batches": stats.batches,
            "requests": stats.requests,
            "largest_batch": stats.largest_batch,
            "failed_batches": stats.failed_batches,
            "dropped": stats.dropped,  # requests cancelled while queued, never generated
            "memory_gb": self.memory_gb,
            "node": _node_id(),
            "channel": self.channel.path if self.channel is not None else None,
            "channel_in_flight": self.channel.in_flight if self.channel is not None else 0,
        }
        return {**report, **self.lifecycle.facts(), **self.backend.describe()}  # type: ignore[typeddict-item]

    async def load(self) -> dict[str, Any]:
        """Bring the model into memory (residency-managed pools); returns the timing and the counters."""
        return await self.lifecycle.load()

    async def park(self) -> dict[str, Any]:
        """Weights to host RAM on a GPU; on a CPU the same as ``unload``."""
        return await self.lifecycle.park()

    async def unload(self) -> dict[str, Any]:
        return await self.lifecycle.unload()

    async def generate_batch(self, requests: list[GenerationRequest]) -> list[Completion | BaseException]:
        """Queue several requests in one go, so the batcher sees them together; failures come back in place."""
        self._require_ready()
        calls = [self._traced(request) for request in requests]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    async def _traced(self, request: GenerationRequest, on_delta: Any = None) -> Completion:
        """One request through the batcher, in a span that joins its caller's trace (when tracing is on)."""
        attributes = {"moesaic.expert": self.spec.name, "moesaic.model": self.spec.model}
        with span("moesaic.expert.generate", attributes, traceparent=request.traceparent) as current:
            completion = await self.batcher.submit(self._with_defaults(request), on_delta)
            if current is not None:
                current.set_attribute("moesaic.batch_size", completion.batch_size)
                current.set_attribute("gen_ai.usage.output_tokens", completion.usage.completion_tokens)
            return completion

    async def _timed_generate(self, batch: list[GenerationRequest], on_delta: Any = None) -> list[Completion]:
        started = time.perf_counter()
        outcome = "error"
        try:
            completions = await self.backend.generate(batch, on_delta)
            failed = sum(completion.error is not None for completion in completions)
            outcome = "ok" if not failed else f"{failed} of {len(batch)} failed"
            return completions
        finally:
            elapsed = time.perf_counter() - started
            self.lifecycle.add_generate_time(elapsed)
            self._log_batch(batch, elapsed, outcome)

    def _log_batch(self, batch: list[GenerationRequest], elapsed: float, outcome: str) -> None:
        """One line per batch, naming the HTTP requests it served: a request id leads from the access log here.

        A batch that failed in part or whole is a WARNING; a good one is DEBUG (``--log-level debug``): at INFO
        every expert call would add a line that Ray carries from the actor to the serving process, which costs
        the serving path about as much as the access line it duplicates (``bench/load.py --log-level``).
        """
        ids = [request.request_id for request in batch]
        log.log(
            logging.DEBUG if outcome == "ok" else logging.WARNING,
            "expert %s ran a batch of %d (%s)",
            self.spec.name,
            len(batch),
            outcome,
            extra={
                "request_id": ids[0] if len(set(ids)) == 1 and ids[0] else None,
                "request_ids": ids,
                "expert": self.spec.name,
                "batch_size": len(batch),
                "duration_ms": round(elapsed * 1000, 3),
                "outcome": outcome,
            },
        )

    async def generate(self, request: GenerationRequest) -> Completion:
        self._require_ready()
        return await self._traced(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        """Yield text pieces as they are produced, then the finished ``Completion``."""
        self._require_ready()
        pieces: asyncio.Queue[str] = asyncio.Queue()

        def on_delta(delta: TextDelta) -> None:
            pieces.put_nowait(TextPiece(delta.text, delta.logprobs) if delta.logprobs else delta.text)

        task = asyncio.create_task(self._traced(request, on_delta))
        getter: asyncio.Future[str] | None = None
        try:
            while not (task.done() and pieces.empty()):
                getter = asyncio.ensure_future(pieces.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
            yield task.result()
        finally:  # the caller stopped listening (cancelled): a request still queued is dropped
            task.cancel()
            if getter is not None:
                getter.cancel()

    def _require_ready(self) -> None:
        if self.state != ExpertState.READY:
            raise RuntimeError(f"expert {self.spec.name!r} is {self.state}: {self.error or 'not started'}")
        if self.lifecycle.state != "resident":
            raise RuntimeError(
                f"expert {self.spec.name!r} is not loaded ({self.lifecycle.state}): its pool manages residency, so "
                "call it through the Dispatcher (the Orchestrator does), which loads it first"
            )

    def _with_defaults(self, request: GenerationRequest) -> GenerationRequest:
        """Fill unset sampling parameters and the expert's system prompt from the pool file."""
        defaults = self.spec.generation
        messages = list(request.messages)
        if self.spec.system_prompt and not any(message.role == "system" for message in messages):
            messages.insert(0, Message("system", self.spec.system_prompt))
        return replace(
            request,
            messages=messages,
            max_tokens=request.max_tokens or defaults.max_tokens,
            temperature=defaults.temperature if request.temperature is None else request.temperature,
            top_p=defaults.top_p if request.top_p is None else request.top_p,
            stop=list(request.stop or defaults.stop),
        )


def _in_ray_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def _node_id() -> str:
    """The Ray node this actor runs on (residency budgets are per node); "local" outside Ray."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
