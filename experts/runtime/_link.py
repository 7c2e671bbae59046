"""``ExpertLink``: how the pool reaches one expert, whoever runs it.

Two implementations: ``ActorHandle`` (an actor the pool started, restarted by the pool when it dies, with the
same-node channel) and ``DeploymentLink`` (a Ray Serve deployment, whose replicas Serve starts, routes to and
replaces). ``GuardedExpert`` puts timeouts, retries and a circuit breaker around either.

Runs in: the driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from experts._health import HealthReport
from experts.types import Completion, GenerationRequest


class ExpertLink(Protocol):
    """One expert's calls, health and lifecycle, as the pool and its guards use them."""

    name: str
    report: HealthReport  # the last health report
    restarts: int
    start_timeout_s: float

    @property
    def ready(self) -> bool: ...

    @property
    def restarting(self) -> bool: ...

    async def start(self) -> HealthReport:
        """Bring the expert up (or wait until it is) and report its health; never raises."""
        ...

    async def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """One try of ``<method>(*args)`` within ``timeout_s``; failures as ``ExpertCallFailed`` with a code."""
        ...

    def stream(self, request: GenerationRequest, timeout_s: float | None) -> AsyncIterator[str | Completion]: ...

    async def probe(self, timeout_s: float) -> HealthReport: ...

    async def wait_restarted(self, timeout_s: float | None) -> bool:
        """Wait for a restart in progress; True when the expert is ready again."""
        ...

    async def close(self) -> None: ...
