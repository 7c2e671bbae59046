"""Issue 27: every way in under the same key controls (rows 1, 2, 3, 9, 10 and 12 of the table in
``tests/security_setup.py``): MCP tools, invalid bodies, routing evaluations, dropped streams, named experts,
budgets and token estimates."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from experts.runtime._pool import ExpertPool
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.journal import JournalEntry, RequestJournal
from orchestrator.server.service.redis_link import RedisLink
from tests.conftest import ServerThread, free_port
from tests.security_setup import (
    HELLO,
    client_for,
    journal_of,
    keyed,
    security_pool_spec,
    serve,
    spent_today,
)

pytestmark = pytest.mark.ray


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


def test_mcp_tools_answer_to_the_keys_models_max_tokens_and_rate(security_pool: ExpertPool, redis_url: str) -> None:
    only_math, _, config = keyed(redis_url, models=["expert/math"], requests_per_minute=2, max_tokens=16)
    with serve(security_pool, config, mcp=True) as server:
        refused = mcp_call(server, only_math, "ask", question="What is 12 * 7?", experts=["coder", "writer"])
        assert refused.isError and "may not use model 'moesaic'" in refused.content[0].text
        routed = mcp_call(server, only_math, "route", question="What is 12 * 7?")
        assert routed.isError and "may not use model 'moesaic'" in routed.content[0].text
        limited = mcp_call(server, only_math, "experts")  # the third call in a minute: over 2 per minute
        assert limited.isError and "2 requests per minute" in limited.content[0].text

    pipeline, name, config = keyed(redis_url, models=["moesaic", "expert/math"], max_tokens=16)
    with serve(security_pool, config, mcp=True) as server:
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


async def test_mcp_ask_holds_and_settles_the_keys_budget(security_pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, budget_usd_per_day=0.02)
    with serve(security_pool, config, mcp=True) as server:
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
def test_invalid_bodies_are_rate_limited_first_and_journaled_short(security_pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, requests_per_minute=2)
    stream = f"moesaic:journal:{uuid.uuid4().hex}"
    config["journal"] = {"stream": stream}
    invalid = json.dumps({"model": "moesaic", "messages": [{"role": "user", "content": "x" * 1_000_000}], "n": 99})
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    with serve(security_pool, config) as server:
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
    security_pool: ExpertPool, routing_table: str
) -> None:
    plain, _, config = keyed(requests_per_minute=100)
    allowed, name = new_key(), f"eval-{uuid.uuid4().hex[:8]}"
    record = {"name": name, "hash": hash_key(allowed), "permissions": ["routing.evaluate"], "requests_per_minute": 1}
    config["auth"]["keys"].append(record)
    body = {"table": routing_table, "format": "parquet", "policy": "skills", "budgets": [1.0]}
    with serve(security_pool, config) as server:
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


# -- 9: a dropped stream is billed for the calls that ran -------------------------------------------------------
def test_a_dropped_stream_is_charged_for_the_calls_that_ran(security_pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, budget_usd_per_day=50.0)
    options = {"experts": ["math", "slow"], "events": True}
    question = [{"role": "user", "content": " ".join(f"w{i}" for i in range(40))}]
    with serve(security_pool, config) as server:
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
def test_named_experts_are_checked_as_expert_models(security_pool: ExpertPool) -> None:
    key, name, config = keyed(models=["moesaic"])
    with serve(security_pool, config) as server:
        client = client_for(server, key)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(
                model="moesaic", messages=HELLO, extra_body={"moesaic": {"experts": ["coder"]}}
            )
        assert caught.value.param == "moesaic.experts" and caught.value.code == "model_not_allowed"
        assert f"API key {name!r} may not use model 'expert/coder'" in caught.value.message
        assert client.chat.completions.create(model="moesaic", messages=HELLO).choices  # routed: the key may


# -- 12: budgets under concurrency, estimates that count k and n -------------------------------------------------
def test_concurrent_requests_cannot_overspend_a_budget(security_pool: ExpertPool, redis_url: str) -> None:
    key, name, config = keyed(redis_url, budget_usd_per_day=0.05)
    # $0.014 held each, $0.01 spent each; streamed, "slow" takes over a second, so all six overlap
    body = {"model": "expert/slow", "messages": HELLO, "max_tokens": 5, "stream": True}
    with serve(security_pool, config) as server:
        url, headers = server.url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}
        with ThreadPoolExecutor(6) as threads:
            replies = list(threads.map(lambda _: httpx.post(url, json=body, headers=headers, timeout=60), range(6)))
        spent = spent_today(redis_url, name)
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses.count(200) == 3 and statuses.count(429) == 3  # three holds of $0.014 fit in $0.05, not four
    assert spent == pytest.approx(0.03) and spent <= 0.05
    refusal = next(reply for reply in replies if reply.status_code == 429).json()["error"]
    assert refusal["code"] == "budget_exceeded" and "may cost $0.014" in refusal["message"]


def test_the_token_estimate_counts_every_expert_the_aggregator_and_n(security_pool: ExpertPool) -> None:
    key, _, config = keyed(tokens_per_minute=1_000)
    options = {"experts": ["math", "coder"], "aggregator_max_tokens": 20}
    with serve(security_pool, config) as server:
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
