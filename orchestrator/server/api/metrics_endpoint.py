"""``GET /metrics``: the service in Prometheus' text format, or OpenMetrics when the scraper asks for it.

Three sources, rendered by ``prometheus_client`` in this order: the pool (actors, breakers, restarts, the
dispatcher; ``observability.pool_series``) and the front door (cache, rate limits, concurrency limits, Redis;
``observability.service_series``), both read now, and the app's own counts (requests, latency, the pipeline's
steps, tokens and cost; the registry of ``observability.metrics.ServiceMetrics``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from orchestrator.server.observability.exposition import Collector, Snapshot, encode
from orchestrator.server.observability.metrics import ServiceMetrics
from orchestrator.server.observability.pool_series import write_pool
from orchestrator.server.observability.service_series import write_service

router = APIRouter()


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    state = request.app.state
    snapshot = Snapshot()
    await write_pool(snapshot, state.orchestrator.pool)
    write_service(snapshot, getattr(state, "service", None))
    collectors: list[Collector] = [snapshot]
    service_metrics: ServiceMetrics | None = getattr(state, "metrics", None)
    if service_metrics is not None:
        collectors.append(service_metrics.registry)
    body, content_type = encode(collectors, request.headers.get("accept"))
    return Response(body, media_type=content_type)


async def render(pool: Any) -> str:
    """The pool's series alone, for an ``ExpertPool`` or a ``Dispatcher`` (scripts and tests without an app)."""
    snapshot = Snapshot()
    await write_pool(snapshot, pool)
    return snapshot.text()
