"""Issue 27's probes, rerun: every way in under the same key controls, bounded work per request, loopback safety.

Each test replays one finding of the security review over real uvicorn (echo experts priced at $1000 per million
tokens, a real redis-server where it matters) with the official clients, and expects the refusal or the bounded
cost the fix promises; each failed on the code before the fix. Where a row's evidence sits elsewhere:

| row | finding | here | also |
|---|---|---|---|
| 1 | MCP tools skip the key's controls | ``test_mcp_*``, ``test_standalone_*`` | test_mcp_mounted.py |
| 2 | invalid bodies journaled whole, not rate-limited | ``test_invalid_bodies_*``, ``test_the_in_process_*`` | |
| 3 | routing evaluation unbounded, unpermitted | ``test_routing_*``, ``test_a_parquet_*`` | test_routing_eval_limits |
| 4 | backtracking regexes on the event loop | ``test_pathological_*`` | test_extract_redos, test_pipeline_offload |
| 5 | grammar compilation unbounded | ``test_schemas_over_*`` | test_grammar_limits.py (the actor's side) |
| 6 | cross-site posts and DNS rebinding with auth off | ``test_loopback_*`` | |
| 7 | middlewares blind to root_path | ``test_under_a_path_prefix_*`` | test_serve_cluster.py (``serve run``) |
| 8 | the KubeRay render exposes Ray and inlines secrets | | test_serve_render.py |
| 9 | a dropped stream is charged $0 | ``test_a_dropped_stream_*`` | |
| 10 | moesaic.experts reaches experts the key may not call | ``test_named_experts_*`` | |
| 11 | /healthz shows endpoints and upstream errors | ``test_healthz_*`` | |
| 12 | budgets checked before, estimates without k and n | ``test_concurrent_*``, ``test_the_token_*`` | |
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import uvicorn
import yaml

from experts.config.pool_spec import PoolSpec, parse_pool
from experts.runtime.pool import ExpertPool
from orchestrator.integrations.mcp_endpoint import McpEndpoint
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.journal import JournalEntry, RequestJournal
from orchestrator.server.service.redis_link import RedisLink
from orchestrator.server.service.service_config import ServiceConfig
from tests.conftest import ServerThread, free_port

pytestmark = pytest.mark.ray
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
async def pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(security_pool_spec())
    await pool.start()
    yield pool
    await pool.shutdown()


def serve(pool: ExpertPool, config: dict[str, Any], mcp: bool = False) -> ServerThread:
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


# -- 1: MCP tools under the key's controls ----------------------------------------------------------------------
async def _mcp_call(url: str, key: str, tool: str, arguments: dict[str, Any]) -> Any:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url + "/mcp", headers={"Authorization": f"Bearer {key}"}) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool(tool, arguments)


def mcp_call(server: ServerThread, key: str, tool: str, **arguments: Any) -> Any:
    return asyncio.run(_mcp_call(server.url, key, tool, arguments))


def test_mcp_tools_answer_to_the_keys_models_max_tokens_and_rate(pool: ExpertPool, redis_url: str) -> None:
    only_math, _, config = keyed(redis_url, models=["expert/math"], requests_per_minute=2, max_tokens=16)
    with serve(pool, config, mcp=True) as server:
        refused = mcp_call(server, only_math, "ask", question="What is 12 * 7?", experts=["coder", "writer"])
        assert refused.isError and "may not use model 'moesaic'" in refused.content[0].text
        routed = mcp_call(server, only_math, "route", question="What is 12 * 7?")
        assert routed.isError and "may not use model 'moesaic'" in routed.content[0].text
        limited = mcp_call(server, only_math, "experts")  # the third call in a minute: over 2 per minute
        assert limited.isError and "2 requests per minute" in limited.content[0].text

    pipeline, name, config = keyed(redis_url, models=["moesaic", "expert/math"], max_tokens=16)
    with serve(pool, config, mcp=True) as server:
        too_long = mcp_call(server, pipeline, "ask", question="hi", experts=["math"], max_tokens=200)
        assert too_long.isError and f"max_tokens 200 is more than API key {name!r}'s max_tokens (16)" in (
            too_long.content[0].text
        )
        other = mcp_call(server, pipeline, "ask", question="hi", experts=["math", "coder"], max_tokens=8)
        assert other.isError and "may not use model 'expert/coder'" in other.content[0].text
        answered = mcp_call(server, pipeline, "ask", question="What is 12 * 7?", experts=["math"], max_tokens=8)
        assert not answered.isError and answered.structuredContent["answer"] == "What is 12 * 7?"
        entries = journal_of(server)
    asks = [entry for entry in entries if entry.surface == "mcp.ask" and entry.key_name == name]
    assert [entry.status for entry in asks] == [400, 403, 200]


async def test_mcp_ask_holds_and_settles_the_keys_budget(pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, budget_usd_per_day=0.02)
    with serve(pool, config, mcp=True) as server:
        # 7 prompt tokens (13 characters / 4 + one turn's 4) + 5 answer tokens at $1000 per million: $0.012 held
        answered = await _mcp_call(
            server.url, key, "ask", {"question": "What is 6 * 7", "experts": ["math"], "max_tokens": 5}
        )
        assert not answered.isError
        spent = spent_today(redis_url, name)
        assert spent == pytest.approx(answered.structuredContent["usage"]["cost"]) and spent > 0
        refused = await _mcp_call(
            server.url, key, "ask", {"question": "What is 6 * 7", "experts": ["math"], "max_tokens": 5}
        )
        assert refused.isError and "daily budget left, and this request may cost $0.012" in refused.content[0].text


def test_standalone_mcp_over_http_refuses_a_network_address_without_keys(tmp_path: Path) -> None:
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(security_pool_spec().document()), encoding="utf-8")
    command = [sys.executable, "-m", "orchestrator.cli", "mcp", "--pool", str(pool_file), "--transport", "http"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MOESAIC_CONFIG", None)
    done = subprocess.run(
        command + ["--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refusing to serve MCP on 0.0.0.0 without API keys" in done.stderr
    assert "moesaic keys create NAME" in done.stderr


# -- 2: invalid bodies ------------------------------------------------------------------------------------------
def test_invalid_bodies_are_rate_limited_first_and_journaled_short(pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, requests_per_minute=2)
    stream = f"moesaic:journal:{uuid.uuid4().hex}"
    config["journal"] = {"stream": stream}
    invalid = json.dumps({"model": "moesaic", "messages": [{"role": "user", "content": "x" * 1_000_000}], "n": 99})
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    with serve(pool, config) as server:
        url = server.url + "/v1/chat/completions"
        statuses = [httpx.post(url, content=invalid, headers=headers, timeout=30).status_code for _ in range(3)]
    assert statuses == [400, 400, 429]  # the third is over 2 a minute, however bad its body
    rows = redis.Redis.from_url(redis_url, decode_responses=True).xrange(stream)
    assert len(rows) == 3 and all(len(fields["entry"]) < 2_000 for _, fields in rows)  # 1 MB bodies, short records
    entries = [json.loads(fields["entry"]) for _, fields in rows]
    assert [entry["status"] for entry in entries] == [400, 400, 429]
    record = entries[0]["request"]["rejected_body"]
    assert record["bytes"] == len(invalid) and record["param"] == "n" and entries[0]["key_name"] == name
    assert entries[0]["request"]["model"] == "moesaic" and "xxxx" not in json.dumps(entries)


async def test_the_in_process_journal_is_bounded_in_bytes() -> None:
    journal = RequestJournal(RedisLink(None, None), memory_maxlen=1_000, memory_max_bytes=200_000)
    for number in range(40):
        body = {"messages": [{"role": "user", "content": "y" * 20_000}], "number": number}
        await journal.append(JournalEntry("r", "k", "moesaic", body, 200))
    kept = await journal.latest(1_000)
    assert journal.memory_bytes <= 200_000 and len(kept) < 40 and kept[-1].request["number"] == 39
    assert journal.dropped == 40 - len(kept)


# -- 3: routing evaluations need their own permission and count against the key --------------------------------
ROUTING_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "mmlu_pro_dev.parquet"


@pytest.fixture(scope="module")
def routing_table() -> str:
    """300 real MMLU-Pro questions and two models' outcomes, as base64 Parquet (the console's upload)."""
    import io

    import pandas as pd

    frame = pd.read_parquet(ROUTING_DATA).head(300)
    models = ("mathstral-7B", "gemma-7b")
    keep = ["question_id", "question", "options", "answer", "category", "src"]
    frame = frame[keep + [c for c in frame.columns if c.split("|")[0] in models and "|" in c]]
    sink = io.BytesIO()
    frame.to_parquet(sink)
    return base64.b64encode(sink.getvalue()).decode()


def test_routing_evaluation_needs_its_permission_and_counts_against_the_rate(
    pool: ExpertPool, routing_table: str
) -> None:
    plain, _, config = keyed(requests_per_minute=100)
    allowed, name = new_key(), f"eval-{uuid.uuid4().hex[:8]}"
    record = {"name": name, "hash": hash_key(allowed), "permissions": ["routing.evaluate"], "requests_per_minute": 1}
    config["auth"]["keys"].append(record)
    body = {"table": routing_table, "format": "parquet", "policy": "skills", "budgets": [1.0]}
    with serve(pool, config) as server:
        url = server.url + "/v1/routing/evaluate"
        refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {plain}"}, timeout=120)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
        assert "routing.evaluate" in refused.json()["error"]["message"]
        answered = httpx.post(url, json=body, headers={"Authorization": f"Bearer {allowed}"}, timeout=120)
        assert answered.status_code == 200, answered.text
        again = httpx.post(url, json=body, headers={"Authorization": f"Bearer {allowed}"}, timeout=120)
        assert again.status_code == 429 and "1 requests per minute" in again.json()["error"]["message"]
        entries = [e for e in journal_of(server) if e.surface == "routing.evaluate"]
    assert [e.status for e in entries] == [403, 200, 429]
    assert all("table" not in e.request for e in entries)  # the table itself is never journaled


def test_a_parquet_table_that_expands_past_the_row_cap_is_refused_from_its_metadata(pool: ExpertPool) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 2_000_000  # compresses to a few kilobytes: a decompression bomb
    table = pa.table({"question": pa.array(["q"] * rows), "a|correct": pa.array([True] * rows)})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    assert len(sink.getvalue()) < 100_000
    body = {"table": base64.b64encode(sink.getvalue()).decode(), "format": "parquet"}
    with serve(pool, {}) as server:
        started = time.monotonic()
        refused = httpx.post(server.url + "/v1/routing/evaluate", json=body, timeout=60)
    assert refused.status_code == 413 and "routing_evaluation.max_rows" in refused.json()["error"]["message"]
    assert time.monotonic() - started < 10


# -- 4: pathological texts --------------------------------------------------------------------------------------
def test_pathological_answers_and_questions_are_aggregated_in_bounded_time(pool: ExpertPool) -> None:
    options = {"experts": ["math", "coder"], "strategy": "vote"}
    with serve(pool, {}) as server:
        client = client_for(server)
        started = time.monotonic()
        # lettered options make the vote read choices: each answer is "answer", 2,000 spaces and "x"
        choice = [{"role": "user", "content": "pathological: pick one\n(A) yes\n(B) no"}]
        answer = client.chat.completions.create(model="moesaic", messages=choice, extra_body={"moesaic": options})
        assert answer.choices[0].message.content == PATHOLOGICAL_ANSWER
        assert time.monotonic() - started < 5  # 21 s with the old pattern
        started = time.monotonic()
        spaces = [{"role": "user", "content": "tell me\n" + " " * 12_000 + "\n" + " " * 12_000 + "done"}]
        client.chat.completions.create(model="moesaic", messages=spaces, extra_body={"moesaic": options})
        assert time.monotonic() - started < 5  # the option-line pattern was quadratic in the question's length


# -- 5: schemas at the edge -------------------------------------------------------------------------------------
def test_schemas_over_the_limits_are_refused_naming_the_limit(pool: ExpertPool) -> None:
    wide = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(900)}}
    response_format = {"type": "json_schema", "json_schema": {"name": "wide", "schema": wide}}
    with serve(pool, {}) as server:
        client = client_for(server)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="expert/math", messages=HELLO, response_format=response_format)
        error = caught.value
        assert error.code == "schema_too_large" and error.param == "response_format"
        assert "limits.schema_max_properties" in error.message and "256" in error.message
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
        tools = [
            {**tool, "function": {**tool["function"], "name": f"f{i}", "description": "d" * 900}} for i in range(100)
        ]
        with pytest.raises(openai.BadRequestError) as too_many:
            client.chat.completions.create(model="expert/math", messages=HELLO, tools=tools)
        assert too_many.value.param == "tools" and "limits.tools_max_bytes" in too_many.value.message
        nested: dict[str, Any] = {"type": "string"}
        for _ in range(12):
            nested = {"type": "object", "properties": {"inner": nested}}
        deep = {"type": "json_schema", "json_schema": {"name": "deep", "schema": nested}}
        with pytest.raises(openai.BadRequestError) as too_deep:
            client.chat.completions.create(model="expert/math", messages=HELLO, response_format=deep)
        assert "limits.schema_max_depth" in too_deep.value.message
        # 60 bytes whose nested counted repeats took minutes to compile into a grammar
        regex = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(([a-z]{1,10}){1,10}){1,3}$"}}}
        nested_repeats = {"type": "json_schema", "json_schema": {"name": "regex", "schema": regex}}
        with pytest.raises(openai.BadRequestError) as too_costly:
            client.chat.completions.create(model="expert/math", messages=HELLO, response_format=nested_repeats)
        assert "limits.schema_max_pattern_cost" in too_costly.value.message


# -- 6: loopback safety with auth off ---------------------------------------------------------------------------
def test_loopback_without_keys_refuses_cross_site_and_rebinding_requests(pool: ExpertPool) -> None:
    body = json.dumps({"model": "expert/math", "messages": HELLO})
    with serve(pool, {}) as server:
        url = server.url + "/v1/chat/completions"
        bare = httpx.post(url, content=body, timeout=30)  # a page's fetch() with a Blob body sends no type
        assert bare.status_code == 415 and bare.json()["error"]["code"] == "unsupported_media_type"
        form = httpx.post(url, content=body, headers={"content-type": "text/plain"}, timeout=30)
        assert form.status_code == 415
        json_type = {"content-type": "application/json"}
        cross = httpx.post(url, content=body, headers={**json_type, "origin": "http://evil.example"}, timeout=30)
        assert cross.status_code == 403 and cross.json()["error"]["code"] == "origin_not_allowed"
        rebound = httpx.post(url, content=body, headers={**json_type, "host": "attacker.example:8000"}, timeout=30)
        assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "host_not_allowed"
        read = httpx.get(server.url + "/v1/pool", headers={"host": "attacker.example"}, timeout=30)
        assert read.status_code == 421  # a rebound page cannot read the pool either
        # the console is same-origin: its page loads and its posts pass
        assert httpx.get(server.url + "/console", timeout=30).status_code == 200
        own = httpx.post(url, content=body, headers={**json_type, "origin": server.url}, timeout=30)
        assert own.status_code == 200 and own.json()["choices"][0]["message"]["content"] == HELLO[0]["content"]
    listed = {"http": {"allowed_hosts": ["api.internal"], "allowed_origins": ["https://app.example"]}}
    with serve(pool, listed) as server:
        headers = {"content-type": "application/json", "host": "api.internal", "origin": "https://app.example"}
        assert httpx.post(server.url + "/v1/chat/completions", content=body, headers=headers, timeout=30).is_success


# -- 7: a path prefix -------------------------------------------------------------------------------------------
class PrefixedServer(ServerThread):
    """uvicorn with ``--root-path /p``, as behind a proxy (or Ray Serve's route_prefix) that mounts the app there."""

    def _prepare(self) -> None:
        import threading

        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", root_path="/p")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)


def test_under_a_path_prefix_keys_and_request_slots_still_apply(pool: ExpertPool) -> None:
    key, _, config = keyed()
    config["limits"] = {"max_concurrent": 1, "max_queue": 0}
    app = create_app(orchestrator=Orchestrator(pool), service=ServiceConfig.model_validate(config))
    with PrefixedServer(app) as server:
        # the proxy stripped /p: uvicorn hands the app path /p/v1/pool under root_path /p, which routes as /v1/pool
        assert httpx.get(server.url + "/v1/pool", timeout=30).status_code == 401  # was 200 without a key
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(server.url + "/v1/pool", headers=auth, timeout=30).status_code == 200
        # streamed, "slow" writes a word every 0.3 s: the request holds its slot for about two seconds
        slow = {"model": "expert/slow", "messages": [{"role": "user", "content": "a b c d e f g h"}], "stream": True}
        url = server.url + "/v1/chat/completions"
        with ThreadPoolExecutor(1) as threads:
            running = threads.submit(httpx.post, url, json=slow, headers=auth, timeout=60)
            deadline = time.monotonic() + 10
            while server.server.config.app.state.service.limits.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            second = httpx.post(url, json=slow, headers=auth, timeout=60)  # the one slot is taken
            assert second.status_code == 429 and second.json()["error"]["code"] == "server_overloaded"
            assert running.result().status_code == 200


# -- 9: a dropped stream is billed for the calls that ran -------------------------------------------------------
def test_a_dropped_stream_is_charged_for_the_calls_that_ran(pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, budget_usd_per_day=50.0)
    options = {"experts": ["math", "slow"], "events": True}
    question = [{"role": "user", "content": " ".join(f"w{i}" for i in range(40))}]
    with serve(pool, config) as server:
        body = {"model": "moesaic", "messages": question, "stream": True, "moesaic": options, "max_tokens": 40}
        headers = {"Authorization": f"Bearer {key}"}
        answered_cost = None
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60) as live:
            for line in live.iter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:]).get("moesaic") or {}
                if event.get("event") == "answer" and event.get("expert") == "math":
                    answered_cost = event["call"]["cost"]
                    break  # the client goes away while "slow" still writes
        assert answered_cost is not None and answered_cost > 0
        deadline = time.monotonic() + 10
        while spent_today(redis_url, name) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        spent = spent_today(redis_url, name)
    # math's whole call, plus what slow had written (estimated): more than math alone, far less than the hold
    assert answered_cost <= spent < 1.0
    dropped = [e for e in journal_of(server) if e.key_name == name]
    assert dropped and dropped[-1].status == 499


