"""``ServiceMetrics``: what the service did, counted in process and written as Prometheus text.

One object per app (``app.state.metrics``, made in ``create_app``), never a global registry,
so two apps in one process (tests, several pools) keep separate counts. Everything is
updated from the event loop's thread, so plain dicts suffice: no locks on the request path.

Counted here: HTTP requests (route, model, status) and their latency; the pipeline's steps
(``PipelineResult.timings_ms``: understand, recruit, each expert, aggregate, total); every
model call's tokens and cost by requested model, expert and role. The pool's own counters and
the front door's (cache, limits, Redis) are read at scrape time by ``pool_series`` and
``service_series``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from orchestrator.server.observability.context import current_scope
from orchestrator.server.observability.exposition import Exposition

if TYPE_CHECKING:
    from orchestrator.pipeline.state import CallRecord, PipelineResult

# seconds; fine at the low end, where orchestration overhead lives, up to minutes of generation
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EXPERT_STEP_PREFIX = "expert:"


class Counter:
    """A labelled counter: label values (in ``labels`` order) -> running total."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def write(self, out: Exposition) -> None:
        out.family(self.name, "counter", self.help)
        for key, value in sorted(self.values.items()):
            out.sample(self.name, _label_map(self.labels, key), value)


class Histogram:
    """A labelled histogram with fixed bucket bounds: per series, counts per bucket and the sum."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name, self.help, self.labels, self.bounds = name, help_text, tuple(labels), tuple(bounds)
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect_left(self.bounds, value)] += 1  # first bucket whose bound is >= value ("le")
        series[1][0] += value

    def count(self, key: tuple[str, ...]) -> int:
        series = self.series.get(key)
        return sum(series[0]) if series else 0

    def write(self, out: Exposition) -> None:
        out.family(self.name, "histogram", self.help)
        for key, (counts, total) in sorted(self.series.items()):
            out.histogram(self.name, _label_map(self.labels, key), self.bounds, counts, total[0])


class ServiceMetrics:
    """The app's own counters and histograms; ``write`` appends them to an exposition."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.in_progress = 0
        self.requests = Counter(
            "moesaic_http_requests_total",
            "HTTP requests answered, by route, model and status",
            ("route", "model", "status"),
        )
        self.request_seconds = Histogram(
            "moesaic_http_request_duration_seconds",
            "HTTP request latency, first byte in to last byte out",
            ("route",),
            buckets,
        )
        self.step_seconds = Histogram(
            "moesaic_pipeline_step_duration_seconds",
            "pipeline step latency: understand, recruit, expert (per expert), aggregate, total",
            ("step", "expert"),
            buckets,
        )
        self.pipelines = Counter(
            "moesaic_pipeline_results_total",
            "pipeline answers, by model, strategy and whether partial",
            ("model", "strategy", "partial"),
        )
        self.calls = Counter(
            "moesaic_model_calls_total",
            "model calls, by requested model, expert, role and outcome",
            ("model", "expert", "role", "outcome"),
        )
        self.tokens = Counter(
            "moesaic_tokens_total",
            "tokens of model calls, by requested model, expert, role and kind",
            ("model", "expert", "role", "kind"),
        )
        self.cost = Counter(
            "moesaic_cost_total",
            "cost of model calls at the pool's prices (LiteLLM's map: US dollars)",
            ("model", "expert", "role"),
        )

    # -- recording ---------------------------------------------------------------------------
    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests.inc((route, model, str(status)))
        self.request_seconds.observe((route,), seconds)

    def observe_pipeline(self, model: str, result: PipelineResult) -> None:
        """A finished pipeline: its step timings, its outcome and every call it made."""
        for step, ms in result.timings_ms.items():
            if step.startswith(EXPERT_STEP_PREFIX):
                self.step_seconds.observe(("expert", step.removeprefix(EXPERT_STEP_PREFIX)), ms / 1000.0)
            else:
                self.step_seconds.observe((step, ""), ms / 1000.0)
        partial = "true" if getattr(result, "partial", False) else "false"
        self.pipelines.inc((model, result.strategy, partial))
        self.observe_calls(model, result.calls)

    def observe_calls(self, model: str, calls: Iterable[CallRecord]) -> None:
        for call in calls:
            key = (model, call.expert, call.role)
            self.calls.inc((*key, "error" if call.error else "ok"))
            if call.prompt_tokens:
                self.tokens.inc((*key, "prompt"), call.prompt_tokens)
            if call.completion_tokens:
                self.tokens.inc((*key, "completion"), call.completion_tokens)
            if call.cost:
                self.cost.inc(key, call.cost)

    # -- exposition --------------------------------------------------------------------------
    def write(self, out: Exposition) -> None:
        self.requests.write(out)
        out.family("moesaic_http_requests_in_progress", "gauge", "HTTP requests being handled now")
        out.sample("moesaic_http_requests_in_progress", {}, self.in_progress)
        for series in (self.request_seconds, self.step_seconds, self.pipelines, self.calls, self.tokens, self.cost):
            series.write(out)


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


def _label_map(names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    """Labels for one sample; empty values are left out (Prometheus reads them as absent anyway)."""
    return {name: value for name, value in zip(names, values) if value != ""}
