"""Per-key money spent per UTC day, for daily budgets (``budget_usd_per_day``), shared through Redis.

A request's cost is known only once its model calls end, so the admission *reserves* its worst case first
(every call it may make, each at the prompt plus ``max_tokens``, at the experts' prices): ``reserve`` refuses
when the key's spend today plus that reservation would pass the budget, else adds the reservation to the
spend at once, in one atomic step. Once the calls end, ``settle`` replaces the reservation with what the
calls cost. So concurrent requests see each other's reservations and cannot overspend together.

A day is a UTC calendar day. In Redis, each key's spend for one day (settled costs plus open reservations)
is a float counter ``<namespace>:spend:<key name>:<YYYY-MM-DD>``; a Lua script checks and raises it
atomically, and gives it a two-day expiry, so replicas sharing the Redis share the budget and old days clean
themselves up. A process that dies between reserve and settle leaves its reservation counted (it errs
towards spending less). Without Redis (or while it is down) a bounded map of ``(key name, day)`` in process
counts instead, per replica, and forgets past days when the day changes; counts do not move between the two
when Redis comes and goes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from orchestrator.server.service.redis_link import RedisLink

DAY_S = 86_400

# KEYS[1]: the key's counter today. ARGV: the reservation (dollars), the budget (dollars), expiry seconds.
# Returns {1, total} when reserved, {0, spent} when the reservation does not fit (nothing changes).
RESERVE_LUA = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
if spent >= budget or spent + amount > budget + 1e-12 then
  return {0, tostring(spent)}
end
local total = redis.call('INCRBYFLOAT', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {1, tostring(total)}
"""
EXPIRE_S = 2 * DAY_S  # a day's counter outlives its day, so a clock a little off never loses it early


def dollars(value: float) -> str:
    """``$0.02``, ``$12.5``, ``$0``: an amount as people write it (to the micro-dollar)."""
    text = f"{round(value, 6):.6f}".rstrip("0").rstrip(".")
    return f"${text}"


@dataclass(frozen=True)
class Reservation:
    """The outcome of ``reserve``: whether it fit, and the key's spend today (including it when it did)."""

    granted: bool
    spent: float
    amount: float
    day: str


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

    async def reserve(self, key_name: str, usd: float, budget: float) -> Reservation:
        """Hold ``usd`` of ``key_name``'s budget for a request about to run, if spend + ``usd`` stays within it.

        Refused (nothing held) when the key has spent its budget already or the reservation would pass it.
        """
        day = self.today()
        key = self._redis_key(key_name, day)
        used_redis, answer = await self.link.attempt(
            "reserve a key's spend",
            lambda client: client.eval(RESERVE_LUA, 1, key, repr(max(usd, 0.0)), repr(budget), EXPIRE_S),
        )
        if used_redis:
            granted, total = answer
            return Reservation(bool(int(granted)), float(total), usd, day)
        self._forget_past_days(day)
        spent = self._local.get((key_name, day), 0.0)
        if spent >= budget or spent + usd > budget + 1e-12:
            return Reservation(False, spent, usd, day)
        return Reservation(True, self._add_locally(key_name, day, usd), usd, day)

    async def settle(self, key_name: str, reservation: Reservation, actual: float) -> float:
        """Replace a granted reservation by what the request cost; returns the day's total (0 if the day passed)."""
        if not reservation.granted:
            return await self.spent(key_name)
        correction = actual - reservation.amount
        if correction == 0:
            return await self.spent(key_name)
        used_redis, total = await self._increment_in_redis(key_name, reservation.day, correction)
        if used_redis:
            return max(0.0, float(total))
        if reservation.day != self.today():
            return 0.0  # the in-process count of that day is gone already
        return self._add_locally(key_name, reservation.day, correction)

    async def add(self, key_name: str, usd: float) -> float:
        """Add ``usd`` to ``key_name``'s spend today; returns today's total."""
        if usd <= 0:
            return await self.spent(key_name)
        day = self.today()
        used_redis, total = await self._increment_in_redis(key_name, day, usd)
        if used_redis:
            return float(total)
        self._forget_past_days(day)
        return self._add_locally(key_name, day, usd)

    async def _increment_in_redis(self, key_name: str, day: str, usd: float) -> tuple[bool, Any]:
        """Raise (or lower) a day's counter in Redis and renew its expiry; (False, None) when Redis did not answer."""
        key = self._redis_key(key_name, day)

        async def increment(client: Any) -> Any:
            async with client.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(key, usd)
                pipe.expire(key, EXPIRE_S)
                total, _ = await pipe.execute()
            return total

        return await self.link.attempt("change a key's spend", increment)

    def _add_locally(self, key_name: str, day: str, usd: float) -> float:
        total = max(0.0, self._local.get((key_name, day), 0.0) + usd)
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
