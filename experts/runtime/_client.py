"""``ExpertClient``: what callers of the experts (pipeline, API, batch mode) may use, whoever stands behind it.

Two classes implement it: ``ExpertPool`` (every expert resident, calls go straight to its actor) and ``Dispatcher``
(per-expert queues in front of a pool whose local experts load on demand). Callers type against this protocol, so
either can be handed to them; ``expect`` and ``release_all`` are no-ops where every expert stays resident.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Protocol

from experts._health import HealthReport
from experts.config import PoolSpec
from experts.types import Completion, GenerationRequest


class ExpertClient(Protocol):
    """Call the pool's experts by name; ask which are healthy; start and stop them."""

    @property
    def spec(self) -> PoolSpec: ...

    @property
    def expert_names(self) -> list[str]: ...

    @property
    def restarts(self) -> dict[str, int]: ...

    def is_healthy(self, name: str) -> bool: ...

    def healthy_names(self) -> list[str]: ...

    def breaker_states(self) -> dict[str, str]: ...

    def honours(self, name: str, field: str) -> bool:
        """Whether expert ``name`` acts on the request's ``field`` (``tools``, ``tool_choice``, ``response_format``,
        ``logprobs``): its backend does, or its engine (vLLM's: tools and log-probabilities)."""
        ...

    async def start(self) -> dict[str, HealthReport]: ...

    async def shutdown(self) -> None: ...

    async def health(self, timeout_s: float = 5.0) -> dict[str, HealthReport]: ...

    async def generate(self, name: str, request: GenerationRequest) -> Completion: ...

    def stream(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]: ...

    def expect(self, calls: Counter[str]) -> None:
        """Calls known to come later (batch mode), so memory management keeps those experts; a no-op by default."""

    async def release_all(self) -> None:
        """Give back the memory of experts loaded on demand (end of a batch); a no-op by default."""
