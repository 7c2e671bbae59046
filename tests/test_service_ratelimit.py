"""Rate limits: hand-computed sliding-window cases, run through the Lua script on a real Redis and
through the in-process fallback alike; two replicas sharing a limit; Redis dying mid-run.

The sliding-window estimate is ``previous * (1 - f) + current`` (``f``: elapsed share of the
current minute). Times below are seconds since the epoch from an injected clock, so window 0 is
[0, 60), window 1 is [60, 120) and so on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from orchestrator.server.service.ratelimit import RateDecision, RateLimiter, wait_s
from orchestrator.server.service.redis_link import RedisLink, connect_redis
from tests.conftest import RedisServer


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "memory"])
async def link(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RedisLink]:
    link = await connect_redis(redis_url if request.param == "redis" else None)
    yield link
    await link.close()


def new_key() -> str:
    return f"key-{uuid.uuid4().hex[:8]}"


def test_wait_arithmetic() -> None:
    assert wait_s(0, 2, 3, 1, 0.0) == 0.0  # 2 + 1 <= 3
    assert wait_s(0, 3, 3, 1, 0.0) == pytest.approx(80.0)  # next window, once 3 * (1 - g) + 1 <= 3: g = 1/3
    assert wait_s(3, 1, 3, 1, 0.5) == pytest.approx(10.0)  # this window, once 3 * (1 - f) + 2 <= 3: f = 2/3
    assert wait_s(0, 0, 1000, 1500, 0.2) == 0.0  # above the limit: needs the whole minute, which is free
    assert wait_s(0, 0, 0, 1, 0.2) == 60.0
    assert wait_s(5, 5, None, 1, 0.2) == 0.0


async def test_requests_per_minute(link: RedisLink) -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(link, namespace=f"t{uuid.uuid4().hex[:6]}", clock=clock)
    key = new_key()
    for _ in range(3):
        assert (await limiter.acquire(key, 3, None, 0)).allowed
    # window 0 holds 3: the 4th fits when 3 * (1 - g) + 0 + 1 <= 3 in window 1, g = 1/3: at t = 80
    assert await limiter.acquire(key, 3, None, 0) == RateDecision(False, 80.0, "requests")
    clock.now = 79.9
    assert not (await limiter.acquire(key, 3, None, 0)).allowed
    clock.now = 80.0
    assert (await limiter.acquire(key, 3, None, 0)).allowed
    # t = 90: 3 * 0.5 + 1 + 1 = 3.5 > 3; fits when 3 * (1 - f) + 2 <= 3, f = 2/3: t = 100
    clock.now = 90.0
    assert await limiter.acquire(key, 3, None, 0) == RateDecision(False, 10.0, "requests")
    clock.now = 100.0
    assert (await limiter.acquire(key, 3, None, 0)).allowed
    # two windows later nothing is left of either count
    clock.now = 240.0
    for _ in range(3):
        assert (await limiter.acquire(key, 3, None, 0)).allowed
    assert limiter.rejected == 3
    assert (await limiter.acquire(new_key(), 3, None, 0)).allowed  # keys are independent


async def test_tokens_per_minute_and_settle(link: RedisLink) -> None:
    clock = Clock(600.0)  # the start of window 10
    limiter = RateLimiter(link, namespace=f"t{uuid.uuid4().hex[:6]}", clock=clock)
    key = new_key()
    assert (await limiter.acquire(key, None, 1000, 400)).allowed
    assert (await limiter.acquire(key, None, 1000, 400)).allowed
    # 800 + 400 > 1000: next window, once 800 * (1 - g) + 400 <= 1000, g = 0.25: 60 + 15 s
    assert await limiter.acquire(key, None, 1000, 400) == RateDecision(False, 75.0, "tokens")
    await limiter.settle(key, 1000, estimated=400, actual=100)  # the first used 100: 500 counted
    assert (await limiter.acquire(key, None, 1000, 400)).allowed  # 900
    await limiter.settle(key, 1000, estimated=400, actual=450)  # 950
    # 950 + 100 > 1000: next window, once 950 * (1 - g) + 100 <= 1000, g = 1 - 900/950: 63.1579 s, in whole ms
    assert await limiter.acquire(key, None, 1000, 100) == RateDecision(False, 63.158, "tokens")
    await limiter.settle(key, None, estimated=400, actual=0)  # no token limit: nothing to correct
    assert not (await limiter.acquire(key, None, 1000, 100)).allowed


async def test_both_limits_and_oversized_requests(link: RedisLink) -> None:
    clock = Clock(1200.0)
    limiter = RateLimiter(link, namespace=f"t{uuid.uuid4().hex[:6]}", clock=clock)
    key = new_key()
    # a request above the whole minute's tokens passes alone in an empty minute, and counts in full
    assert (await limiter.acquire(key, 10, 1000, 1500)).allowed
    # then 1500 + 1 > 1000: next window, once 1500 * (1 - g) + 1 <= 1000, g = 501/1500: 60 + 20.04 s
    assert await limiter.acquire(key, 10, 1000, 1) == RateDecision(False, 80.04, "tokens")
    other = new_key()
    assert (await limiter.acquire(other, 2, 1000, 10)).allowed
    assert (await limiter.acquire(other, 2, 1000, 10)).allowed
    # both limits hit; the longer wait is reported: requests 2 * (1 - g) + 1 <= 2 at g = 0.5 (90 s),
    # tokens 20 * (1 - g) + 995 <= 1000 at g = 0.75 (105 s)
    assert await limiter.acquire(other, 2, 1000, 995) == RateDecision(False, 105.0, "tokens")
    assert await limiter.acquire(other, 2, 1000, 10) == RateDecision(False, 90.0, "requests")
    assert await limiter.acquire(new_key(), 0, None, 1) == RateDecision(False, 60.0, "requests")
    assert await limiter.acquire(new_key(), None, None, 10**9) == RateDecision(True, 0.0, None)


async def test_no_limits_touch_nothing(redis_url: str) -> None:
    link = await connect_redis(redis_url)
    space = f"t{uuid.uuid4().hex[:6]}"
    limiter = RateLimiter(link, namespace=space)
    assert (await limiter.acquire("free", None, None, 100)).allowed
    assert link.client is not None and await link.client.exists(f"{space}:ratelimit:free") == 0
    await link.close()


async def test_redis_clock_path(redis_url: str) -> None:
    """Without an injected clock the script reads Redis' TIME, the clock all replicas share."""
    link = await connect_redis(redis_url)
    limiter = RateLimiter(link, namespace=f"t{uuid.uuid4().hex[:6]}")
    key = new_key()
    assert (await limiter.acquire(key, 1, None, 0)).allowed
    decision = await limiter.acquire(key, 1, None, 0)
    assert not decision.allowed and decision.limit == "requests" and 0 < decision.retry_after_s <= 120
    await link.close()


