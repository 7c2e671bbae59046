"""What the chat route hands the gate: an answer as an object, or as a stream of chunk objects.

``AnswerResponse`` keeps the completion it rendered and ``AnswerStream`` what its events carried
(``StreamedAnswer``), so the gate caches, settles, charges and journals them without parsing its own bytes back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

KEEPALIVE_S = 15.0  # below the common proxy idle timeouts (nginx 60 s, AWS ALB 60 s)
KEEPALIVE = ": keep-alive\n\n"


class AnswerResponse(JSONResponse):
    """A JSON answer that keeps the object it was rendered from, so the gate records it without parsing it back."""

    def __init__(self, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(answer, headers=headers)
        self.answer = answer


class AnswerStream(StreamingResponse):
    """A chat answer as server-sent events, rendered here from the route's chunk objects.

    The route hands over its chunks as dicts; this writes each as one ``data:`` event (then ``[DONE]``) and keeps
    what it sent in ``answer``, so the gate records the stream without parsing its own events back. While no chunk
    comes for ``keepalive_s`` seconds (a long aggregation, an expert loading), an SSE comment goes out instead, so
    proxies with idle timeouts keep the connection; clients ignore comments.
    """

    def __init__(self, chunks: AsyncIterator[dict[str, Any]], headers: dict[str, str] | None = None) -> None:
        self.answer = StreamedAnswer()
        self.chunks = chunks  # the route's chunk objects (``n`` > 1 merges several answers' chunks)
        self.keepalive_s = KEEPALIVE_S  # the gate sets the service's limits.sse_keepalive_s (0: none)
        super().__init__(self._events(), media_type="text/event-stream", headers=headers)

    async def _events(self) -> AsyncIterator[str]:
        # The chunks are read by a task of their own, so waiting for the next one can time out (a keep-alive)
        # without cancelling the pipeline behind them.
        queue: asyncio.Queue[dict[str, Any] | _End] = asyncio.Queue(maxsize=16)
        reader = asyncio.create_task(self._read(queue))
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.keepalive_s or None)
                except TimeoutError:
                    yield KEEPALIVE
                    continue
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    break
                self.answer.record(item)
                yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n"
        finally:
            with anyio.CancelScope(shield=True):  # even when cancelled (the client went away): stop the reader
                reader.cancel()  # and close the route's chunks, which cancels the work behind them
                await asyncio.gather(reader, return_exceptions=True)
                await close_iterator(self.chunks)
        yield "data: [DONE]\n\n"

    async def _read(self, queue: asyncio.Queue[dict[str, Any] | _End]) -> None:
        try:
            async for chunk in self.chunks:
                await queue.put(chunk)
        except Exception as error:  # the route reports its own errors as chunks: this would be a bug, raised there
            await queue.put(_End(error))
        else:
            await queue.put(_End())


@dataclass(frozen=True)
class _End:
    """The chunks ended (with the exception that ended them, if one did)."""

    error: Exception | None = None


class StreamedAnswer:
    """What a chat stream sent, gathered from its chunk objects into one completion-shaped record."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.last: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.metadata: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None

    def record(self, event: dict[str, Any]) -> None:
        if "error" in event:
            self.error = str(event["error"].get("message", event["error"]))
            return
        self.last = event
        self.usage = event.get("usage") or self.usage
        self.metadata = event.get("moesaic") or self.metadata
        for choice in event.get("choices", []):
            if choice.get("index", 0) != 0:  # n > 1: the journal keeps the first choice's text
                continue
            self.text.append(choice.get("delta", {}).get("content") or "")
            self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def total_tokens(self) -> int:
        if self.usage is not None:
            return int(self.usage.get("total_tokens", 0))
        calls = (self.metadata or {}).get("calls", [])
        return sum(int(call.get("prompt_tokens", 0)) + int(call.get("completion_tokens", 0)) for call in calls)

    def response(self) -> dict[str, Any] | None:
        if not self.last:
            return None
        message = {"role": "assistant", "content": "".join(self.text)}
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        record = {key: self.last.get(key) for key in ("id", "created", "model")}
        return {
            **record,
            "object": "chat.completion",
            "choices": [choice],
            "usage": self.usage,
            "moesaic": self.metadata,
        }


class ClosingStream(StreamingResponse):
    """A stream whose iterators (``closing``) are closed however it ends, finished or left by the client, so that
    the work behind them stops and what records them runs."""

    def closing(self) -> list[Any]:
        return [self.body_iterator]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                for iterator in self.closing():
                    await close_iterator(iterator)


async def close_iterator(iterator: Any) -> None:
    """Close an async iterator that can be closed (an async generator: closing cancels the work behind it)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
