"""``DailyUsage``: each expert's tokens, cost and calls of the current day (UTC), for the console's pool view.

The Prometheus counters (``metrics``) only grow, from the server's start; a person reading a dashboard asks what
today cost. This keeps one tally per expert for the current UTC day and starts again from zero when the day
changes. Per server process: under Ray Serve each replica counts its own requests (``/metrics`` and Ray's
metrics API sum replicas). The clock is injectable, so a test moves the day.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.pipeline.state import CallRecord


@dataclass(frozen=True)
class UsageTally:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    calls: int = 0  # answered
    failed_calls: int = 0

    def plus(self, call: CallRecord) -> UsageTally:
        return replace(
            self,
            prompt_tokens=self.prompt_tokens + call.prompt_tokens,
            completion_tokens=self.completion_tokens + call.completion_tokens,
            cost=self.cost + call.cost,
            calls=self.calls + (0 if call.error else 1),
            failed_calls=self.failed_calls + (1 if call.error else 0),
        )


class DailyUsage:
    """Per expert, what its calls used since 00:00 UTC today."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._day = self._today()
        self._tallies: dict[str, UsageTally] = {}

    def add(self, calls: Iterable[CallRecord]) -> None:
        self._roll()
        for call in calls:
            self._tallies[call.expert] = self._tallies.get(call.expert, UsageTally()).plus(call)

    def snapshot(self) -> tuple[str, dict[str, UsageTally]]:
        """Today's date (ISO, UTC) and each expert's tally; experts not called today are absent."""
        self._roll()
        return self._day, dict(self._tallies)

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:
            self._day, self._tallies = today, {}

    def _today(self) -> str:
        return datetime.fromtimestamp(self._clock(), timezone.utc).date().isoformat()
