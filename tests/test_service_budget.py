"""Per-key daily spend budgets: the ``SpendTracker`` store (in a real redis-server, and in process
with an injected clock), and the gate refusing a key that spent its budget, over real uvicorn with
priced echo experts, seen through the official ``openai`` client."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import httpx
import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from experts.config._pool_spec import PoolSpec, parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import Authenticator, KeyStore, hash_key, new_key
from orchestrator.server.service.redis_link import RedisLink, connect_redis
from orchestrator.server.service.service_config import KeyRecord, RateLimitSection, ServiceConfig
from orchestrator.server.service.spend import SpendTracker, dollars
from tests.conftest import ServerThread, free_port

# 2026-03-01 23:59:30 UTC: thirty seconds before a new UTC day
LATE = datetime(2026, 3, 1, 23, 59, 30, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the store, in Redis -------------------------------------------------------------------------
async def test_two_trackers_on_one_redis_share_a_keys_spend_per_utc_day(redis_url: str) -> None:
    namespace, clock = f"budget-{uuid.uuid4().hex[:8]}", Clock(LATE)
    one_link, two_link = await connect_redis(redis_url), await connect_redis(redis_url)
    one = SpendTracker(one_link, namespace=namespace, clock=clock)
    two = SpendTracker(two_link, namespace=namespace, clock=clock)
    try:
        assert await one.spent("team") == 0.0
        assert await one.add("team", 0.25) == pytest.approx(0.25)
        assert await two.add("team", 0.5) == pytest.approx(0.75)
        assert await one.spent("team") == pytest.approx(0.75) and await two.spent("other") == 0.0
        raw = redis.Redis.from_url(redis_url, decode_responses=True)
        key = f"{namespace}:spend:team:2026-03-01"
        assert float(raw.get(key)) == pytest.approx(0.75)
        assert 2 * 86_400 - 5 <= raw.ttl(key) <= 2 * 86_400  # old days clean themselves up
        assert one.seconds_until_reset() == pytest.approx(30.0)
        clock.now += 31  # 00:00:01 the next day: a fresh budget, the old counter left to expire
        assert await two.spent("team") == 0.0 and await one.add("team", 0.1) == pytest.approx(0.1)
        assert float(raw.get(f"{namespace}:spend:team:2026-03-02")) == pytest.approx(0.1)
        assert one_link.status == two_link.status == "connected"
    finally:
        await one_link.close()
        await two_link.close()


async def test_a_redis_that_does_not_answer_leaves_the_spend_in_process() -> None:
    link = await connect_redis(f"redis://127.0.0.1:{free_port()}/0", retry_interval_s=60)
    tracker = SpendTracker(link, clock=Clock(LATE))
    try:
        assert link.status.startswith("fallback: ")
        assert await tracker.add("team", 0.3) == pytest.approx(0.3)
        assert await tracker.spent("team") == pytest.approx(0.3)
    finally:
        await link.close()


# -- the store, in process -----------------------------------------------------------------------
async def test_the_in_process_spend_resets_at_utc_midnight_and_stays_bounded() -> None:
    clock = Clock(LATE)
    tracker = SpendTracker(RedisLink(None, None), clock=clock, max_keys=2)
    assert await tracker.add("a", 0.4) == pytest.approx(0.4)
    assert await tracker.add("a", 0.0) == pytest.approx(0.4)  # a free answer changes nothing
    assert await tracker.add("b", 1.0) == 1.0 and await tracker.spent("a") == pytest.approx(0.4)
    await tracker.add("c", 2.0)  # a third key: the one spending least recently ("a") is forgotten
    assert await tracker.spent("a") == 0.0 and await tracker.spent("c") == 2.0
    assert tracker.seconds_until_reset() == pytest.approx(30.0)
    clock.now += 30  # exactly 00:00 UTC
    assert tracker.seconds_until_reset() == pytest.approx(86_400.0)
    assert await tracker.spent("c") == 0.0 and await tracker.add("b", 0.5) == 0.5
    assert list(tracker._local) == [("b", "2026-03-02")]  # yesterday's counts are dropped


def test_budgets_come_from_the_key_else_from_the_defaults() -> None:
    digest = hash_key(new_key())
    own = KeyRecord(name="own", hash=digest, budget_usd_per_day=2.5)
    defaults = RateLimitSection(budget_usd_per_day=1.0)
    auth = Authenticator(False, KeyStore([own]), defaults)
    assert auth.anonymous().budget_usd_per_day == 1.0
    with pytest.raises(ValueError, match="greater than 0"):
        KeyRecord(name="broke", hash=digest, budget_usd_per_day=0)
    assert (dollars(0.02), dollars(12.5), dollars(0), dollars(0.1 + 0.2)) == ("$0.02", "$12.5", "$0", "$0.3")


# -- over HTTP -----------------------------------------------------------------------------------
def priced_pool_spec(name: str) -> PoolSpec:
    """Two echo experts at $1000 per million tokens in and out: five words in, five out cost $0.01."""
    price = {"input_per_1m": 1000.0, "output_per_1m": 1000.0}
    experts = [
        {"name": expert, "backend": "echo", "model": "echo", "skills": [skill], "price": price}
        for expert, skill in (("a", "math"), ("b", "writing"))
    ]
    for expert in experts:
        expert["resources"] = {"num_cpus": 0}
    return parse_pool({"name": name, "roles": {"aggregator": "b"}, "experts": experts}, f"<test pool {name}>")


@pytest.fixture(scope="module")
async def priced_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(priced_pool_spec("budget"))
    await pool.start()
    yield pool
    await pool.shutdown()


FIVE_WORDS = [{"role": "user", "content": "one two three four five"}]


def client_for(server: ServerThread, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def metric(server: ServerThread, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
    return samples[name]


def test_a_key_is_refused_once_its_budget_cannot_hold_a_request(priced_pool: ExpertPool, redis_url: str) -> None:
    capped, free = new_key(), new_key()
    names = f"capped-{uuid.uuid4().hex[:8]}", f"free-{uuid.uuid4().hex[:8]}"
    keys = [
        {"name": names[0], "hash": hash_key(capped), "budget_usd_per_day": 0.03},
        {"name": names[1], "hash": hash_key(free)},
    ]
    config = ServiceConfig.model_validate({"redis": {"url": redis_url}, "auth": {"mode": "on", "keys": keys}})
    with ServerThread(create_app(orchestrator=Orchestrator(priced_pool), service=config)) as server:
        client = client_for(server, capped)
        # each request holds its worst case first: 9 prompt tokens (23 characters / 4 + one turn's 4) and 5 answer
        # tokens at $1000 per million = $0.014; it costs $0.01 once answered
        first = client.chat.completions.create(model="expert/a", messages=FIVE_WORDS, max_tokens=5)
        assert first.model_extra["moesaic"]["cost"] == pytest.approx(0.01)
        stream = client.chat.completions.create(model="expert/b", messages=FIVE_WORDS, stream=True, max_tokens=5)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == FIVE_WORDS[0]["content"]  # a streamed answer is charged as it ends
        with pytest.raises(openai.RateLimitError) as caught:  # $0.01 left cannot hold $0.014
            client.chat.completions.create(model="expert/a", messages=FIVE_WORDS, max_tokens=5)
        error = caught.value
        assert error.code == "budget_exceeded" and error.type == "insufficient_quota"
        assert f"API key {names[0]!r} has $0.01 of its $0.03 daily budget left" in error.message
        assert "this request may cost $0.014 (up to 1 model call, about 14 tokens" in error.message
        assert "resets at 00:00 UTC" in error.message
        retry = int(error.response.headers["retry-after"])
        assert 1 <= retry <= 86_400 and f"(in {retry} s)" in error.message
        assert error.body == error.response.json()["error"] and set(error.body) == {"message", "type", "param", "code"}
        for _ in range(3):  # the key without a budget is not affected, and nothing is counted for it
            assert client_for(server, free).chat.completions.create(model="expert/a", messages=FIVE_WORDS).choices
        with pytest.raises(openai.RateLimitError) as spent:  # spent in full: refused whatever the request's size
            raw_client = redis.Redis.from_url(redis_url, decode_responses=True)
            today_key = f"moesaic:spend:{names[0]}:{datetime.now(timezone.utc).date().isoformat()}"
            raw_client.incrbyfloat(today_key, 0.01)
            client.chat.completions.create(model="expert/a", messages=FIVE_WORDS, max_tokens=1)
        assert f"API key {names[0]!r} spent $0.03 of its $0.03 daily budget" in spent.value.message
        service = server.server.config.app.state.service
        today = datetime.now(timezone.utc).date().isoformat()
        raw = redis.Redis.from_url(redis_url, decode_responses=True)
        assert float(raw.get(f"moesaic:spend:{names[0]}:{today}")) == pytest.approx(0.03)
        assert raw.get(f"moesaic:spend:{names[1]}:{today}") is None
        assert service.spend.rejected == 2 and metric(server, "moesaic_budget_rejections_total") == 2.0


def test_the_default_budget_counts_pipeline_answers_but_not_cached_ones(priced_pool: ExpertPool) -> None:
    config = ServiceConfig.model_validate({"rate_limits": {"budget_usd_per_day": 5.0}})  # auth off: "anonymous"
    with ServerThread(create_app(orchestrator=Orchestrator(priced_pool), service=config)) as server:
        client = client_for(server, "unused")
        service = server.server.config.app.state.service
        answer = client.chat.completions.create(model="moesaic", messages=FIVE_WORDS, temperature=0)
        cost = answer.model_extra["moesaic"]["cost"]
        assert cost > 0 and asyncio.run(service.spend.spent("anonymous")) == pytest.approx(cost)
        cached = client.chat.completions.with_raw_response.create(model="moesaic", messages=FIVE_WORDS, temperature=0)
        assert cached.headers["x-moesaic-cache"] == "hit"
        assert asyncio.run(service.spend.spent("anonymous")) == pytest.approx(cost)  # a cached answer is free
        streamed: list[Any] = list(client.chat.completions.create(model="moesaic", messages=FIVE_WORDS, stream=True))
        final = next(chunk for chunk in streamed if chunk.model_extra.get("moesaic"))
        spent = asyncio.run(service.spend.spent("anonymous"))
        assert spent == pytest.approx(cost + final.model_extra["moesaic"]["cost"])


# -- unpriced experts ----------------------------------------------------------------------------------
def pricing_pool_spec() -> PoolSpec:
    """A hosted model LiteLLM has no price for, one it prices, one priced by the pool file, one self-hosted."""
    hosted = {"api_base": "http://127.0.0.1:9/v1", "api_key_env": "MOESAIC_TEST_FAKE_KEY"}
    experts = [
        {"name": "unpriced", "backend": "litellm", "model": "openai/house-model-7b", "options": hosted},
        {"name": "mapped", "backend": "litellm", "model": "openai/gpt-4.1-mini", "options": hosted},
        {
            "name": "declared",
            "backend": "litellm",
            "model": "openai/house-model-7b",
            "options": hosted,
            "price": {"input_per_1m": 0.5, "output_per_1m": 1.5},
        },
        {"name": "local", "backend": "echo", "model": "echo"},
    ]
    for expert in experts:
        expert["resources"] = {"num_cpus": 0}
    return parse_pool({"name": "pricing", "experts": experts}, "<test pool pricing>")


@pytest.fixture(scope="module")
async def pricing_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    os.environ["MOESAIC_TEST_FAKE_KEY"] = "sk-unused"  # the actors inherit it; no call reaches the address
    pool = ExpertPool(pricing_pool_spec())
    await pool.start()
    yield pool
    await pool.shutdown()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def serve_and_listen(pool: ExpertPool, config: ServiceConfig) -> tuple[ServerThread, Lines]:
    server = ServerThread(create_app(orchestrator=Orchestrator(pool), service=config))
    lines = Lines()
    logging.getLogger("uvicorn.error").addHandler(lines)  # after uvicorn's Config set its loggers up
    return server, lines


def test_unpriced_experts_are_named_at_start_and_in_the_model_list(pricing_pool: ExpertPool) -> None:
    config = ServiceConfig.model_validate({"rate_limits": {"budget_usd_per_day": 5.0}})
    server, lines = serve_and_listen(pricing_pool, config)
    with server:
        cards = {card["id"]: card for card in httpx.get(server.url + "/v1/models", timeout=10).json()["data"]}
    logging.getLogger("uvicorn.error").removeHandler(lines)
    warnings = [line for line in lines.lines if "have no price" in line]
    assert len(warnings) == 1
    assert "1 expert(s) have no price: unpriced (openai/house-model-7b)" in warnings[0]
    assert "mapped" not in warnings[0] and "declared" not in warnings[0]
    assert cards["expert/unpriced"]["pricing"] == {"source": "none", "input_per_1m": None, "output_per_1m": None}
    mapped = cards["expert/mapped"]["pricing"]
    assert mapped["source"] == "litellm_price_map" and mapped["input_per_1m"] == pytest.approx(0.4)
    assert mapped["output_per_1m"] == pytest.approx(1.6)
    declared = {"source": "pool_file", "input_per_1m": 0.5, "output_per_1m": 1.5}
    assert cards["expert/declared"]["pricing"] == declared
    assert cards["expert/local"]["pricing"] == {"source": "self_hosted", "input_per_1m": 0.0, "output_per_1m": 0.0}


def test_no_price_warning_without_budgets(pricing_pool: ExpertPool) -> None:
    server, lines = serve_and_listen(pricing_pool, ServiceConfig())
    with server:
        card = httpx.get(server.url + "/v1/models/expert/unpriced", timeout=10).json()
    logging.getLogger("uvicorn.error").removeHandler(lines)
    assert card["pricing"]["source"] == "none"  # still shown: budgets may be turned on later
    assert not [line for line in lines.lines if "have no price" in line]
