"""Probes: ``/livez`` (the process answers), ``/readyz`` (it can answer a question now), ``/healthz`` (the report).

Kubernetes and load balancers want two different questions answered. Liveness must not depend on the experts: a
pod whose upstream API is down is alive, and restarting it would not help (and would throw away loaded models).
Readiness does: the pool has started, the service is not draining for shutdown, and at least one routable expert
is usable (its actor is up and its circuit breaker is not open). ``/healthz`` stays the detailed per-expert report
(503 when no expert at all is healthy), for people and dashboards. None of them needs an API key or waits in the
request line.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from experts.runtime.client import ExpertClient
from orchestrator.server.api.openapi import HEALTH_RESPONSES, READY_RESPONSES

router = APIRouter()


@router.get("/livez")
async def livez() -> dict[str, str]:
    """200 while the process serves HTTP; never looks at the experts."""
    return {"status": "alive"}


@router.get("/readyz", responses=READY_RESPONSES)
async def readyz(request: Request) -> JSONResponse:
    """200 when a question can be answered now; 503 with the reason otherwise."""
    orchestrator = request.app.state.orchestrator
    if orchestrator is None:
        return _not_ready(None, "the pool has not started")
    pool: ExpertClient = orchestrator.pool
    if request.app.state.draining:
        return _not_ready(pool.spec.name, "shutting down: waiting for in-flight requests")
    routable = [expert.name for expert in pool.spec.routable_experts]
    usable = [name for name in routable if pool.is_healthy(name)]
    if not usable:
        return _not_ready(pool.spec.name, f"no routable expert is usable ({', '.join(routable)}); see GET /healthz")
    return JSONResponse({"status": "ready", "pool": pool.spec.name, "usable": usable})


@router.get("/healthz", responses=HEALTH_RESPONSES)
async def healthz(request: Request) -> JSONResponse:
    """Every expert's state; ``ok``, ``degraded`` (some routable expert healthy) or ``unavailable`` (503)."""
    pool: ExpertClient = request.app.state.orchestrator.pool
    experts = await pool.health()
    routable = [expert.name for expert in pool.spec.routable_experts]
    healthy = [name for name in routable if pool.is_healthy(name)]
    status = "ok" if len(pool.healthy_names()) == len(pool.expert_names) else "degraded" if healthy else "unavailable"
    body: dict[str, Any] = {"status": status, "pool": pool.spec.name, "experts": experts}
    return JSONResponse(body, status_code=503 if status == "unavailable" else 200)


def _not_ready(pool: str | None, reason: str) -> JSONResponse:
    return JSONResponse({"status": "not_ready", "pool": pool, "reason": reason}, status_code=503)
