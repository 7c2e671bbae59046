"""Answers as OpenAI's Responses API shapes them: a ``response`` object, and its stream of events.

The chat flow's answer (a ``chat.completion``, or its chunks) becomes the response: its text as one ``message``
output item, each tool call as a ``function_call`` item (``call_id`` is the chat call's id, what the client sends
back in ``function_call_output``), its usage as ``input_tokens``/``output_tokens``, ``status`` ``incomplete`` when
``max_output_tokens`` cut it, and Moesaic's metadata under ``moesaic``. Streamed: ``response.created``,
``response.in_progress``, the message item (``output_item.added``, ``content_part.added``, ``output_text.delta``
per piece, then the ``.done`` events), each call (``output_item.added``, ``function_call_arguments.delta`` and
``.done``, ``output_item.done``), and ``response.completed`` (or ``response.failed``) with the whole response.

Runs in: the API server. Plain data in, plain data out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ResponseFrame:
    """What every rendering of one response shares: its id and time, and the request's settings it echoes."""

    response_id: str
    created_at: int
    echo: dict[str, Any]  # model, instructions, tools, tool_choice, ... as the request gave them

    def envelope(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "output": output,
            "usage": usage,
            **self.echo,
        }


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def message_item(text: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": f"fc_{call.get('id', '')}",
        "call_id": call.get("id", ""),
        "name": function.get("name", ""),
        "arguments": function.get("arguments", ""),
        "status": status,
    }


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt, completion = int(chat_usage.get("prompt_tokens", 0)), int(chat_usage.get("completion_tokens", 0))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(chat_usage.get("total_tokens", prompt + completion)),
    }


def render_response(frame: ResponseFrame, completion: dict[str, Any]) -> dict[str, Any]:
    """A whole ``chat.completion`` as a ``response`` object."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content"):
        output.append(message_item(str(message["content"]), new_id("msg")))
    output.extend(call_item(call) for call in message.get("tool_calls") or [])
    response = frame.envelope(_status(choice.get("finish_reason")), output, usage_of(completion.get("usage")))
    if response["status"] == "incomplete":
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    if "moesaic" in completion:
        response["moesaic"] = completion["moesaic"]
    return response


def _status(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


@dataclass
class _Streamed:
    """What the stream has carried so far."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # by the chunk's call index
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    error: Any = None


async def render_events(
    frame: ResponseFrame, chunks: AsyncIterator[dict[str, Any]], streamed: _Streamed | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The Responses API's events for a stream of chat chunks; the last is ``response.completed`` (or
    ``response.failed``) carrying the whole response."""
    seen = streamed or _Streamed()
    message_id = new_id("msg")
    yield {"type": "response.created", "response": frame.envelope("in_progress", [], None)}
    yield {"type": "response.in_progress", "response": frame.envelope("in_progress", [], None)}
    message_open = False
    async for chunk in chunks:
        if "error" in chunk:
            seen.error = chunk["error"]
            break
        if chunk.get("moesaic"):
            seen.metadata = chunk["moesaic"]
        if chunk.get("usage"):
            seen.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if not message_open:
                    message_open = True
                    yield {
                        "type": "response.output_item.added",
                        "output_index": 0,
                        "item": message_item("", message_id, "in_progress") | {"content": []},
                    }
                    yield {
                        "type": "response.content_part.added",
                        "item_id": message_id,
                        "output_index": 0,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []},
                    }
                seen.text.append(delta["content"])
                yield {
                    "type": "response.output_text.delta",
                    "item_id": message_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": delta["content"],
                }
            for call in delta.get("tool_calls") or []:
                held = seen.calls.setdefault(
                    int(call.get("index", 0)), {"id": "", "function": {"name": "", "arguments": ""}}
                )
                held["id"] = call.get("id") or held["id"]
                function = call.get("function") or {}
                held["function"]["name"] += function.get("name") or ""
                held["function"]["arguments"] += function.get("arguments") or ""
            seen.finish_reason = choice.get("finish_reason") or seen.finish_reason
    output: list[dict[str, Any]] = []
    if message_open:
        text = "".join(seen.text)
        done = message_item(text, message_id)
        yield {
            "type": "response.output_text.done",
            "item_id": message_id,
            "output_index": 0,
            "content_index": 0,
            "text": text,
        }
        yield {
            "type": "response.content_part.done",
            "item_id": message_id,
            "output_index": 0,
            "content_index": 0,
            "part": done["content"][0],
        }
        yield {"type": "response.output_item.done", "output_index": 0, "item": done}
        output.append(done)
    for _, call in sorted(seen.calls.items()):  # calls are the vote's outcome: whole, once the answer is decided
        index = len(output)
        item = call_item(call)
        yield {
            "type": "response.output_item.added",
            "output_index": index,
            "item": item | {"arguments": "", "status": "in_progress"},
        }
        yield {
            "type": "response.function_call_arguments.delta",
            "item_id": item["id"],
            "output_index": index,
            "delta": item["arguments"],
        }
        yield {
            "type": "response.function_call_arguments.done",
            "item_id": item["id"],
            "output_index": index,
            "arguments": item["arguments"],
        }
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
        output.append(item)
    if seen.error is not None:
        failed = frame.envelope("failed", output, usage_of(seen.usage))
        message = seen.error.get("message") if isinstance(seen.error, dict) else str(seen.error)
        failed["error"] = {"code": "server_error", "message": str(message)}
        yield {"type": "response.failed", "response": failed}
        return
    response = frame.envelope(_status(seen.finish_reason), output, usage_of(seen.usage))
    if response["status"] == "incomplete":
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    if seen.metadata is not None:
        response["moesaic"] = seen.metadata
    yield {"type": "response.completed", "response": response}


async def sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-sent events, each named by its type and numbered (``sequence_number``)."""
    number = 0
    async for event in events:
        event = {**event, "sequence_number": number}
        number += 1
        yield f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
