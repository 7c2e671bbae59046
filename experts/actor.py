"""The expert actor: one model, one request queue, batches out.

``ExpertActor`` is a plain class so it can be tested in-process; ``ExpertPool`` turns it
into a Ray actor with the resources from the pool file. Every request for an expert goes
through its actor's ``RequestBatcher``, so requests are batched by assigned expert.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, AsyncIterator

from experts.backends import create_backend
from experts.batcher import RequestBatcher
from experts.spec import ExpertSpec
from experts.types import Completion, GenerationRequest, Message, TextDelta


class ExpertActor:
    """Hosts one expert: loads its backend, fills in its defaults, batches its requests."""

    def __init__(self, spec_data: dict[str, Any]) -> None:
        self.spec = ExpertSpec.model_validate(spec_data)
        self.backend = create_backend(self.spec)
        self.batcher = RequestBatcher(
            self.backend.generate,
            max_batch_size=self.spec.batching.max_batch_size,
            max_wait_s=self.spec.batching.max_wait_ms / 1000.0,
            concurrency=self.spec.concurrency,
        )
        self.state = "starting"
        self.error: str | None = None
        self.load_seconds: float | None = None

    async def start(self) -> dict[str, Any]:
        """Load the model; report health (never raises, so the pool can report what failed)."""
        started = time.perf_counter()
        try:
            await self.backend.load()
        except Exception as error:
            self.state, self.error = "failed", f"{type(error).__name__}: {error}"
        else:
            self.state = "ready"
        self.load_seconds = time.perf_counter() - started
        return await self.health()

    async def health(self) -> dict[str, Any]:
        stats = self.batcher.stats
        return {
            "name": self.spec.name,
            "state": self.state,
            "error": self.error,
            "load_seconds": self.load_seconds,
            "queue_depth": self.batcher.queue_depth,
            "batches": stats.batches,
            "requests": stats.requests,
            "largest_batch": stats.largest_batch,
            "failed_batches": stats.failed_batches,
            **self.backend.describe(),
        }

    async def generate(self, request: GenerationRequest) -> Completion:
        self._require_ready()
        return await self.batcher.submit(self._with_defaults(request))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        """Yield text pieces as they are produced, then the finished ``Completion``."""
        self._require_ready()
        pieces: asyncio.Queue[str] = asyncio.Queue()

        def on_delta(delta: TextDelta) -> None:
            pieces.put_nowait(delta.text)

        task = asyncio.create_task(self.batcher.submit(self._with_defaults(request), on_delta))
        while not (task.done() and pieces.empty()):
            getter = asyncio.ensure_future(pieces.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
            else:
                getter.cancel()
        yield task.result()

    def _require_ready(self) -> None:
        if self.state != "ready":
            raise RuntimeError(f"expert {self.spec.name!r} is {self.state}: {self.error or 'not started'}")

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
