"""``GET /metrics``: the service in Prometheus' text format.

Three sources, written in this order: the pool (actors, breakers, restarts, the dispatcher;
``observability.pool_series``), the front door (cache, rate limits, concurrency limits,
Redis; ``observability.service_series``) and the app's own counts (requests, latency, the
pipeline's steps, tokens and cost; ``observability.metrics.ServiceMetrics``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from orchestrator.server.observability.exposition import CONTENT_TYPE, Exposition
from orchestrator.server.observability.metrics import ServiceMetrics
from orchestrator.server.observability.pool_series import write_pool
from orchestrator.server.observability.service_series import write_service

router = APIRouter()


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    state = request.app.state
    out = Exposition()
    await write_pool(out, state.orchestrator.pool)
    write_service(out, getattr(state, "service", None))
    service_metrics: ServiceMetrics | None = getattr(state, "metrics", None)
    if service_metrics is not None:
        service_metrics.write(out)
    return PlainTextResponse(out.text(), media_type=CONTENT_TYPE)


async def render(pool: Any) -> str:
    """The pool's series alone, for an ``ExpertPool`` or a ``Dispatcher`` (scripts and tests without an app)."""
    out = Exposition()
    await write_pool(out, pool)
    return out.text()
