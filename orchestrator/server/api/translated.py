"""Another API family's answer from the chat flow's: the chat answer read back as objects, and a stream whose events
another renderer writes.

``/v1/responses`` and ``/v1/messages`` translate their request into a chat completion body and run it through the
same gate and flow as ``/v1/chat/completions`` (admission, limits, budgets, cache, journal, metadata). What comes
back is the chat answer: a JSON response, or the gate's stream of chat chunk events. ``answer_of`` reads the former;
``chunks_of`` reads the latter back into chunk objects for the family's renderer, and ``TranslatedStream`` serves
the renderer's events while keeping the gate's stream (and so the recording and the work behind it) closed however
the client leaves.

Runs in: the API server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from orchestrator.server.api.answers import AnswerResponse, ClosingStream


def answer_of(response: JSONResponse) -> dict[str, Any]:
    """The chat completion a JSON answer carries (rendered, or from the cache)."""
    if isinstance(response, AnswerResponse):
        return response.answer
    return dict(json.loads(bytes(response.body)))


async def chunks_of(events: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """The chat chunk objects of a stream of chat SSE events (keep-alive comments skipped, up to ``[DONE]``)."""
    async for event in events:
        text = event.decode() if isinstance(event, bytes) else str(event)
        for line in text.splitlines():
            if not line.startswith("data: "):
                continue  # a keep-alive comment, or the blank line that ends an event
            payload = line.removeprefix("data: ")
            if payload == "[DONE]":
                return
            yield json.loads(payload)


class TranslatedStream(ClosingStream):
    """Events another API family renders from the gate's chat stream; the chat stream is closed however this ends
    (its recording settles the bill and journals the request, its close stops the work behind it)."""

    def __init__(self, chat_stream: StreamingResponse, events: AsyncIterator[Any], headers: dict[str, str]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self.chat_stream = chat_stream

    def closing(self) -> list[Any]:
        return [self.body_iterator, self.chat_stream.body_iterator]


def passed_headers(response: StreamingResponse | JSONResponse) -> dict[str, str]:
    """The chat answer's own headers worth keeping (``x-moesaic-*``, the cache state)."""
    return {key: value for key, value in response.headers.items() if key.lower().startswith("x-moesaic")}
