"""What issue 27's security tests share: a priced echo pool, servers with keyed service configs, and readers of
what the server kept (spend in Redis, the journal).

The tests replay each finding of the security review over real uvicorn (echo experts priced at $1000 per million
tokens, a real redis-server where it matters) with the official clients and expect the refusal or the bounded cost
the fix promises; each failed on the code before the fix. "keys" is test_security_keys.py (every way in under the
same key controls), "bounds" test_security_bounds.py (bounded work per request, what a caller without a key sees).

| row | finding | tests | also |
|---|---|---|---|
| 1 | MCP tools skip the key's controls | keys ``test_mcp_*``, ``test_standalone_*`` | test_mcp_mounted.py |
| 2 | invalid bodies journaled whole, not rate-limited | keys ``test_invalid_bodies_*``, ... | |
| 3 | routing evaluation unbounded, unpermitted | keys ``test_routing_*``; bounds ``test_a_parquet_*`` | eval_limits |
| 4 | backtracking regexes on the event loop | bounds ``test_pathological_*`` | test_extract_redos |
| 5 | grammar compilation unbounded | bounds ``test_schemas_over_*`` | test_grammar_limits.py |
| 6 | cross-site posts and DNS rebinding with auth off | bounds ``test_loopback_*`` | |
| 7 | middlewares blind to root_path | bounds ``test_under_a_path_prefix_*`` | test_serve_cluster.py |
| 8 | the KubeRay render exposes Ray and inlines secrets | | test_serve_render.py |
| 9 | a dropped stream is charged $0 | keys ``test_a_dropped_stream_*`` | |
| 10 | moesaic.experts reaches experts the key may not call | keys ``test_named_experts_*`` | |
| 11 | /healthz shows endpoints and upstream errors | bounds ``test_healthz_*`` | |
| 12 | budgets checked before, estimates without k and n | keys ``test_concurrent_*``, ... | |
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
import redis

from experts.config._pool_spec import PoolSpec, parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.frameworks.mcp_endpoint import McpEndpoint
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.journal import JournalEntry
from orchestrator.server.service.service_config import ServiceConfig

if TYPE_CHECKING:
    from tests.conftest import ServerThread

PRICE = {"input_per_1m": 1000.0, "output_per_1m": 1000.0}
PATHOLOGICAL_ANSWER = "answer" + " " * 2000 + "x"  # took 21 s in extract_choice's old pattern
HELLO = [{"role": "user", "content": "one two three four five"}]


def security_pool_spec() -> PoolSpec:
    """Four priced echo experts; ``slow`` streams a word every 0.3 s; all of them answer a question holding the
    word "pathological" with ``PATHOLOGICAL_ANSWER``."""
    replies = {"pathological": PATHOLOGICAL_ANSWER}
    experts: list[dict[str, Any]] = [
        {"name": "math", "skills": ["math"], "options": {"replies": replies}},
        {"name": "coder", "skills": ["code"], "options": {"replies": replies}},
        {"name": "writer", "skills": ["writing"], "options": {"replies": replies}},
        {"name": "slow", "skills": ["general_knowledge"], "options": {"piece_delay_s": 0.3}},
    ]
    for expert in experts:
        expert.update(backend="echo", model="echo", price=PRICE, resources={"num_cpus": 0})
    return parse_pool(
        {"name": "security", "roles": {"aggregator": "writer"}, "experts": experts}, "<test pool security>"
    )


@pytest.fixture(scope="module")
async def security_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    """The priced echo pool (tests/conftest.py imports this fixture, so each security module gets its own)."""
    pool = ExpertPool(security_pool_spec())
    await pool.start()
    yield pool
    await pool.shutdown()


def serve(pool: ExpertPool, config: dict[str, Any], mcp: bool = False) -> ServerThread:
    from tests.conftest import ServerThread  # here: conftest imports this module for its fixture

    service = ServiceConfig.model_validate(config)
    plugins = [McpEndpoint("127.0.0.1")] if mcp else []
    return ServerThread(create_app(orchestrator=Orchestrator(pool), service=service, plugins=plugins))


def keyed(redis_url: str | None = None, **record: Any) -> tuple[str, str, dict[str, Any]]:
    """A fresh key, its name, and a service config with auth on holding it with ``record``'s limits."""
    key, name = new_key(), f"k-{uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {"auth": {"mode": "on", "keys": [{"name": name, "hash": hash_key(key), **record}]}}
    if redis_url is not None:
        config["redis"] = {"url": redis_url}
    return key, name, config


def client_for(server: ServerThread, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def spent_today(redis_url: str, name: str) -> float:
    """A key's spend today as the service keeps it in Redis (read here, not through the server's own client)."""
    from datetime import datetime, timezone

    day = datetime.now(timezone.utc).date().isoformat()
    return float(redis.Redis.from_url(redis_url, decode_responses=True).get(f"moesaic:spend:{name}:{day}") or 0.0)


def journal_of(server: ServerThread) -> list[JournalEntry]:
    """The server's journal: its Redis stream (read here, with a client of this thread's own), else its deque."""
    service = server.server.config.app.state.service
    if service.link.client is None:
        return asyncio.run(service.journal.latest(1000))
    rows = redis.Redis.from_url(service.link.url, decode_responses=True).xrange(service.journal.stream)
    return [JournalEntry.from_json(fields["entry"], entry_id) for entry_id, fields in rows]
