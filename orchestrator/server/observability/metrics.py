"""``ServiceMetrics``: what the service did, counted with ``prometheus_client`` in the app's own registry.

One object per app (``app.state.metrics``, made in ``create_app``), each with its own ``CollectorRegistry``, never
the process-wide default one, so two apps in one process (tests, several pools) keep separate counts.

Counted here: HTTP requests (route, model, status) and their latency; the pipeline's steps
(``PipelineResult.timings_ms``: understand, recruit, each expert, aggregate, total); every model call's tokens and
cost by requested model, expert and role, and (``today``, a ``DailyUsage``) per expert for the current UTC day. The
pool's own counters and the front door's (cache, limits, Redis) are read at scrape time by ``pool_series`` and
``service_series``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orchestrator.server.observability.context import current_scope
from orchestrator.server.observability.daily_usage import DailyUsage

if TYPE_CHECKING:
    from orchestrator.pipeline.state import CallRecord, PipelineResult

# seconds; fine at the low end, where orchestration overhead lives, up to minutes of generation
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EXPERT_STEP_PREFIX = "expert:"


@dataclass(frozen=True)
class MetricSpec:
    """One of the app's metrics: what ``/metrics`` and any mirror declare for it."""

    name: str  # as exposed; counters end in _total
    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...]


SPECS = (
    MetricSpec(
        "moesaic_http_requests_total", "counter", "HTTP requests answered, by route, model and status",
        ("route", "model", "status"),
    ),
    MetricSpec(
        "moesaic_http_request_duration_seconds", "histogram", "HTTP request latency, first byte in to last byte out",
        ("route",),
    ),
    MetricSpec(
        "moesaic_pipeline_step_duration_seconds", "histogram",
        "pipeline step latency: understand, recruit, expert (per expert), aggregate, total", ("step", "expert"),
    ),
    MetricSpec(
        "moesaic_pipeline_results_total", "counter", "pipeline answers, by model, strategy and whether partial",
        ("model", "strategy", "partial"),
    ),
    MetricSpec(
        "moesaic_model_calls_total", "counter", "model calls, by requested model, expert, role and outcome",
        ("model", "expert", "role", "outcome"),
    ),
    MetricSpec(
        "moesaic_tokens_total", "counter", "tokens of model calls, by requested model, expert, role and kind",
        ("model", "expert", "role", "kind"),
    ),
    MetricSpec(
        "moesaic_cost_total", "counter", "cost of model calls at the pool's prices (LiteLLM's map: US dollars)",
        ("model", "expert", "role"),
    ),
)  # fmt: skip


class MetricsMirror(Protocol):
    """Somewhere else the same counts go as they happen (``ray_metrics.RayMetrics`` under Ray Serve)."""

    def add(self, spec: MetricSpec, labels: tuple[str, ...], amount: float) -> None: ...

    def observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None: ...


class ServiceMetrics:
    """The app's own counters and histograms, in ``registry`` (a collector ``/metrics`` renders), and in ``mirror``
    too when one is given."""

    def __init__(
        self,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        mirror: MetricsMirror | None = None,
        today: DailyUsage | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.today = today or DailyUsage()  # per expert, since 00:00 UTC (the console's pool view)
        self.in_progress = 0  # the middleware counts requests in and out; read at scrape time
        self.mirror = mirror
        in_progress = Gauge(
            "moesaic_http_requests_in_progress", "HTTP requests being handled now", registry=self.registry
        )
        in_progress.set_function(lambda: self.in_progress)
        self._series: dict[str, Counter | Histogram] = {}
        for spec in SPECS:
            if spec.kind == "counter":
                self._series[spec.name] = Counter(spec.name, spec.help, spec.labels, registry=self.registry)
            else:
                series = Histogram(spec.name, spec.help, spec.labels, buckets=buckets, registry=self.registry)
                self._series[spec.name] = series
        self._specs = {spec.name: spec for spec in SPECS}

    # -- recording ---------------------------------------------------------------------------
    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        self._add("moesaic_http_requests_total", (route, model, str(status)))
        self._observe("moesaic_http_request_duration_seconds", (route,), seconds)

    def observe_pipeline(self, model: str, result: PipelineResult) -> None:
        """A finished pipeline: its step timings, its outcome and every call it made."""
        for step, ms in result.timings_ms.items():
            if step.startswith(EXPERT_STEP_PREFIX):
                labels = ("expert", step.removeprefix(EXPERT_STEP_PREFIX))
            else:
                labels = (step, "")
            self._observe("moesaic_pipeline_step_duration_seconds", labels, ms / 1000.0)
        self._add("moesaic_pipeline_results_total", (model, result.strategy, "true" if result.partial else "false"))
        self.observe_calls(model, result.calls)

    def observe_calls(self, model: str, calls: Iterable[CallRecord]) -> None:
        calls = list(calls)
        self.today.add(calls)
        for call in calls:
            key = (model, call.expert, call.role)
            self._add("moesaic_model_calls_total", (*key, "error" if call.error else "ok"))
            if call.prompt_tokens:
                self._add("moesaic_tokens_total", (*key, "prompt"), call.prompt_tokens)
            if call.completion_tokens:
                self._add("moesaic_tokens_total", (*key, "completion"), call.completion_tokens)
            if call.cost:
                self._add("moesaic_cost_total", key, call.cost)

    def _add(self, name: str, labels: tuple[str, ...], amount: float = 1.0) -> None:
        counter = self._series[name]
        assert isinstance(counter, Counter)
        counter.labels(*labels).inc(amount)
        if self.mirror is not None:
            self.mirror.add(self._specs[name], labels, amount)

    def _observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        histogram = self._series[name]
        assert isinstance(histogram, Histogram)
        histogram.labels(*labels).observe(value)
        if self.mirror is not None:
            self.mirror.observe(self._specs[name], labels, value)


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