# -- 10: named experts ------------------------------------------------------------------------------------------
def test_named_experts_are_checked_as_expert_models(pool: ExpertPool) -> None:
    key, name, config = keyed(models=["moesaic"])
    with serve(pool, config) as server:
        client = client_for(server, key)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(
                model="moesaic", messages=HELLO, extra_body={"moesaic": {"experts": ["coder"]}}
            )
        assert caught.value.param == "moesaic.experts" and caught.value.code == "model_not_allowed"
        assert f"API key {name!r} may not use model 'expert/coder'" in caught.value.message
        assert client.chat.completions.create(model="moesaic", messages=HELLO).choices  # routed: the key may


# -- 11: what /healthz shows without a key ----------------------------------------------------------------------
@pytest.fixture(scope="module")
async def hosted_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    os.environ["MOESAIC_TEST_FAKE_KEY"] = "sk-unused"  # the actors inherit it; no call reaches the address
    spec = parse_pool(
        {
            "name": "hosted",
            "experts": [
                {
                    "name": "hosted",
                    "backend": "litellm",
                    "model": "openai/house-model",
                    "options": {"api_base": "http://10.9.8.7:4000/v1", "api_key_env": "MOESAIC_TEST_FAKE_KEY"},
                    "resources": {"num_cpus": 0},
                },
                {
                    "name": "broken",
                    "backend": "echo",
                    "model": "echo",
                    "options": {"fail_load": True},
                    "resources": {"num_cpus": 0},
                },
            ],
        },
        "<test pool hosted>",
    )
    pool = ExpertPool(spec)
    await pool.start()
    yield pool
    await pool.shutdown()


