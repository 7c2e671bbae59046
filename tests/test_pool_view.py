"""``GET /v1/pool``: every expert's state, breaker, queues, restarts and usage in one JSON document."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone

import httpx
import pytest

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import CallRecord
from orchestrator.server.api.app import create_app
from orchestrator.server.observability.daily_usage import DailyUsage, UsageTally
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.service_config import ServiceConfig
from tests.conftest import ServerThread, echo_pool_spec

pytestmark = pytest.mark.ray
KEY = new_key()


@pytest.fixture(scope="module")
async def pools(ray_session: None) -> AsyncIterator[tuple[ExpertPool, ExpertPool]]:
    working, broken = ExpertPool(echo_pool_spec("pool-view")), ExpertPool(echo_pool_spec("broken", fail_load=True))
    await working.start()
    await broken.start()
    yield working, broken
    await working.shutdown()
    await broken.shutdown()


@pytest.fixture(scope="module")
def servers(pools: tuple[ExpertPool, ExpertPool]) -> Iterator[tuple[ServerThread, ServerThread]]:
    guarded = ServiceConfig.model_validate({"auth": {"mode": "on", "keys": [{"name": "k", "hash": hash_key(KEY)}]}})
    working, broken = pools
    with ServerThread(create_app(orchestrator=Orchestrator(working), service=guarded)) as one:
        with ServerThread(create_app(orchestrator=Orchestrator(broken))) as two:
            yield one, two


def test_the_pool_view_counts_each_experts_calls(servers: tuple[ServerThread, ServerThread]) -> None:
    server, _ = servers
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(server.url + "/v1/pool").status_code == 401  # behind the keys, like the rest of /v1
    before = {e["name"]: e for e in httpx.get(server.url + "/v1/pool", headers=auth).json()["experts"]}
    assert set(before) == {"a", "b"}
    assert before["a"] | {"state": "ready", "healthy": True, "breaker": "closed", "backend": "echo"} == before["a"]
    body = {"model": "moesaic", "messages": [{"role": "user", "content": "one two three"}]}
    body["moesaic"] = {"experts": ["a", "b"], "strategy": "vote"}
    assert httpx.post(server.url + "/v1/chat/completions", json=body, headers=auth, timeout=30).status_code == 200
    view = httpx.get(server.url + "/v1/pool", headers=auth).json()
    assert view["pool"] == "pool-view"
    after = {e["name"]: e for e in view["experts"]}
    for name in ("a", "b"):
        for window in ("usage", "today"):  # since start, and since 00:00 UTC (view["day"])
            assert after[name][window]["calls"] == before[name][window]["calls"] + 1
            assert after[name][window]["completion_tokens"] == before[name][window]["completion_tokens"] + 3
    assert view["day"] == datetime.now(timezone.utc).date().isoformat()


def test_a_failed_expert_shows_its_state_and_error(servers: tuple[ServerThread, ServerThread]) -> None:
    _, broken = servers
    experts = httpx.get(broken.url + "/v1/pool").json()["experts"]
    assert {e["state"] for e in experts} == {"failed"} and not any(e["healthy"] for e in experts)
    assert all(e["error"] for e in experts)
    assert "/v1/pool" in httpx.get(broken.url + "/openapi.json").json()["paths"]


def test_todays_usage_starts_again_at_midnight_utc() -> None:
    now = [datetime(2026, 12, 5, 23, 59, tzinfo=timezone.utc).timestamp()]
    today = DailyUsage(clock=lambda: now[0])
    today.add([CallRecord("a", "expert", 10, 5, 0.01, 0.2), CallRecord.failure("a", "expert", "boom", 0.1)])
    assert today.snapshot() == ("2026-12-05", {"a": UsageTally(10, 5, 0.01, calls=1, failed_calls=1)})
    now[0] += 120  # 00:01 the next day
    assert today.snapshot() == ("2026-12-06", {})
    today.add([CallRecord("b", "aggregator", 1, 1, 0.0, 0.1)])
    assert today.snapshot()[1] == {"b": UsageTally(1, 1, 0.0, calls=1)}