async def test_two_replicas_share_the_limit(redis_url: str) -> None:
    clock = Clock(3000.0)
    space = f"t{uuid.uuid4().hex[:6]}"
    links = [await connect_redis(redis_url), await connect_redis(redis_url)]  # two processes' connections
    first, second = (RateLimiter(link, namespace=space, clock=clock) for link in links)
    key = new_key()
    allowed = [
        (await limiter.acquire(key, 4, None, 0)).allowed for limiter in (first, second, first, second, first, second)
    ]
    assert allowed == [True, True, True, True, False, False]
    assert first.rejected == second.rejected == 1
    # the in-process fallback is per replica: each would have allowed all six
    alone = [RateLimiter(RedisLink(None, None), clock=clock) for _ in range(2)]
    assert all([(await limiter.acquire(key, 4, None, 0)).allowed for limiter in alone * 3])
    for link in links:
        await link.close()


async def test_in_process_keys_are_bounded() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(RedisLink(None, None), clock=clock, max_keys=2)
    assert (await limiter.acquire("a", 1, None, 0)).allowed
    assert not (await limiter.acquire("a", 1, None, 0)).allowed
    assert (await limiter.acquire("b", 1, None, 0)).allowed
    assert (await limiter.acquire("c", 1, None, 0)).allowed  # "a" was least recently counted: dropped
    assert (await limiter.acquire("a", 1, None, 0)).allowed


async def test_redis_stopping_mid_run() -> None:
    clock = Clock(6000.0)
    with RedisServer() as server:
        link = await connect_redis(server.url, retry_interval_s=0.3)
        limiter = RateLimiter(link, clock=clock)
        assert (await limiter.acquire("alice", 2, None, 0)).allowed
        server.stop()
        # Redis' count is out of reach: the in-process limiter takes over with its own count
        assert (await limiter.acquire("alice", 2, None, 0)).allowed
        assert link.status.startswith("fallback: ")
        assert (await limiter.acquire("alice", 2, None, 0)).allowed
        assert not (await limiter.acquire("alice", 2, None, 0)).allowed  # the fallback still limits
        server.start()  # empty: a restarted Redis without persistence
        await asyncio.sleep(0.35)
        assert (await limiter.acquire("alice", 2, None, 0)).allowed
        assert link.status == "connected"
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        assert raw.hget("moesaic:ratelimit:alice", "rc") == "1"  # the script was loaded again and counted
        raw.close()
        await link.close()
