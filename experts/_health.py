"""What an expert's health report holds: its state, and the facts its actor and the pool add.

The actor reports (``ExpertActor.health``), the driver adds the breaker, restarts and retries
(``ExpertPool.health``), and ``/healthz``, the metrics and the CLI read it. It stays a plain mapping on the wire
(JSON as is, across the Ray boundary), typed here so readers know its keys and the states an expert can be in.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypedDict


class ExpertState(StrEnum):
    """Where an expert's actor is: only ``READY`` experts are routed to."""

    STARTING = "starting"  # the actor is loading its model
    READY = "ready"
    FAILED = "failed"  # the model did not load (``error`` says why)
    RESTARTING = "restarting"  # the actor died; a new one is starting
    UNREACHABLE = "unreachable"  # the actor answered a probe with an error


class HealthReport(TypedDict, total=False):
    """One expert's health; the backend's own facts (``Backend.describe``) come as further keys."""

    name: str
    state: str  # an ``ExpertState`` value
    error: str | None
    load_seconds: float | None
    queue_depth: int
    batches: int
    requests: int
    largest_batch: int
    failed_batches: int
    dropped: int  # requests cancelled while queued, never generated
    memory_gb: float | None
    node: str | None
    channel: str | None
    channel_in_flight: int
    probe: str  # "slow" when the last probe timed out and the report is the last known one
    breaker: str  # the pool's circuit breaker: "closed", "open" or "half_open"
    restarts: int
    retries: int
    dispatch_queue_depth: int
    residency: str  # disk, parked or resident (pools with a residency section)
    context_window: int | None  # prompt plus answer in tokens, when the backend knows it (model cards)
    replicas: list[dict[str, Any]]  # a Serve deployment's replicas: node, state, requests, batches (layout experts)
    deployments: list[dict[str, Any]]  # a hosted expert's endpoints behind LiteLLM's Router: name, role, cooling_down


def is_ready(report: Mapping[str, Any]) -> bool:
    """Whether the report says the expert can answer now."""
    return report.get("state") == ExpertState.READY
