"""The response cache: which requests are cacheable, the key, TTL and bounds, in Redis and in process,
and a Redis that dies and comes back mid-run."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from orchestrator.server.service.cache import ResponseCache
from orchestrator.server.service.redis_link import RedisLink, RedisUnavailable, connect_redis
from tests.conftest import RedisServer

BODY: dict[str, Any] = {
    "model": "moesaic",
    "messages": [{"role": "user", "content": "What is 12 * 7?"}],
    "temperature": 0,
    "max_tokens": 32,
}
RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "moesaic",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "84"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


class FakeClock:
    """A hand-driven monotonic clock (time is an input here, not something to wait for)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "memory"])
async def link(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RedisLink]:
    link = await connect_redis(redis_url if request.param == "redis" else None)
    assert link.status == ("connected" if request.param == "redis" else "disabled")
    yield link
    await link.close()


def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_only_deterministic_requests_get_a_key() -> None:
    cache = ResponseCache(RedisLink(None, None), ttl_s=60)
    assert cache.key_for("moesaic", BODY) is not None
    assert cache.key_for("moesaic", {**BODY, "temperature": 0.0}) == cache.key_for("moesaic", BODY)
    assert cache.key_for("moesaic", {**BODY, "n": 1}) == cache.key_for("moesaic", BODY)
    without_temperature = {key: value for key, value in BODY.items() if key != "temperature"}
    for body in (without_temperature, {**BODY, "temperature": 0.2}, {**BODY, "temperature": False}):
        assert cache.key_for("moesaic", body) is None, body
    assert cache.key_for("moesaic", {**BODY, "stream": True}) is None
    assert cache.key_for("moesaic", {**BODY, "n": 2}) is None


def test_the_key_covers_what_changes_the_answer_and_nothing_else() -> None:
    cache = ResponseCache(RedisLink(None, None), ttl_s=60)
    base = cache.key_for("moesaic", BODY, scope="default@v1")
    assert base is not None and len(base) == 64
    reordered = dict(reversed(list(BODY.items())))
    assert cache.key_for("moesaic", reordered, scope="default@v1") == base
    same = [
        {**BODY, "user": "someone-else"},
        {**BODY, "stream": False, "stream_options": {"include_usage": True}},
        {**BODY, "model": "ignored: the model argument counts"},
        {**BODY, "max_tokens": 32.0},
    ]
    for body in same:
        assert cache.key_for("moesaic", body, scope="default@v1") == base, body
    different = [
        {**BODY, "messages": [{"role": "user", "content": "What is 12 * 8?"}]},
        {**BODY, "messages": [{"role": "system", "content": "Be brief."}, *BODY["messages"]]},
        {**BODY, "max_tokens": 33},
        {**BODY, "top_p": 0.5},
        {**BODY, "stop": ["\n"]},
        {**BODY, "seed": 7},
        {**BODY, "moesaic": {"k": 3}},
        {**BODY, "moesaic": {"strategy": "vote"}},
        {**BODY, "frequency_penalty": 0.5},  # a field we ignore today still keys: a miss, never a wrong hit
    ]
    keys = {cache.key_for("moesaic", body, scope="default@v1") for body in different}
    assert base not in keys and len(keys) == len(different)
    assert cache.key_for("expert/math", BODY, scope="default@v1") != base
    assert cache.key_for("moesaic", BODY, scope="default@v2") != base


async def test_round_trip_and_counters(link: RedisLink) -> None:
    cache = ResponseCache(link, ttl_s=60, namespace=namespace())
    key = cache.key_for("moesaic", BODY)
    assert key is not None
    assert await cache.get(key) is None
    await cache.put(key, RESPONSE)
    assert await cache.get(key) == RESPONSE
    assert await cache.get(key) == RESPONSE
    cache.note_bypass()
    assert (cache.hits, cache.misses, cache.stores, cache.bypassed) == (2, 1, 1, 1)
    other = cache.key_for("moesaic", {**BODY, "max_tokens": 8})
    assert other is not None and await cache.get(other) is None
    assert cache.local_entries == (0 if link.client is not None else 1)  # Redis holds it when there is one


async def test_entries_expire_in_redis(redis_url: str) -> None:
    link = await connect_redis(redis_url)
    try:
        space = namespace()
        cache = ResponseCache(link, ttl_s=30, namespace=space)
        key = cache.key_for("moesaic", BODY)
        assert key is not None
        await cache.put(key, RESPONSE)
        assert link.client is not None
        remaining_ms = await link.client.pttl(f"{space}:cache:{key}")
        assert 0 < remaining_ms <= 30_000
    finally:
        await link.close()


async def test_in_process_entries_expire_and_stay_bounded() -> None:
    clock = FakeClock()
    cache = ResponseCache(RedisLink(None, None), ttl_s=10, max_entries=2, clock=clock)
    keys = [cache.key_for("moesaic", {**BODY, "max_tokens": tokens}) for tokens in (1, 2, 3)]
    assert all(keys)
    await cache.put(keys[0], RESPONSE)
    clock.now += 9.9
    assert await cache.get(keys[0]) == RESPONSE
    clock.now += 0.1
    assert await cache.get(keys[0]) is None  # 10 s after it was stored
    for key in keys:
        await cache.put(key, RESPONSE)
    assert cache.local_entries == 2
    assert await cache.get(keys[0]) is None  # least recently used, dropped for the third
    assert await cache.get(keys[2]) == RESPONSE


async def test_unreachable_redis_falls_back_or_fails_when_required() -> None:
    server = RedisServer()  # a free port nobody listens on
    link = await connect_redis(server.url)
    assert link.status.startswith("fallback: ") and "127.0.0.1" in link.status
    cache = ResponseCache(link, ttl_s=60)
    key = cache.key_for("moesaic", BODY)
    assert key is not None
    await cache.put(key, RESPONSE)
    assert await cache.get(key) == RESPONSE
    await link.close()
    with pytest.raises(RedisUnavailable, match="Start redis-server there or fix the URL"):
        await connect_redis(server.url, required=True)
    with pytest.raises(RedisUnavailable, match="not valid"):
        await connect_redis("http://not-redis")


async def test_redis_stopping_mid_run(caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer() as server:
        link = await connect_redis(server.url, retry_interval_s=0.3)
        cache = ResponseCache(link, ttl_s=60)
        first = cache.key_for("moesaic", BODY)
        second = cache.key_for("moesaic", {**BODY, "max_tokens": 8})
        assert first and second
        await cache.put(first, RESPONSE)
        assert link.status == "connected" and cache.local_entries == 0

        server.stop()
        with caplog.at_level(logging.WARNING, logger="orchestrator.server.service.redis_link"):
            assert await cache.get(first) is None  # Redis' copy is out of reach: a miss, not an error
            await cache.put(second, RESPONSE)
            assert await cache.get(second) == RESPONSE
            assert await cache.get(second) == RESPONSE
        assert link.status.startswith("fallback: ") and cache.local_entries == 1
        outage_logs = [record for record in caplog.records if "in-process fallbacks" in record.getMessage()]
        assert len(outage_logs) == 1  # logged once per outage, not per call

        server.start()
        await asyncio.sleep(0.35)  # past the retry interval: the next call tries Redis again
        await cache.put(first, RESPONSE)
        assert link.status == "connected"
        raw = redis.Redis.from_url(server.url)
        assert raw.exists(f"moesaic:cache:{first}") == 1
        raw.close()
        assert await cache.get(first) == RESPONSE
        await link.close()
