"""What the OpenAPI document (``GET /openapi.json``) says about bodies we parse ourselves, and errors.

The chat and route endpoints read their JSON body by hand (so a malformed body is a 400 in
OpenAI's shape, a 400, not FastAPI's 422), which hides the request schema from FastAPI. ``json_body``
puts it back into the document, self-contained (pydantic's ``$defs`` inlined, since a
``$ref`` in an operation resolves against the whole document). ``ERROR_RESPONSES`` declares
every 4xx and 5xx in OpenAI's error shape, which is what the app answers; clients and
schema-driven testers (schemathesis, ``tests/test_fuzz_api.py``) check responses against it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, RootModel

from orchestrator.server.api.schemas import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "the request's mistake, in OpenAI's error shape"},
    "5XX": {"model": ErrorResponse, "description": "an upstream or service failure, in OpenAI's error shape"},
}


# the chat route answers JSON, or server-sent events when the request asks for ``stream``
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a chat.completion object, or with stream: true chat.completion.chunk events then [DONE]",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
# the Responses API: a response object, or its events
RESPONSES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a response object, or with stream: true its events (response.created ... response.completed)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class AnthropicErrorBody(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """An error in Anthropic's shape (``/v1/messages``)."""

    type: Literal["error"]
    error: AnthropicErrorBody


class MessagesError(RootModel[AnthropicError | ErrorResponse]):
    """``/v1/messages`` answers its own errors in Anthropic's shape; the service's front door (auth, body size, rate
    limits) answers before it, in OpenAI's."""


# the Messages API: a message, or its events; errors in Anthropic's shape
MESSAGES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a message object, or with stream: true its events (message_start ... message_stop)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    "4XX": {"model": MessagesError, "description": "the request's mistake, in Anthropic's error shape"},
    "5XX": {"model": MessagesError, "description": "an upstream or service failure, in Anthropic's error shape"},
}
# /healthz answers 503 with the same report as its 200 when no expert is healthy, not with an error object
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "no expert is healthy; the body is the same health report",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
# /readyz answers 503 with the reason, not with an error object
READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "not ready: the pool has not started, the service is shutting down, or no expert is usable",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body is ``model`` as JSON, parsed by the route itself."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, definitions)}},
        }
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """Replace ``{"$ref": "#/$defs/X"}`` by X's schema, recursively (our request models are not recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
            rest = {key: _inline(value, definitions) for key, value in node.items() if key != "$ref"}
            return {**target, **rest}
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node
