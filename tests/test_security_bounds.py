"""Issue 27: bounded work per request and what a caller without a key can reach (rows 3, 4, 5, 6, 7 and 11 of the
table in ``tests/security_setup.py``): table caps, pathological texts, schemas, loopback safety, a path prefix,
/healthz."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.service_config import ServiceConfig
from tests.conftest import ServerThread, free_port
from tests.security_setup import (
    HELLO,
    PATHOLOGICAL_ANSWER,
    client_for,
    keyed,
    serve,
)

pytestmark = pytest.mark.ray


def test_a_parquet_table_that_expands_past_the_row_cap_is_refused_from_its_metadata(security_pool: ExpertPool) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 2_000_000  # compresses to a few kilobytes: a decompression bomb
    table = pa.table({"question": pa.array(["q"] * rows), "a|correct": pa.array([True] * rows)})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    assert len(sink.getvalue()) < 100_000
    body = {"table": base64.b64encode(sink.getvalue()).decode(), "format": "parquet"}
    with serve(security_pool, {}) as server:
        started = time.monotonic()
        refused = httpx.post(server.url + "/v1/routing/evaluate", json=body, timeout=60)
    assert refused.status_code == 413 and "routing_evaluation.max_rows" in refused.json()["error"]["message"]
    assert time.monotonic() - started < 10


# -- 4: pathological texts --------------------------------------------------------------------------------------
def test_pathological_answers_and_questions_are_aggregated_in_bounded_time(security_pool: ExpertPool) -> None:
    options = {"experts": ["math", "coder"], "strategy": "vote"}
    with serve(security_pool, {}) as server:
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
def test_schemas_over_the_limits_are_refused_naming_the_limit(security_pool: ExpertPool) -> None:
    wide = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(900)}}
    response_format = {"type": "json_schema", "json_schema": {"name": "wide", "schema": wide}}
    with serve(security_pool, {}) as server:
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
def test_loopback_without_keys_refuses_cross_site_and_rebinding_requests(security_pool: ExpertPool) -> None:
    body = json.dumps({"model": "expert/math", "messages": HELLO})
    with serve(security_pool, {}) as server:
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
    with serve(security_pool, listed) as server:
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


def test_under_a_path_prefix_keys_and_request_slots_still_apply(security_pool: ExpertPool) -> None:
    key, _, config = keyed()
    config["limits"] = {"max_concurrent": 1, "max_queue": 0}
    app = create_app(orchestrator=Orchestrator(security_pool), service=ServiceConfig.model_validate(config))
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
