"""The conversations ``POST /v1/responses`` can continue: ``previous_response_id`` -> what was said so far.

Each stored answer holds the conversation up to and including it, as Responses API input items (the inputs, then the
answer's output items: its message, its function calls), so a request naming it continues with its own input
appended; a tool round trip sends only the ``function_call_output`` items. Kept in Redis under
``<namespace>:response:<id>`` with the TTL set by Redis, so any replica can continue any conversation; without Redis
(or while it is down) in a bounded in-process LRU with the same TTL.

Runs in: the API server. May import: the service's Redis link and cache (its LRU).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from orchestrator.server.service.cache import MemoryLRU
from orchestrator.server.service.redis_link import RedisLink

log = logging.getLogger(__name__)


class ResponseStore:
    """Stored Responses API conversations by response id (see the module docstring)."""

    def __init__(
        self,
        link: RedisLink | None,
        ttl_s: int,
        max_entries: int = 10_000,
        namespace: str = "moesaic",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self.prefix = f"{namespace}:response:"
        self._memory = MemoryLRU(max_entries, ttl_s, clock)

    async def get(self, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation up to ``response_id``'s answer, as input items; None when unknown or expired."""
        stored: Any = None
        used_redis = False
        if self.link is not None:
            used_redis, stored = await self.link.attempt(
                "read a stored response", lambda r: r.get(self.prefix + response_id)
            )
        if not used_redis:
            stored = self._memory.get(response_id)
        if stored is None:
            return None
        try:
            items = json.loads(stored)
        except (TypeError, ValueError):
            log.warning("stored response %s is not JSON; treating it as expired", response_id)
            return None
        return items if isinstance(items, list) else None

    async def put(self, response_id: str, items: list[dict[str, Any]]) -> None:
        """Keep the conversation up to ``response_id`` for ``ttl_s`` seconds. Never raises for a store failure."""
        value = json.dumps(items, separators=(",", ":"), ensure_ascii=False)
        stored = False
        if self.link is not None:
            stored, _ = await self.link.attempt(
                "store a response", lambda r: r.set(self.prefix + response_id, value, ex=self.ttl_s)
            )
        if not stored:
            self._memory.put(response_id, value)
