"""Probes: ``/livez`` (the process answers), ``/readyz`` (it can answer a question now), ``/healthz`` (the report).

Kubernetes and load balancers want two different questions answered. Liveness must not depend on the experts: a
pod whose upstream API is down is alive, and restarting it would not help (and would throw away loaded models).
Readiness does: the pool has started, the service is not draining for shutdown, and at least one routable expert
is usable (its actor is up and its circuit breaker is not open). ``/healthz`` is the per-expert report (503 when
no expert at all is healthy), for people and dashboards. None of them needs an API key or waits in the request
line, so they carry nothing a caller without a key should see: ``/healthz`` shows each expert's state and counters
(``PUBLIC_FIELDS``) but no endpoint, model path, node address or upstream error text, which ``GET /v1/pool`` (behind
the keys) gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from experts.runtime import ExpertClient
from orchestrator.server.api.openapi import HEALTH_RESPONSES, READY_RESPONSES

router = APIRouter()

# what /healthz shows of each expert's report: state and counters, never an address, a path or an error's text
PUBLIC_FIELDS = (
    "name",
    "state",
    "backend",
    "load_seconds",
    "queue_depth",
    "batches",
    "requests",
    "largest_batch",
    "failed_batches",
    "dropped",
    "probe",
    "breaker",
    "restarts",
    "retries",
    "dispatch_queue_depth",
    "residency",
)


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
    body = {"status": "ready", "pool": pool.spec.name, "usable": usable}
    missing = [name for name in pool.expert_names if not pool.is_healthy(name)]
    if missing:  # ready, with fewer experts to route to: which (GET /healthz says what state each is in)
        body["missing"] = missing
    return JSONResponse(body)


@router.get("/healthz", responses=HEALTH_RESPONSES)
async def healthz(request: Request) -> JSONResponse:
    """Every expert's state; ``ok``, ``degraded`` (some routable expert healthy) or ``unavailable`` (503)."""
    pool: ExpertClient = request.app.state.orchestrator.pool
    experts = await pool.health()
    routable = [expert.name for expert in pool.spec.routable_experts]
    healthy = [name for name in routable if pool.is_healthy(name)]
    status = "ok" if len(pool.healthy_names()) == len(pool.expert_names) else "degraded" if healthy else "unavailable"
    shown = {name: public_report(report) for name, report in experts.items()}
    body: dict[str, Any] = {"status": status, "pool": pool.spec.name, "experts": shown}
    return JSONResponse(body, status_code=503 if status == "unavailable" else 200)


def public_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """An expert's health report without what only a key holder may read (``PUBLIC_FIELDS``)."""
    shown = {key: report[key] for key in PUBLIC_FIELDS if key in report}
    if report.get("error"):
        shown["error"] = "hidden here: GET /v1/pool (with an API key) says why"
    return shown


def _not_ready(pool: str | None, reason: str) -> JSONResponse:
    return JSONResponse({"status": "not_ready", "pool": pool, "reason": reason}, status_code=503)
