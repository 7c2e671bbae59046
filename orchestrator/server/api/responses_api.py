"""``POST /v1/responses``: OpenAI's Responses API over the same pipeline as the chat API.

The body is validated here (a bad field is a 400 in OpenAI's error shape, naming it), and its input items (text,
messages, ``function_call`` and ``function_call_output`` items), ``instructions``, function tools,
``tool_choice``, ``text.format`` (structured output) and ``max_output_tokens`` are translated into a chat completion
body by LiteLLM's Responses adapter, then run through the chat route's gate and flow: the same auth, limits,
budgets, cache, journal and ``moesaic`` metadata. ``responses_render.py`` renders the answer.

``previous_response_id`` continues a conversation: every stored answer (``store``, default true) keeps the
conversation up to it (``service/response_store.py``: Redis when configured, else in process, for
``responses.ttl_s``), and the new input is appended to it; ``instructions`` are the request's own, as OpenAI's are.
A stored answer belongs to the API key that made it (another key cannot continue it, whatever the id), and a
conversation is bounded like a body: past ``limits.max_body_bytes`` it is refused, and a new one must start.

Runs in: the API server. May import: litellm (lazily: its import takes seconds), the chat route.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.server.api.chat import run_chat
from orchestrator.server.api.gate import Gate
from orchestrator.server.api.openapi import RESPONSES_RESPONSES, json_body
from orchestrator.server.api.responses_render import ResponseFrame, new_id, render_events, render_response, sse
from orchestrator.server.api.translated import TranslatedStream, answer_of, chunks_of, passed_headers
from orchestrator.server.errors import APIError, from_validation_error
from orchestrator.server.service.response_store import ResponseStore

router = APIRouter()

DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # limits.max_body_bytes' default, for an app without a service

# Fields of the translated chat body that our chat API takes
CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "stream",
        "stream_options",
        "user",
    }
)


class ResponsesRequest(BaseModel):
    """``POST /v1/responses`` body (OpenAI's Responses API: function tools, text and structured output)."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1)]
    input: str | Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1024)]
    instructions: str | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stream: bool = False
    text: dict[str, Any] | None = Field(None, description="text.format: text, json_object or json_schema")
    previous_response_id: str | None = Field(None, description="continue the conversation of a stored response")
    store: bool = Field(True, description="keep this answer so that previous_response_id can continue it")
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    user: str | None = None
    moesaic: dict[str, Any] | None = Field(None, description="Moesaic's options, as in the chat API")


@router.post("/v1/responses", openapi_extra=json_body(ResponsesRequest), responses=RESPONSES_RESPONSES)
async def create_response(http_request: Request) -> Response:
    gate = Gate.open(http_request)
    store = response_store(http_request)
    owner = gate.principal.key_name  # a stored answer is continued by the key that made it, only
    try:
        data = await gate.read_body()
        request = _validated(data)
        items = await _conversation(request, store, owner, _max_bytes(http_request))
        chat = _chat_body(request, items)
    except BaseException as error:
        await gate.failed(error)
        raise
    answer = await run_chat(http_request, gate, chat)
    frame = ResponseFrame(new_id("resp"), int(time.time()), _echo(request))
    if isinstance(answer, StreamingResponse):
        events = _stored_events(render_events(frame, chunks_of(answer.body_iterator)), request, items, store, owner)
        return TranslatedStream(answer, sse(events), passed_headers(answer))
    response = render_response(frame, answer_of(answer))
    if request.store:
        await store.put(_stored_id(owner, frame.response_id), items + _as_input(response["output"]))
    return JSONResponse(response, headers=passed_headers(answer))


def _stored_id(owner: str, response_id: str) -> str:
    return f"{owner}:{response_id}"


def _max_bytes(http_request: Request) -> int:
    """The most a conversation may hold: the service's body limit (the default one without a service)."""
    service = getattr(http_request.app.state, "service", None)
    return service.config.limits.max_body_bytes if service is not None else DEFAULT_MAX_BYTES


