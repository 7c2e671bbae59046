"""Exact response cache for deterministic chat requests, in Redis or in process.

Only a request whose answer is a function of its input may be answered from the cache: one
with ``temperature == 0``, not streamed, one choice. The key is the SHA-256 of a canonical
JSON document of everything that can change the answer: the caller's ``scope`` (the pool's
name and profile version, so a changed pool never serves an old answer), the model, the
messages and every other field of the body except the few that only change delivery
(``stream``, ``user``...). Unknown fields are *included*: at worst an extra miss, never a
wrong hit.

Values are the full OpenAI response body (a JSON object) under ``<namespace>:cache:<sha256>``
with the TTL set by Redis. Without Redis (or while it is down) a bounded LRU with the same TTL
answers instead; it is per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from orchestrator.server.service.redis_link import RedisLink

log = logging.getLogger(__name__)

# Body fields that change how the answer is delivered or attributed, not what it says.
DELIVERY_FIELDS = frozenset({"model", "stream", "stream_options", "user", "n", "metadata", "store"})


def _normalise(value: Any) -> Any:
    """JSON numbers compare by value: ``0`` and ``0.0``, ``1`` and ``1.0`` must hash alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    return value


def is_deterministic(body: dict[str, Any]) -> bool:
    """Whether the request's answer can be reused: temperature exactly 0, not streamed, one choice."""
    temperature = body.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature != 0:
        return False
    if body.get("stream"):
        return False
    return body.get("n") in (None, 1)


class MemoryLRU:
    """Bounded least-recently-used map with a per-entry deadline: the in-process fallback."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        found = self._entries.get(key)
        if found is None:
            return None
        deadline, value = found
        if self._clock() >= deadline:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class ResponseCache:
    """Answers of deterministic requests, keyed by everything that determines them.

    The caller (the chat route) asks ``key_for``; ``None`` means "do not cache". It then calls
    ``get`` before running the pipeline and ``put`` with a complete, successful response body
    afterwards. ``Cache-Control: no-cache`` requests call neither and are counted by ``note_bypass``.
    """

    def __init__(
        self,
        link: RedisLink,
        ttl_s: int,
        max_entries: int = 10_000,
        namespace: str = "moesaic",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 1:
            raise ValueError(f"cache ttl_s must be at least 1 second, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"cache max_entries must be at least 1, got {max_entries}")
        self.link = link
        self.ttl_s = ttl_s
        self.prefix = f"{namespace}:cache:"
        self._memory = MemoryLRU(max_entries, ttl_s, clock)
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self.stores = 0

    def key_for(self, model: str, body: dict[str, Any], scope: str = "") -> str | None:
        """The cache key (64 hex digits) of a request, or None when its answer must not be reused.

        ``scope`` names what else the answer depends on, e.g. ``"pool-name@profiles-v3"``.
        """
        if not is_deterministic(body):
            return None
        document = {key: value for key, value in body.items() if key not in DELIVERY_FIELDS}
        document = {"scope": scope, "model": model, "request": _normalise(document)}
        try:
            canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):  # not a JSON body (a caller bug): do not cache rather than fail
            return None
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def note_bypass(self) -> None:
        """Count a request that asked not to use the cache (``Cache-Control: no-cache``)."""
        self.bypassed += 1

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored response body, or None (a miss). Counts hits and misses."""
        used_redis, stored = await self.link.attempt("read the response cache", lambda r: r.get(self.prefix + key))
        if not used_redis:
            stored = self._memory.get(key)
        response = self._decode(stored)
        if response is None:
            self.misses += 1
        else:
            self.hits += 1
        return response

    async def put(self, key: str, response: dict[str, Any]) -> None:
        """Store a complete response body for ``ttl_s`` seconds. Never raises for a store failure."""
        try:
            value = json.dumps(response, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as error:
            log.error("response for cache key %s is not JSON (%s); not cached", key, error)
            return
        stored, _ = await self.link.attempt(
            "write the response cache", lambda r: r.set(self.prefix + key, value, ex=self.ttl_s)
        )
        if not stored:
            self._memory.put(key, value)
        self.stores += 1

    @property
    def local_entries(self) -> int:
        """Entries held in process (the fallback), for health output."""
        return len(self._memory)

    def _decode(self, stored: Any) -> dict[str, Any] | None:
        if stored is None:
            return None
        try:
            response = json.loads(stored)
        except (TypeError, ValueError):
            log.warning("a cached response is not JSON; treating it as a miss")
            return None
        return response if isinstance(response, dict) else None
