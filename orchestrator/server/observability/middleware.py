"""Every HTTP request: a request id, an access log line and the request metrics.

A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which adds a task and a
memory stream to every request and buffers streaming responses): it reads the incoming
``x-request-id`` (kept when it is a sane token, else ``req-<uuid4 hex>``), puts it into
``request.state.request_id`` and the context (``context.RequestScope``), adds it to the
response headers, and when the response is done counts the request by route template, model
and status and logs one access line. An exception nothing else handled is answered here as
a 500 in OpenAI's shape, so even that response carries its request id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.server.errors import APIError
from orchestrator.server.observability import context
from orchestrator.server.observability.logs import ACCESS_LOGGER
from orchestrator.server.observability.metrics import ServiceMetrics

access_log = logging.getLogger(ACCESS_LOGGER)
log = logging.getLogger(__name__)
_HEADER = context.REQUEST_ID_HEADER.encode("latin-1")
CLIENT_CLOSED = 499  # no response was sent: the client went away first (nginx's convention)


class ObservabilityMiddleware:
    """Request id in and out, access log, request count and latency."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = context.request_id_from(_header(scope, _HEADER))
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = context.enter(context.RequestScope(request_id, self.metrics))
        status = CLIENT_CLOSED
        id_header = (_HEADER, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            await send(message)

        self.metrics.in_progress += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if status != CLIENT_CLOSED:  # the status line is out already: nothing left to answer
                raise
            reply = APIError(500, f"internal error: {type(error).__name__}: {error}", "internal_error")
            await reply.response()(scope, receive, send_with_id)
        finally:
            self.metrics.in_progress -= 1
            elapsed = time.perf_counter() - started
            route = _route(scope)
            self.metrics.observe_request(route, model_label(scope, state), status, elapsed)
            _access(scope, state, status, elapsed, request_id)
            context.leave(token)


def model_label(scope: Scope, state: dict[str, Any]) -> str:
    """The model the request named, when it is one this app serves (bounded label values); else "other"."""
    model = state.get("model")
    if not isinstance(model, str):
        return ""
    orchestrator = getattr(getattr(scope.get("app"), "state", None), "orchestrator", None)
    if orchestrator is None:
        return "other"
    if model == "moesaic":
        return model
    if model.startswith("moesaic/") and model.removeprefix("moesaic/") in orchestrator.router.policies:
        return model
    if model.startswith("expert/") and model.removeprefix("expert/") in orchestrator.pool.expert_names:
        return model
    return "other"


def _route(scope: Scope) -> str:
    """The matched route's template (``/v1/models/{model_id:path}``), never the raw path: bounded labels."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


def _access(scope: Scope, state: dict[str, Any], status: int, elapsed: float, request_id: str) -> None:
    principal = state.get("principal")
    duration_ms = round(elapsed * 1000, 3)
    access_log.info(
        "%s %s %s %.1f ms",
        scope.get("method"),
        scope.get("path"),
        status,
        duration_ms,
        extra={
            "request_id": request_id,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status,
            "duration_ms": duration_ms,
            "key_name": getattr(principal, "key_name", None),
            "model": state.get("model"),
        },
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
