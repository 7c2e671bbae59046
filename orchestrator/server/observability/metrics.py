"""``ServiceMetrics``: what the service did, counted with ``prometheus_client`` in the app's own registry.

One object per app (``app.state.metrics``, made in ``create_app``), each with its own ``CollectorRegistry``, never
the process-wide default one, so two apps in one process (tests, several pools) keep separate counts.

Counted here: HTTP requests (route, model, status) and their latency; the pipeline's steps
(``PipelineResult.timings_ms``: understand, recruit, each expert, aggregate, total); every
model call's tokens and cost by requested model, expert and role. The pool's own counters and
the front door's (cache, limits, Redis) are read at scrape time by ``pool_series`` and
``service_series``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orchestrator.server.observability.context import current_scope

if TYPE_CHECKING:
    from orchestrator.pipeline.state import CallRecord, PipelineResult

# seconds; fine at the low end, where orchestration overhead lives, up to minutes of generation
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EXPERT_STEP_PREFIX = "expert:"


class ServiceMetrics:
    """The app's own counters and histograms, in ``registry`` (a collector ``/metrics`` renders)."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.registry = CollectorRegistry()
        self.in_progress = 0  # the middleware counts requests in and out; read at scrape time
        registry = self.registry
        self.requests = Counter(
            "moesaic_http_requests_total",
            "HTTP requests answered, by route, model and status",
            ("route", "model", "status"),
            registry=registry,
        )
        in_progress = Gauge("moesaic_http_requests_in_progress", "HTTP requests being handled now", registry=registry)
        in_progress.set_function(lambda: self.in_progress)
        self.request_seconds = Histogram(
            "moesaic_http_request_duration_seconds",
            "HTTP request latency, first byte in to last byte out",
            ("route",),
            buckets=buckets,
            registry=registry,
        )
        self.step_seconds = Histogram(
            "moesaic_pipeline_step_duration_seconds",
            "pipeline step latency: understand, recruit, expert (per expert), aggregate, total",
            ("step", "expert"),
            buckets=buckets,
            registry=registry,
        )
        self.pipelines = Counter(
            "moesaic_pipeline_results_total",
            "pipeline answers, by model, strategy and whether partial",
            ("model", "strategy", "partial"),
            registry=registry,
        )
        self.calls = Counter(
            "moesaic_model_calls_total",
            "model calls, by requested model, expert, role and outcome",
            ("model", "expert", "role", "outcome"),
            registry=registry,
        )
        self.tokens = Counter(
            "moesaic_tokens_total",
            "tokens of model calls, by requested model, expert, role and kind",
            ("model", "expert", "role", "kind"),
            registry=registry,
        )
        self.cost = Counter(
            "moesaic_cost_total",
            "cost of model calls at the pool's prices (LiteLLM's map: US dollars)",
            ("model", "expert", "role"),
            registry=registry,
        )

    # -- recording ---------------------------------------------------------------------------
    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def observe_pipeline(self, model: str, result: PipelineResult) -> None:
        """A finished pipeline: its step timings, its outcome and every call it made."""
        for step, ms in result.timings_ms.items():
            if step.startswith(EXPERT_STEP_PREFIX):
                self.step_seconds.labels("expert", step.removeprefix(EXPERT_STEP_PREFIX)).observe(ms / 1000.0)
            else:
                self.step_seconds.labels(step, "").observe(ms / 1000.0)
        self.pipelines.labels(model, result.strategy, "true" if result.partial else "false").inc()
        self.observe_calls(model, result.calls)

    def observe_calls(self, model: str, calls: Iterable[CallRecord]) -> None:
        for call in calls:
            key = (model, call.expert, call.role)
            self.calls.labels(*key, "error" if call.error else "ok").inc()
            if call.prompt_tokens:
                self.tokens.labels(*key, "prompt").inc(call.prompt_tokens)
            if call.completion_tokens:
                self.tokens.labels(*key, "completion").inc(call.completion_tokens)
            if call.cost:
                self.cost.labels(*key).inc(call.cost)


def record_pipeline(model: str, result: PipelineResult) -> None:
    """Count a finished pipeline in the current request's metrics (no-op outside an app's request)."""
    scope = current_scope()
    if scope is not None and scope.metrics is not None:
        scope.metrics.observe_pipeline(model, result)


def record_calls(model: str, calls: Iterable[CallRecord]) -> None:
    """Count model calls (a direct ``expert/<name>`` request's) in the current request's metrics."""
    scope = current_scope()
    if scope is not None and scope.metrics is not None:
        scope.metrics.observe_calls(model, calls)
