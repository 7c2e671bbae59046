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
    """What an expert actor needs from a model runtime."""

    async def load(self) -> None:
        """Prepare the model (load weights, open clients). Called once, before any generate."""

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        """Answer every request of ``batch``, in order; stream text through ``on_delta`` if given.

        A failure of one request may be returned as a completion with
        ``finish_reason="error"``; an exception fails the whole batch.
        """

    def describe(self) -> dict[str, object]:
        """Facts for health reports: model, device, dtype..."""


class BackendError(RuntimeError):
    """A backend could not answer; the message says what to check."""
