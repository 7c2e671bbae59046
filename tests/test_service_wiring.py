"""The store helper's modules wired into the app: the response cache (x-moesaic-cache), the journal, rate
limits shared by two app instances through one Redis, token estimates settled with real usage, and the
service config reaching the app from a file. Real uvicorn, echo experts, a real redis-server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.redis_link import RedisUnavailable
from orchestrator.server.service.service_config import ServiceConfig
from orchestrator.server.service.service_state import build_service_state
from orchestrator.server.settings import ServeSettings
from tests.conftest import ServerThread, echo_pool_spec, free_port

ASK = {"model": "expert/a", "messages": [{"role": "user", "content": "cache me if you can"}], "temperature": 0}


@pytest.fixture(scope="module")
async def echo_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("gate-wiring"))
    await pool.start()
    yield pool
    await pool.shutdown()


def serve(pool: ExpertPool, config: dict[str, Any] | None = None) -> ServerThread:
    service = ServiceConfig.model_validate(config or {})
    return ServerThread(create_app(orchestrator=Orchestrator(pool), service=service))


def service_of(server: ServerThread) -> Any:
    return server.server.config.app.state.service


def requests_generated(server: ServerThread, expert: str) -> int:
    return int(httpx.get(server.url + "/healthz", timeout=10).json()["experts"][expert]["requests"])


# -- the response cache --------------------------------------------------------------------------
def test_a_repeated_deterministic_request_is_answered_from_the_cache(echo_pool: ExpertPool) -> None:
    with serve(echo_pool) as server:
        url = server.url + "/v1/chat/completions"
        generated = requests_generated(server, "a")
        first = httpx.post(url, json=ASK, timeout=30)
        second = httpx.post(url, json={**ASK, "temperature": 0.0, "user": "someone else"}, timeout=30)
        assert first.status_code == second.status_code == 200
        assert (first.headers["x-moesaic-cache"], second.headers["x-moesaic-cache"]) == ("miss", "hit")
        assert second.json()["choices"] == first.json()["choices"] and second.headers["x-moesaic-experts"] == "a"
        assert requests_generated(server, "a") == generated + 1  # the second never reached the expert
        bypassed = httpx.post(url, json=ASK, headers={"Cache-Control": "no-cache"}, timeout=30)
        assert bypassed.headers["x-moesaic-cache"] == "bypass" and requests_generated(server, "a") == generated + 2
        warm = httpx.post(url, json={**ASK, "temperature": 0.7}, timeout=30)  # not deterministic: never cached
        streamed = httpx.post(url, json={**ASK, "stream": True}, timeout=30)
        assert warm.headers["x-moesaic-cache"] == streamed.headers["x-moesaic-cache"] == "bypass"
        cache = service_of(server).cache
        assert (cache.hits, cache.misses, cache.bypassed, cache.stores) == (1, 1, 1, 1)
        journal = asyncio.run(service_of(server).journal.latest(10))
        assert [entry.cache_hit for entry in journal] == [False, True, False, False, False]


def test_the_cache_is_shared_through_redis_and_scoped_to_the_pool(echo_pool: ExpertPool, redis_url: str) -> None:
    config = {"redis": {"url": redis_url}}
    body = {**ASK, "messages": [{"role": "user", "content": f"shared {uuid.uuid4().hex}"}]}
    with serve(echo_pool, config) as one, serve(echo_pool, config) as two:
        assert service_of(one).redis_status == "connected"
        missed = httpx.post(one.url + "/v1/chat/completions", json=body, timeout=30)
        hit = httpx.post(two.url + "/v1/chat/completions", json=body, timeout=30)
        assert (missed.headers["x-moesaic-cache"], hit.headers["x-moesaic-cache"]) == ("miss", "hit")
        assert hit.json()["choices"][0]["message"]["content"] == body["messages"][0]["content"]
    assert service_of(one).cache_scope == service_of(two).cache_scope


# -- the journal ---------------------------------------------------------------------------------
def test_every_chat_request_is_journaled_with_its_request_id(echo_pool: ExpertPool, redis_url: str) -> None:
    stream = f"moesaic:journal:{uuid.uuid4().hex}"
    with serve(echo_pool, {"redis": {"url": redis_url}, "journal": {"stream": stream}}) as server:
        url = server.url + "/v1/chat/completions"
        ok = httpx.post(url, json={**ASK, "temperature": 0.5}, headers={"x-request-id": "req-test-1"}, timeout=30)
        unknown = httpx.post(url, json={**ASK, "model": "nope"}, timeout=30)
        invalid = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}, timeout=30)
        streamed = httpx.post(url, json={**ASK, "stream": True, "stream_options": {"include_usage": True}}, timeout=30)
        assert [r.status_code for r in (ok, unknown, invalid, streamed)] == [200, 404, 400, 200]
    rows = redis.Redis.from_url(redis_url, decode_responses=True).xrange(stream)
    entries = [json.loads(fields["entry"]) for _, fields in rows]
    assert [entry["status"] for entry in entries] == [200, 404, 400, 200]
    first, missing, broken, last = entries
    assert first["request_id"] == "req-test-1" and first["key_name"] == "anonymous" and first["model"] == "expert/a"
    assert first["response"]["choices"][0]["message"]["content"] == "cache me if you can"
    assert first["request"]["temperature"] == 0.5 and first["duration_ms"] > 0
    assert missing["response"] is None and "does not exist" in missing["error"] and missing["model"] == "nope"
    # refused before its work: a short record of the body (size, digest, why), never the body itself
    assert broken["request"]["rejected_body"]["bytes"] == len(b"{not json") and "not valid JSON" in broken["error"]
    assert broken["request"]["rejected_body"]["code"] == "invalid_json" and broken["surface"] == "chat.completions"
    assert last["response"]["choices"][0]["message"]["content"] == "cache me if you can"
    assert last["response"]["usage"]["total_tokens"] > 0 and last["request"]["stream"] is True
    assert all(entry["request_id"].startswith("req-") for entry in entries)


# -- rate limits ---------------------------------------------------------------------------------
def test_two_app_instances_share_a_keys_rate_limit_through_redis(echo_pool: ExpertPool, redis_url: str) -> None:
    key, name = new_key(), f"shared-{uuid.uuid4().hex[:8]}"
    config = {
        "redis": {"url": redis_url},
        "auth": {"mode": "on", "keys": [{"name": name, "hash": hash_key(key), "requests_per_minute": 3}]},
    }
    with serve(echo_pool, config) as one, serve(echo_pool, config) as two:
        clients = [openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0, timeout=30) for s in (one, two)]
        messages = [{"role": "user", "content": "count me"}]
        for client in (clients[0], clients[1], clients[0]):
            assert client.chat.completions.create(model="expert/a", messages=messages).choices
        with pytest.raises(openai.RateLimitError) as caught:
            clients[1].chat.completions.create(model="expert/a", messages=messages)
        assert "3 requests per minute" in caught.value.message
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert service_of(two).rate_limiter.rejected == 1 and service_of(one).rate_limiter.rejected == 0


def test_token_estimates_are_settled_with_the_real_usage(echo_pool: ExpertPool) -> None:
    # 100 tokens a minute; each request is estimated at its max_tokens (60) but uses about 10
    with serve(echo_pool, {"rate_limits": {"tokens_per_minute": 100}}) as server:
        url = server.url + "/v1/chat/completions"
        body = {"model": "expert/b", "messages": [{"role": "user", "content": "few words"}], "max_tokens": 60}
        statuses = [httpx.post(url, json=body, timeout=30).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]  # without settling, the second would already exceed 100
        too_big = httpx.post(url, json={**body, "max_tokens": 95}, timeout=30)
        assert too_big.status_code == 429 and too_big.json()["error"]["type"] == "tokens"
        assert "100 tokens per minute" in too_big.json()["error"]["message"]


# -- the config reaching the app -----------------------------------------------------------------
def test_the_settings_config_file_configures_the_app(echo_pool: ExpertPool, tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text("limits:\n  max_tokens: 12\ncache:\n  enabled: false\n")
    settings = ServeSettings(config=str(path))
    with ServerThread(create_app(settings, orchestrator=Orchestrator(echo_pool))) as server:
        url = server.url + "/v1/chat/completions"
        over = httpx.post(url, json={**ASK, "max_tokens": 13}, timeout=30)
        assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"
        assert [httpx.post(url, json=ASK, timeout=30).headers["x-moesaic-cache"] for _ in range(2)] == ["bypass"] * 2
    assert ServeSettings.from_env().config is None


async def test_the_start_up_line_says_whether_auth_is_on_and_where_the_stores_live(redis_url: str) -> None:
    connected = await build_service_state(ServiceConfig.model_validate({"redis": {"url": redis_url}}), "0.0.0.0", "p")
    line = await connected.summary()
    assert "auth ON (0 API keys, none yet: `moesaic keys create NAME`)" in line and "Redis connected" in line
    await connected.close()
    local = await build_service_state(ServiceConfig(), "127.0.0.1", "p")
    assert "auth OFF" in await local.summary() and "no Redis configured" in await local.summary()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    fallback = await build_service_state(ServiceConfig.model_validate({"redis": {"url": nowhere}}), "::1", "p")
    assert "Redis unavailable (fallback: " in await fallback.summary()
    await fallback.close()
    with pytest.raises(RedisUnavailable, match="redis.required: false"):
        await build_service_state(ServiceConfig.model_validate({"redis": {"url": nowhere, "required": True}}), "", "p")
