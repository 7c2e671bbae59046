"""The current request, as seen from anywhere inside its handling: its id and where to count it.

The HTTP middleware opens a ``RequestScope`` per request and sets it in a context variable;
asyncio tasks (LangGraph nodes, the streaming response) copy the context when they start, so
the scope follows the request into every step without being passed through each signature.
Code that has the ``Request`` reads ``request.state.request_id`` instead.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.server.observability.metrics import ServiceMetrics

REQUEST_ID_HEADER = "x-request-id"
# a client's id is kept when it is a plain token: bounded, no spaces or quotes, safe in logs and label-free places
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


@dataclass(frozen=True)
class RequestScope:
    """What one request's handling shares: its id and the app's metrics (None outside an app)."""

    request_id: str
    metrics: ServiceMetrics | None = None


_SCOPE: ContextVar[RequestScope | None] = ContextVar("moesaic_request_scope", default=None)


def request_id_from(header: str | None) -> str:
    """The incoming ``x-request-id`` when it is a sane token, else a new ``req-<uuid4 hex>``."""
    if header and _SANE_ID.fullmatch(header):
        return header
    return new_request_id()


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def current_scope() -> RequestScope | None:
    return _SCOPE.get()


def current_request_id() -> str | None:
    """The id of the request being handled in this context, or None outside a request."""
    scope = _SCOPE.get()
    return scope.request_id if scope is not None else None


def enter(scope: RequestScope) -> object:
    """Make ``scope`` current; returns the token ``leave`` needs."""
    return _SCOPE.set(scope)


def leave(token: object) -> None:
    _SCOPE.reset(token)  # type: ignore[arg-type]