def response_store(http_request: Request) -> ResponseStore:
    """The service's store; an app without a service (no lifespan) keeps one of its own, in process."""
    service = getattr(http_request.app.state, "service", None)
    if service is not None:
        return service.responses
    state = http_request.app.state
    if getattr(state, "response_store", None) is None:
        state.response_store = ResponseStore(None, ttl_s=3600)
    return state.response_store


def _validated(data: dict[str, Any]) -> ResponsesRequest:
    try:
        return ResponsesRequest.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None


async def _conversation(
    request: ResponsesRequest, store: ResponseStore, owner: str, max_bytes: int
) -> list[dict[str, Any]]:
    """The input items of this turn: the stored conversation it continues (``owner``'s), then its own input."""
    own = (
        [{"type": "message", "role": "user", "content": request.input}]
        if isinstance(request.input, str)
        else request.input
    )
    if request.previous_response_id is None:
        return list(own)
    earlier = await store.get(_stored_id(owner, request.previous_response_id))
    if earlier is None:
        raise APIError(
            400,
            f"previous response {request.previous_response_id!r} was not found: it was not stored (store: false), "
            "or it expired (responses.ttl_s), or another API key made it, or another server without shared Redis "
            "answered it",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items = earlier + list(own)
    size = len(json.dumps(items, ensure_ascii=False).encode())
    if size > max_bytes:
        raise APIError(
            400,
            f"the conversation continued from {request.previous_response_id!r} is {size} bytes, over the "
            f"{max_bytes} a request may hold (limits.max_body_bytes); start a new one without previous_response_id",
            param="previous_response_id",
            code="conversation_too_long",
        )
    return items


def _chat_body(request: ResponsesRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completion body of a Responses request over ``items`` (LiteLLM's adapter)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm.responses.litellm_completion_transformation.transformation import LiteLLMCompletionResponsesConfig

    params = request.model_dump(
        exclude_none=True, exclude={"model", "input", "stream", "previous_response_id", "store", "moesaic", "metadata"}
    )
    try:
        translated = LiteLLMCompletionResponsesConfig.transform_responses_api_request_to_chat_completion_request(
            model=request.model, input=items, responses_api_request=params, stream=request.stream
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # an item the adapter cannot read
        raise APIError(400, f"input: {error}", param="input") from None
    chat = {key: value for key, value in translated.items() if key in CHAT_FIELDS and value is not None}
    chat["messages"] = [_plain_message(message) for message in chat.get("messages", [])]
    if request.moesaic is not None:
        chat["moesaic"] = request.moesaic
    return chat


def _plain_message(message: Any) -> dict[str, Any]:
    """A translated message as the chat API takes it (tool calls without the adapter's stream ``index``)."""
    data = dict(message)
    if data.get("tool_calls"):
        data["tool_calls"] = [
            {"id": call["id"], "type": "function", "function": dict(call["function"])} for call in data["tool_calls"]
        ]
    return data


def _echo(request: ResponsesRequest) -> dict[str, Any]:
    """The request's settings a response repeats."""
    return {
        "model": request.model,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
        "text": request.text or {"format": {"type": "text"}},
        "truncation": "disabled",
        "metadata": request.metadata or {},
        "store": request.store,
        "user": request.user,
    }


def _as_input(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the next turn's input items."""
    items = []
    for item in output:
        if item["type"] == "message":
            items.append({"type": "message", "role": "assistant", "content": item["content"]})
        elif item["type"] == "function_call":
            items.append({key: item[key] for key in ("type", "call_id", "name", "arguments")})
    return items


async def _stored_events(
    events: AsyncIterator[dict[str, Any]],
    request: ResponsesRequest,
    items: list[dict[str, Any]],
    store: ResponseStore,
    owner: str,
) -> AsyncIterator[dict[str, Any]]:
    """The events, storing the conversation once the response completed (``store``)."""
    async for event in events:
        if event["type"] == "response.completed" and request.store:
            response = event["response"]
            await store.put(_stored_id(owner, response["id"]), items + _as_input(response["output"]))
        yield event
