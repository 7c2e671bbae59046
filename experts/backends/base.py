"""The one protocol every backend speaks.

A backend turns a *batch* of requests into one completion each. Streaming is the same
call with a delta sink: the backend reports text as it is produced through
``on_delta(TextDelta(index, text))``, and still returns the finished completions. This
keeps one code path for streamed and non-streamed requests, so a streamed request can
share a batch with plain ones.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from experts.types import Completion, GenerationRequest, TextDelta

DeltaSink = Callable[[TextDelta], None]


@runtime_checkable
class Backend(Protocol):
    """What an expert actor needs from a model runtime.

    ``load``, ``generate`` and ``describe`` are required. The rest are optional abilities with defaults here,
    so a backend subclasses ``Backend`` and overrides only what it can do: ``joins_running_batch``/``max_slots``
    (a decode loop that batches join while it runs), ``schedules_itself`` (an engine with its own scheduler: no
    batching in the actor), ``park`` (move weights to host RAM), ``unload`` (free them).
    """

    max_slots: int = 1  # with joins_running_batch: how many requests the running loop holds at once
    # the engine batches requests itself (vLLM's scheduler): the actor hands each request over as it comes, a batch
    # of one, so a caller who goes away cancels exactly its own request in the engine
    schedules_itself: bool = False
    # memory the engine takes beyond the weights when loaded (vLLM's KV cache): residency budgets count it
    runtime_memory_gb: float = 0.0

    @property
    def joins_running_batch(self) -> bool:
        """True when batches join one running decode loop, so the actor lets ``max_slots`` in at once."""
        return False

    async def park(self) -> bool:
        """Move the weights to host RAM, keeping them ready to come back fast; False: not possible here."""
        return False

    async def unload(self) -> None:
        """Free the model's memory (the next ``load`` reads the weights again); nothing to free by default."""

    async def load(self) -> None:
        """Prepare the model (load weights, open clients). Called once, before any generate."""

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        """Answer every request of ``batch``, in order; stream text through ``on_delta`` if given.

        A failure of one request may be returned as a completion with
        ``finish_reason="error"``; an exception fails the whole batch.
        """

    def describe(self) -> dict[str, object]:
        """Facts for health reports: model, device, dtype..."""
