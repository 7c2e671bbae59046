"""The app's counts through Ray's metrics API, for Ray Serve: summed correctly however many replicas there are.

Under Ray Serve every replica is a process with its own ``ServiceMetrics``, and ``/metrics`` through Serve's proxy
reaches one replica at random per scrape, so its counters would jump and reset between scrapes. Each replica's
``ServiceMetrics`` therefore also records into ``ray.util.metrics`` (this mirror): Ray's per-node metrics agent
exports them at the node's metrics export port (``ray start --metrics-export-port``) as ``ray_moesaic_*`` with a
``WorkerId`` per replica, and ``sum without (WorkerId, ...)`` in Prometheus adds the replicas up. Names and labels
are those of ``/metrics`` (``ServiceMetrics.SPECS``), under Ray's ``ray_`` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.server.observability.metrics import LATENCY_BUCKETS, MetricSpec


class RayMetrics:
    """A ``MetricsMirror`` over ``ray.util.metrics``; its metrics are made on first use, in the recording process."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.buckets = list(buckets)
        self._metrics: dict[str, Any] = {}

    def add(self, spec: MetricSpec, labels: tuple[str, ...], amount: float) -> None:
        self._metric(spec).inc(amount, tags=_tags(spec, labels))

    def observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        self._metric(spec).observe(value, tags=_tags(spec, labels))

    def _metric(self, spec: MetricSpec) -> Any:
        metric = self._metrics.get(spec.name)
        if metric is None:
            from ray.util import metrics

            if spec.kind == "counter":  # Ray appends _total to a counter's name itself
                metric = metrics.Counter(spec.name.removesuffix("_total"), spec.help, tag_keys=spec.labels)
            else:
                metric = metrics.Histogram(spec.name, spec.help, boundaries=self.buckets, tag_keys=spec.labels)
            self._metrics[spec.name] = metric
        return metric


def _tags(spec: MetricSpec, labels: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(spec.labels, labels))
