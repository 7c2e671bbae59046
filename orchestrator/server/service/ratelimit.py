"""Per-key rate limits (requests and tokens per minute), shared across replicas through Redis.

The window is a *sliding window counter*: minutes are fixed windows (``floor(now / 60)``) and
the count "in the last minute" is estimated as ``previous * (1 - f) + current``, where ``f`` is
the share of the current window already elapsed. It needs two numbers per limit, never lets a
burst at a window boundary double the rate as fixed windows do, and gives an exact wait: the
earliest moment the estimate leaves room for the request, assuming no other traffic
(``retry_after_s``, good for a ``Retry-After`` header).

All of a key's counts live in one Redis hash ``<namespace>:ratelimit:<key name>`` (fields ``w``:
window index, ``rp``/``rc``: requests in the previous/current window, ``tp``/``tc``: tokens),
and one Lua script checks both limits and increments both counts atomically, so replicas that
share the Redis share the limit. The time is Redis' own clock (``TIME``) unless a clock is
injected (tests). A request is counted only when allowed. ``settle`` corrects the token count
once the real usage is known (the estimate is usually the prompt plus ``max_tokens``).

Without Redis (or while it is down) the same arithmetic runs in process, per replica, over a
bounded map of keys; counts do not move between the two when Redis comes and goes.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.server.service.redis_link import RedisLink

WINDOW_S = 60.0

# KEYS[1]: the key's hash. ARGV: now (seconds; "" = Redis' clock), window seconds,
# requests limit (-1 = none), tokens limit (-1 = none), tokens this request.
# Returns {allowed (0/1), retry after in ms, limit hit (0 none, 1 requests, 2 tokens)}.
# The arithmetic is `wait_s` below, line by line.
ACQUIRE_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window = tonumber(ARGV[2])
local rlimit, tlimit, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local index = math.floor(now / window)
local fraction = (now - index * window) / window
local s = redis.call('HMGET', KEYS[1], 'w', 'rp', 'rc', 'tp', 'tc')
local w = tonumber(s[1])
local rp, rc, tp, tc = tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
if w == nil or w < index - 1 then
  rp, rc, tp, tc = 0, 0, 0, 0
elseif w == index - 1 then
  rp, rc, tp, tc = rc, 0, tc, 0
end
if w ~= nil and w > index then index, fraction = w, 0 end
local function wait(prev, curr, limit, cost)
  if limit < 0 then return 0 end
  if limit == 0 then return window end
  if cost > limit then cost = limit end
  if prev * (1 - fraction) + curr + cost <= limit + 1e-9 then return 0 end
  if curr + cost <= limit then return ((1 - (limit - curr - cost) / prev) - fraction) * window end
  return (1 - fraction + (1 - (limit - cost) / curr)) * window
end
local rwait = wait(rp, rc, rlimit, 1)
local twait = wait(tp, tc, tlimit, tokens)
if rwait > 0 or twait > 0 then
  local which = 1
  if twait > rwait then which = 2 end
  return {0, math.ceil(math.max(rwait, twait) * 1000 - 1e-6), which}
end
if rlimit >= 0 then rc = rc + 1 end
if tlimit >= 0 then tc = tc + tokens end
redis.call('HSET', KEYS[1], 'w', index, 'rp', rp, 'rc', rc, 'tp', tp, 'tc', tc)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2000) + 1000)
return {1, 0, 0}
"""

