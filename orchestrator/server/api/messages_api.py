"""``POST /v1/messages``: Anthropic's Messages API over the same pipeline as the chat API.

The body is validated here (Anthropic's fields; a bad one is a 400 in Anthropic's error shape), translated into a
chat completion body by LiteLLM's Anthropic adapter (messages with text, images, ``tool_use`` and ``tool_result``
blocks, the system prompt, tools and ``tool_choice``, stop sequences), and run through the chat route's gate and
flow: the same auth (``x-api-key`` or a bearer token), limits, budgets, cache, journal and ``moesaic`` metadata.
The chat answer is translated back by the same adapter: a ``message`` with text and ``tool_use`` blocks and its
``stop_reason`` and usage, or, streamed, Anthropic's events (``message_start``, ``content_block_*``,
``message_delta``, ``message_stop``). Every error, the pipeline's included, is answered in Anthropic's shape
``{"type": "error", "error": {"type", "message"}}``.

Runs in: the API server. May import: litellm (lazily: its import takes seconds), the chat route.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.server.api.chat import run_chat
from orchestrator.server.api.gate import Gate
from orchestrator.server.api.openapi import MESSAGES_RESPONSES, json_body
from orchestrator.server.api.translated import TranslatedStream, answer_of, chunks_of, passed_headers
from orchestrator.server.errors import APIError, from_validation_error

router = APIRouter()

# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
# Fields of the translated chat body that our chat API takes (LiteLLM's adapter may add others, e.g. its metadata)
CHAT_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice", "stream", "user"}
)


class MessagesRequest(BaseModel):
    """``POST /v1/messages`` body (Anthropic's Messages API)."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1, le=32768)]
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: dict[str, Any] | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=4)] | None = None
    metadata: dict[str, Any] | None = Field(None, description="user_id becomes the chat request's user")
    moesaic: dict[str, Any] | None = Field(None, description="Moesaic's options, as in the chat API")


@router.post("/v1/messages", openapi_extra=json_body(MessagesRequest), responses=MESSAGES_RESPONSES)
async def messages(http_request: Request) -> Response:
    gate = Gate.open(http_request)
    try:
        try:
            data = await gate.read_body()
            request = _validated(data)
            chat, tool_names = _chat_body(request)
        except BaseException as error:
            await gate.failed(error)
            raise
        answer = await run_chat(http_request, gate, chat)
    except APIError as error:
        return anthropic_error(error)
    if isinstance(answer, StreamingResponse):
        events = _events(chunks_of(answer.body_iterator), request.model, tool_names)
        return TranslatedStream(answer, events, passed_headers(answer))
    return JSONResponse(_message(answer_of(answer), tool_names), headers=passed_headers(answer))


def _validated(data: dict[str, Any]) -> MessagesRequest:
    try:
        return MessagesRequest.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None


def _chat_body(request: MessagesRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The chat completion body of an Anthropic request, and the tool names the adapter shortened (to restore)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm.llms.anthropic.experimental_pass_through.adapters.transformation import (
        LiteLLMAnthropicMessagesAdapter,
    )

    anthropic = request.model_dump(exclude_none=True, exclude={"moesaic", "metadata"})
    try:
        translated, tool_names = LiteLLMAnthropicMessagesAdapter().translate_anthropic_to_openai(anthropic)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # a block the adapter cannot read
        raise APIError(400, f"messages: {error}", param="messages") from None
    chat = {key: value for key, value in dict(translated).items() if key in CHAT_FIELDS}
    if request.metadata and isinstance(request.metadata.get("user_id"), str):
        chat["user"] = request.metadata["user_id"]
    if request.moesaic is not None:
        chat["moesaic"] = request.moesaic
    if request.stream:
        chat["stream_options"] = {"include_usage": True}  # message_delta carries the usage
    return chat, dict(tool_names or {})


def _message(completion: dict[str, Any], tool_names: dict[str, str]) -> dict[str, Any]:
    """A chat completion as an Anthropic ``message`` (LiteLLM's adapter), with the ``moesaic`` metadata kept."""
    from litellm import ModelResponse
    from litellm.llms.anthropic.experimental_pass_through.adapters.transformation import (
        LiteLLMAnthropicMessagesAdapter,
    )

    response = ModelResponse(**{key: value for key, value in completion.items() if key != "moesaic"})
    message = dict(LiteLLMAnthropicMessagesAdapter().translate_openai_response_to_anthropic(response, tool_names))
    message["content"] = [_plain(block) for block in message.get("content", [])]
    if "moesaic" in completion:
        message["moesaic"] = completion["moesaic"]
    return message


def _plain(block: Any) -> dict[str, Any]:
    """A content block without the adapter's empty ``provider_specific_fields``."""
    data = dict(block)
    if data.get("provider_specific_fields") is None:
        data.pop("provider_specific_fields", None)
    return data


async def _events(
    chunks: AsyncIterator[dict[str, Any]], model: str, tool_names: dict[str, str]
) -> AsyncIterator[bytes]:
    """Anthropic's stream events from chat chunks (LiteLLM's adapter); the ``moesaic`` metadata of the last chunk
    comes as one more event, ``moesaic`` (clients skip event types they do not know)."""
    import json

    from litellm.llms.anthropic.experimental_pass_through.adapters.streaming_iterator import AnthropicStreamWrapper
    from litellm.types.utils import ModelResponseStream

    metadata: dict[str, Any] = {}

    async def streamed() -> AsyncIterator[ModelResponseStream]:
        async for chunk in chunks:
            if "error" in chunk:  # the pipeline failed mid-stream: end with Anthropic's error event
                raise _StreamFailed(chunk["error"])
            if "moesaic" in chunk:
                metadata.update(chunk["moesaic"])
            yield ModelResponseStream(**{key: value for key, value in chunk.items() if key != "moesaic"})

    wrapper = AnthropicStreamWrapper(completion_stream=streamed(), model=model, tool_name_mapping=tool_names)
    try:
        async for event in wrapper.async_anthropic_sse_wrapper():
            yield event
    except _StreamFailed as failure:
        error = failure.error if isinstance(failure.error, dict) else {"message": str(failure.error)}
        body = {"type": "error", "error": {"type": "api_error", "message": str(error.get("message", error))}}
        yield f"event: error\ndata: {json.dumps(body)}\n\n".encode()
        return
    if metadata:
        yield f"event: moesaic\ndata: {json.dumps({'type': 'moesaic', 'moesaic': metadata})}\n\n".encode()


class _StreamFailed(Exception):
    def __init__(self, error: Any) -> None:
        super().__init__(str(error))
        self.error = error


def anthropic_error(error: APIError) -> JSONResponse:
    """An error in Anthropic's shape, with its status and headers (``Retry-After``)."""
    kind = ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    message = (
        error.message if error.param is None or error.param in error.message else f"{error.param}: {error.message}"
    )
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)
