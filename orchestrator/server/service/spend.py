"""Per-key money spent per UTC day, for daily budgets (``budget_usd_per_day``), shared through Redis.

The gate asks ``spent`` before the work and refuses a key whose spend today has reached its
budget; after the answer it ``add``s what the answer cost (the ``moesaic.cost`` of the response,
from the pool file's prices). The check comes before the work because the cost is only known
after it: an admitted request may take a key past its budget, and the next one is refused.

A day is a UTC calendar day. In Redis, each key's spend for one day is a float counter
``<namespace>:spend:<key name>:<YYYY-MM-DD>``, raised with ``INCRBYFLOAT`` and given a two-day
expiry in the same transaction, so replicas sharing the Redis share the budget and old days
clean themselves up. Without Redis (or while it is down) a bounded map of ``(key name, day)``
in process counts instead, per replica, and forgets past days when the day changes; counts do
not move between the two when Redis comes and goes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from orchestrator.server.service.redis_link import RedisLink

DAY_S = 86_400
EXPIRE_S = 2 * DAY_S  # a day's counter outlives its day, so a clock a little off never loses it early


def dollars(value: float) -> str:
    """``$0.02``, ``$12.5``, ``$0``: an amount as people write it (to the micro-dollar)."""
    text = f"{round(value, 6):.6f}".rstrip("0").rstrip(".")
    return f"${text}"


class SpendTracker:
    """Dollars spent today (UTC) per API key name, in Redis (shared) or in process."""

    def __init__(
        self,
        link: RedisLink,
        namespace: str = "moesaic",
        clock: Callable[[], float] = time.time,
        max_keys: int = 100_000,
    ) -> None:
        self.link = link
        self.prefix = f"{namespace}:spend:"
        self._clock = clock
        self._max_keys = max_keys
        self._local: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._local_day: str | None = None
        self.rejected = 0  # requests refused for a spent budget (the gate counts them)

    def today(self) -> str:
        """The current UTC day, ``YYYY-MM-DD``."""
        return datetime.fromtimestamp(self._clock(), timezone.utc).date().isoformat()

    def seconds_until_reset(self) -> float:
        """Seconds until the next 00:00 UTC, when every key's spend starts again at zero."""
        return DAY_S - self._clock() % DAY_S

    async def spent(self, key_name: str) -> float:
        """What ``key_name`` has spent today, in dollars."""
        day = self.today()
        key = self._redis_key(key_name, day)
        used_redis, value = await self.link.attempt("read a key's spend", lambda client: client.get(key))
        if used_redis:
            return float(value or 0.0)
        self._forget_past_days(day)
        return self._local.get((key_name, day), 0.0)

    async def add(self, key_name: str, usd: float) -> float:
        """Add ``usd`` to ``key_name``'s spend today; returns today's total."""
        if usd <= 0:
            return await self.spent(key_name)
        day = self.today()
        key = self._redis_key(key_name, day)

        async def increment(client: Any) -> Any:
            async with client.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(key, usd)
                pipe.expire(key, EXPIRE_S)
                total, _ = await pipe.execute()
            return total

        used_redis, total = await self.link.attempt("add to a key's spend", increment)
        if used_redis:
            return float(total)
        self._forget_past_days(day)
        total = self._local.get((key_name, day), 0.0) + usd
        self._local[(key_name, day)] = total
        self._local.move_to_end((key_name, day))
        while len(self._local) > self._max_keys:
            self._local.popitem(last=False)  # the key spending least recently loses its count
        return total

    def _redis_key(self, key_name: str, day: str) -> str:
        return f"{self.prefix}{key_name}:{day}"

    def _forget_past_days(self, day: str) -> None:
        if day == self._local_day:
            return
        self._local_day = day
        for entry in [entry for entry in self._local if entry[1] != day]:
            del self._local[entry]