# KEYS[1]: the key's hash. ARGV: now ("" = Redis' clock), window seconds, token correction.
SETTLE_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window = tonumber(ARGV[2])
local index = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'w', 'rp', 'rc', 'tp', 'tc')
local w = tonumber(s[1])
if w == nil then return 0 end
local rp, rc, tp, tc = tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0, tonumber(s[5]) or 0
if w < index - 1 then return 0 end
if w == index - 1 then rp, rc, tp, tc = rc, 0, tc, 0 end
if w > index then index = w end
tc = math.max(0, tc + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'w', index, 'rp', rp, 'rc', rc, 'tp', tp, 'tc', tc)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2000) + 1000)
return 1
"""


@dataclass(frozen=True)
class RateDecision:
    """``allowed``, or the seconds until the request would fit and which limit (requests/tokens) it hit."""

    allowed: bool
    retry_after_s: float
    limit: str | None


ALLOWED = RateDecision(True, 0.0, None)


def wait_s(previous: float, current: float, limit: int | None, cost: float, fraction: float) -> float:
    """Seconds until ``cost`` fits under ``limit`` given the two windows' counts; 0 when it fits now.

    ``fraction`` is the elapsed share of the current window. A cost above the limit is treated as
    the whole limit: such a request passes alone in an otherwise empty minute instead of never.
    """
    if limit is None:
        return 0.0
    if limit <= 0:
        return WINDOW_S
    cost = min(cost, limit)
    if previous * (1 - fraction) + current + cost <= limit + 1e-9:  # counts are whole: ignore float noise
        return 0.0
    if current + cost <= limit:  # the previous window's share fades enough within this window
        return ((1 - (limit - current - cost) / previous) - fraction) * WINDOW_S
    # only in the next window, once the current count is the one fading
    return (1 - fraction + (1 - (limit - cost) / current)) * WINDOW_S


@dataclass
class _Counts:
    """One key's two windows, in process (the Redis hash's fields)."""

    window: int
    requests_previous: float = 0.0
    requests_current: float = 0.0
    tokens_previous: float = 0.0
    tokens_current: float = 0.0

    def roll(self, index: int) -> None:
        """Move to window ``index``: the current counts become the previous ones, or both expire."""
        if index == self.window + 1:
            self.requests_previous, self.tokens_previous = self.requests_current, self.tokens_current
        elif index > self.window + 1:
            self.requests_previous = self.tokens_previous = 0.0
        else:  # same window, or a clock that went back: keep counting where we are
            return
        self.requests_current = self.tokens_current = 0.0
        self.window = index


class RateLimiter:
    """Requests and tokens per minute per API key name, in Redis (shared) or in process."""

    def __init__(
        self,
        link: RedisLink,
        namespace: str = "moesaic",
        clock: Callable[[], float] | None = None,
        max_keys: int = 100_000,
    ) -> None:
        self.link = link
        self.prefix = f"{namespace}:ratelimit:"
        self._clock = clock  # None: Redis' clock in Redis, time.time in process
        self._max_keys = max_keys
        self._local: OrderedDict[str, _Counts] = OrderedDict()
        self._acquire = link.client.register_script(ACQUIRE_LUA) if link.client is not None else None
        self._settle = link.client.register_script(SETTLE_LUA) if link.client is not None else None
        self.rejected = 0

    async def acquire(
        self, key_name: str, requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int
    ) -> RateDecision:
        """Count one request of ``tokens`` (estimated) tokens for ``key_name`` if both limits allow it."""
        if requests_per_minute is None and tokens_per_minute is None:
            return ALLOWED
        tokens = max(0, tokens)
        args = [self._now_arg(), WINDOW_S, _limit_arg(requests_per_minute), _limit_arg(tokens_per_minute), tokens]
        script = self._acquire
        used_redis, reply = await self.link.attempt(
            "check a rate limit", lambda r: script(keys=[self.prefix + key_name], args=args, client=r)
        )
        if used_redis:
            allowed, retry_ms, which = (int(value) for value in reply)
            decision = ALLOWED if allowed else RateDecision(False, retry_ms / 1000, _LIMIT_NAMES[which])
        else:
            decision = self._acquire_locally(key_name, requests_per_minute, tokens_per_minute, tokens)
        if not decision.allowed:
            self.rejected += 1
        return decision

    async def settle(self, key_name: str, tokens_per_minute: int | None, estimated: int, actual: int) -> None:
        """Replace the estimated token count of a finished request by its real usage."""
        delta = actual - estimated
        if tokens_per_minute is None or delta == 0:
            return
        script = self._settle
        used_redis, _ = await self.link.attempt(
            "settle a token count",
            lambda r: script(keys=[self.prefix + key_name], args=[self._now_arg(), WINDOW_S, delta], client=r),
        )
        if not used_redis:
            counts = self._local.get(key_name)
            if counts is not None:
                counts.roll(self._window_index(self._local_now()))
                counts.tokens_current = max(0.0, counts.tokens_current + delta)

    def _acquire_locally(
        self, key_name: str, requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int
    ) -> RateDecision:
        now = self._local_now()
        index = self._window_index(now)
        fraction = (now - index * WINDOW_S) / WINDOW_S
        counts = self._local.get(key_name)
        if counts is None:
            counts = _Counts(index)
        counts.roll(index)
        fraction = fraction if counts.window == index else 0.0
        request_wait = wait_s(counts.requests_previous, counts.requests_current, requests_per_minute, 1, fraction)
        token_wait = wait_s(counts.tokens_previous, counts.tokens_current, tokens_per_minute, tokens, fraction)
        if request_wait > 0 or token_wait > 0:
            which = "tokens" if token_wait > request_wait else "requests"
            return RateDecision(False, _whole_ms(max(request_wait, token_wait)), which)
        if requests_per_minute is not None:
            counts.requests_current += 1
        if tokens_per_minute is not None:
            counts.tokens_current += tokens
        self._local[key_name] = counts
        self._local.move_to_end(key_name)
        while len(self._local) > self._max_keys:
            self._local.popitem(last=False)
        return ALLOWED

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    def _local_now(self) -> float:
        return time.time() if self._clock is None else self._clock()

    @staticmethod
    def _window_index(now: float) -> int:
        return math.floor(now / WINDOW_S)


_LIMIT_NAMES = {0: None, 1: "requests", 2: "tokens"}


def _whole_ms(seconds: float) -> float:
    """Round a wait up to the millisecond, as the Lua script does (float noise below 1 ns ignored)."""
    return math.ceil(seconds * 1000 - 1e-6) / 1000


def _limit_arg(limit: int | None) -> int:
    return -1 if limit is None else limit
