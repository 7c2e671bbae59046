"""Series read at scrape time, as ``prometheus_client`` metric families, and the encodings ``/metrics`` answers in.

The pool's and the front door's numbers live in the actors and the stores; ``pool_series`` and ``service_series``
read them when Prometheus scrapes and declare them here, family by family (``family`` then its samples).
``Snapshot`` is a ``prometheus_client`` collector of those families; ``encode`` renders collectors with
``prometheus_client``: Prometheus' text format, or OpenMetrics when the scraper asks for it (``Accept``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class Snapshot:
    """Metric families declared in order, each followed by its samples; a ``prometheus_client`` collector."""

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self._owner: dict[str, Metric] = {}

    def family(self, name: str, kind: str, text: str) -> None:
        """Declare a family (``counter``, ``gauge``, ``histogram``, ``summary``); declare before sampling.

        A counter is named with its ``_total`` suffix, as its samples are.
        """
        base = name.removesuffix("_total") if kind == "counter" else name
        family = Metric(base, text, kind)
        self._families.append(family)
        for suffix in ("", "_total", "_bucket", "_sum", "_count"):
            self._owner[base + suffix] = family

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        self._owner[name].add_sample(name, dict(labels), float(value))

    def histogram(
        self,
        name: str,
        labels: Mapping[str, str],
        bounds: Sequence[float],
        counts: Sequence[int],
        total: float,
    ) -> None:
        """One histogram series: ``counts[i]`` observations fell in ``(bounds[i-1], bounds[i]]``; the last is +Inf."""
        cumulative = 0
        for bound, count in zip([*bounds, math.inf], counts):
            cumulative += count
            self.sample(f"{name}_bucket", {**labels, "le": _bound(bound)}, cumulative)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, cumulative)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def text(self) -> str:
        """Prometheus' text format (tests and scripts without an app)."""
        return encode([self], None)[0].decode()


def encode(collectors: Sequence[Collector], accept: str | None) -> tuple[bytes, str]:
    """The collectors' families in the format ``accept`` asks for (OpenMetrics, else Prometheus text 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)  # scrape-time families: no names to check up front
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else str(float(bound))
