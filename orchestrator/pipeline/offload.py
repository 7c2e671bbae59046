"""Aggregation's CPU work on large texts runs in a worker thread, so one request cannot stall the event loop.

Reading final answers out of the experts' texts (``aggregator/_extract.py``) is linear and reads bounded tails,
but stripping reasoning traces and comparing whole answers still walk every character: tens of ms for a few MB
of answers, during which the event loop serves no other request. Above ``OFFLOAD_CHARS`` characters that work
runs in a worker thread (``asyncio.to_thread``); below it, in place: the hop to a thread costs ~0.1 ms, as much
as extracting a few KB does, and per-request overhead is what ``bench/breakdown.py`` watches.

A thread helps only because each call into the regex engine is short: one C call holds the GIL throughout, so
the patterns must stay linear and the texts they read bounded, thread or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

# ~1-2 ms of extraction on a 2-core CI machine (3 answers of 16 KB: ~5 ms); small requests stay on the fast path
OFFLOAD_CHARS = 16_000

Result = TypeVar("Result")


class _HasContent(Protocol):
    @property
    def content(self) -> str: ...


class _HasText(Protocol):
    @property
    def text(self) -> str: ...


def aggregation_chars(messages: Iterable[_HasContent], answers: Iterable[_HasText]) -> int:
    """How much text aggregating ``answers`` may read: the conversation (for its question) and every answer."""
    return sum(len(message.content) for message in messages) + sum(len(answer.text) for answer in answers)


async def off_loop(chars: int, work: Callable[..., Result], *args: Any) -> Result:
    """``work(*args)``: in a worker thread when it reads more than ``OFFLOAD_CHARS`` characters, else here."""
    if chars <= OFFLOAD_CHARS:
        return work(*args)
    return await asyncio.to_thread(work, *args)
