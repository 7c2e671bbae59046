"""``GET /v1/pool``: every expert's state as one JSON document, for dashboards (and the console's pool view).

What ``/healthz`` and ``/metrics`` say, per expert, in one typed shape: backend and model, actor state and
residency, circuit breaker, queue depths, restarts, and the tokens and cost of its calls since the server started
(from the app's own counters) and since 00:00 UTC today (``DailyUsage``). Behind the API keys, like the rest of ``/v1``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from experts import HealthReport
from experts.runtime import ExpertClient
from orchestrator.server.observability.metrics import ServiceMetrics

router = APIRouter()


class ExpertUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = Field(0.0, description="at the pool's prices (LiteLLM's map: US dollars)")
    calls: int = Field(0, description="calls it answered")
    failed_calls: int = 0


class ReplicaView(BaseModel):
    """One replica of an expert's Ray Serve deployment (``serve.layout: experts``)."""

    node: str | None = None
    state: str = "unreachable"
    requests: int = Field(0, description="calls it answered since it started")
    batches: int = 0
    largest_batch: int = 0
    queue_depth: int = 0


class DeploymentView(BaseModel):
    """One endpoint of a hosted expert that lists several (``deployments``, balanced by LiteLLM's Router)."""

    name: str
    model: str
    api_base: str | None = None
    role: str = Field(description="primary, fallback or context")
    cooling_down: bool | None = Field(None, description="left out of the Router's picks for now; null: unknown")


class ExpertView(BaseModel):
    name: str
    backend: str
    model: str
    routable: bool
    state: str = Field(description="starting, ready, failed, restarting or unreachable")
    healthy: bool = Field(description="routable now: actor ready and circuit not open")
    residency: str | None = Field(None, description="disk, parked or resident (pools with a residency section)")
    breaker: str = Field(description="closed, open or half_open")
    queue_depth: int = Field(0, description="requests waiting in the expert's actor")
    dispatch_queue_depth: int | None = Field(None, description="routed requests not yet sent (residency pools)")
    restarts: int = 0
    error: str | None = None
    replicas: list[ReplicaView] | None = Field(
        None, description="its Serve deployment's replicas, when Ray Serve runs each expert on its own"
    )
    deployments: list[DeploymentView] | None = Field(
        None, description="a hosted expert's endpoints, when it lists several"
    )
    usage: ExpertUsage = Field(description="its calls since the server started (every role: expert, aggregator...)")
    today: ExpertUsage = Field(description="its calls since 00:00 UTC today (this server process)")


class PoolView(BaseModel):
    pool: str
    day: str = Field(description="the UTC date `today` counts (ISO)")
    experts: list[ExpertView]


@router.get("/v1/pool")
async def pool_view(request: Request) -> PoolView:
    pool: ExpertClient = request.app.state.orchestrator.pool
    reports = await pool.health()
    metrics: ServiceMetrics = request.app.state.metrics
    usage = usage_by_expert(metrics)
    day, today = metrics.today.snapshot()
    breakers, restarts = pool.breaker_states(), pool.restarts
    experts = []
    for expert in pool.spec.experts:
        report: HealthReport = reports.get(expert.name, {})  # type: ignore[assignment]
        depth = report.get("dispatch_queue_depth")
        experts.append(
            ExpertView(
                name=expert.name,
                backend=expert.backend,
                model=expert.model,
                routable=expert.routable,
                state=str(report.get("state", "unreachable")),
                healthy=pool.is_healthy(expert.name),
                residency=report.get("residency"),  # type: ignore[arg-type]
                breaker=breakers.get(expert.name, "closed"),
                queue_depth=int(report.get("queue_depth", 0) or 0),
                dispatch_queue_depth=int(depth) if depth is not None else None,
                restarts=restarts.get(expert.name, 0),
                error=report.get("error"),
                replicas=[ReplicaView.model_validate(r) for r in report["replicas"]] if "replicas" in report else None,
                deployments=[DeploymentView.model_validate(d) for d in report.get("deployments", [])] or None,
                usage=usage.get(expert.name, ExpertUsage()),
                today=ExpertUsage(**asdict(today[expert.name])) if expert.name in today else ExpertUsage(),
            )
        )
    return PoolView(pool=pool.spec.name, day=day, experts=experts)


def usage_by_expert(metrics: ServiceMetrics) -> dict[str, ExpertUsage]:
    """Tokens, cost and calls per expert, summed over models and roles from the app's counters."""
    totals: dict[str, dict[str, Any]] = defaultdict(dict)
    for family in metrics.registry.collect():
        for sample in family.samples:
            expert = sample.labels.get("expert")
            if not expert or not sample.name.endswith("_total"):
                continue
            field = _field(sample.name, sample.labels)
            if field is not None:
                totals[expert][field] = totals[expert].get(field, 0) + sample.value
    return {
        expert: ExpertUsage(
            prompt_tokens=int(values.get("prompt_tokens", 0)),
            completion_tokens=int(values.get("completion_tokens", 0)),
            cost=float(values.get("cost", 0.0)),
            calls=int(values.get("calls", 0)),
            failed_calls=int(values.get("failed_calls", 0)),
        )
        for expert, values in totals.items()
    }


def _field(name: str, labels: dict[str, str]) -> str | None:
    if name == "moesaic_tokens_total":
        return f"{labels.get('kind')}_tokens" if labels.get("kind") in ("prompt", "completion") else None
    if name == "moesaic_cost_total":
        return "cost"
    if name == "moesaic_model_calls_total":
        return "failed_calls" if labels.get("outcome") == "error" else "calls"
    return None