def test_healthz_carries_no_endpoint_and_no_upstream_error_text(hosted_pool: ExpertPool) -> None:
    key, _, config = keyed()
    app = create_app(orchestrator=Orchestrator(hosted_pool), service=ServiceConfig.model_validate(config))
    with ServerThread(app) as server:
        public = httpx.get(server.url + "/healthz", timeout=30)
        text = public.text
        assert "10.9.8.7" not in text and "api_base" not in text and "fail_load" not in text
        experts = public.json()["experts"]
        assert experts["hosted"]["state"] == "ready" and experts["broken"]["state"] == "failed"
        assert "GET /v1/pool" in experts["broken"]["error"]
        pool_view = httpx.get(server.url + "/v1/pool", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert "fail_load" in pool_view.text  # the detail is there, behind a key


# -- 12: budgets under concurrency, estimates that count k and n -------------------------------------------------
def test_concurrent_requests_cannot_overspend_a_budget(pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, budget_usd_per_day=0.05)
    # $0.014 held each, $0.01 spent each; streamed, "slow" takes over a second, so all six overlap
    body = {"model": "expert/slow", "messages": HELLO, "max_tokens": 5, "stream": True}
    with serve(pool, config) as server:
        url, headers = server.url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}
        with ThreadPoolExecutor(6) as threads:
            replies = list(threads.map(lambda _: httpx.post(url, json=body, headers=headers, timeout=60), range(6)))
        spent = spent_today(redis_url, name)
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses.count(200) == 3 and statuses.count(429) == 3  # three holds of $0.014 fit in $0.05, not four
    assert spent == pytest.approx(0.03) and spent <= 0.05
    refusal = next(reply for reply in replies if reply.status_code == 429).json()["error"]
    assert refusal["code"] == "budget_exceeded" and "may cost $0.014" in refusal["message"]


def test_the_token_estimate_counts_every_expert_the_aggregator_and_n(pool: ExpertPool) -> None:
    key, _, config = keyed(tokens_per_minute=1_000)
    options = {"experts": ["math", "coder"], "aggregator_max_tokens": 20}
    with serve(pool, config) as server:
        client = client_for(server, key)
        # one run: 2 experts x (9 + 100) + the aggregator's (9 + 2 x 100) + 20 = 447 tokens held, settled to its use
        first = client.chat.completions.create(
            model="moesaic", messages=HELLO, max_tokens=100, extra_body={"moesaic": options}
        )
        assert first.choices
        with pytest.raises(openai.RateLimitError) as caught:  # three runs: 1,341 tokens, more than the minute holds
            client.chat.completions.create(
                model="moesaic", messages=HELLO, max_tokens=100, n=3, extra_body={"moesaic": options}
            )
        assert "up to 9 model calls, about 1341 tokens" in caught.value.message  # old estimate: 3 x (5 + 100)
        single = client.chat.completions.create(
            model="moesaic", messages=HELLO, max_tokens=100, extra_body={"moesaic": options}
        )
        assert single.choices
