"""Prometheus' text exposition format (version 0.0.4), written by hand: the format is small.

Families are written in the order they were declared, each as its ``# HELP`` and ``# TYPE``
lines followed by its samples, which is what Prometheus' parser expects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Exposition:
    """Collects families in order; each family's samples follow its HELP and TYPE lines."""

    def __init__(self) -> None:
        self._families: dict[str, list[str]] = {}
        self._owner: dict[str, str] = {}

    def family(self, name: str, kind: str, text: str) -> None:
        """Declare a family (``counter``, ``gauge``, ``histogram``, ``summary``); declare before sampling."""
        self._families[name] = [f"# HELP {name} {_escape_help(text)}", f"# TYPE {name} {kind}"]
        for suffix in ("", "_bucket", "_sum", "_count"):
            self._owner[name + suffix] = name

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        self._families[self._owner[name]].append(f"{name}{_labels(labels.items())} {_number(value)}")

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

    def text(self) -> str:
        return "".join(line + "\n" for lines in self._families.values() for line in lines)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    escaped = [f'{key}="{_escape(str(value))}"' for key, value in pairs]
    return "{" + ",".join(escaped) + "}" if escaped else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _bound(bound: float) -> str:
    """Bucket bounds as floats ("1.0"), as Prometheus' client libraries write them: the same series everywhere."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer()):
        return str(int(value))
    return repr(float(value))
