"""Service-level faults (issue 7): Redis stopped mid-run, and slow clients.

Each case runs a real uvicorn server over echo experts in Ray actors and checks three things:
the requests made during the fault are answered (or refused with a clean 4xx), nothing is lost
(every request reaches the journal, in Redis once it is back), and the service is healthy after.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.service_config import ServiceConfig
from tests.conftest import RedisServer, ServerThread, echo_pool_spec

CHAT = "/v1/chat/completions"
STREAM = "moesaic:faults-journal"


@pytest.fixture(scope="module")
async def echo_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("service-faults"))
    await pool.start()
    yield pool
    await pool.shutdown()


def ask(client: httpx.Client, text: str, temperature: float = 0.7) -> httpx.Response:
    body = {"model": "expert/a", "messages": [{"role": "user", "content": text}], "temperature": temperature}
    return client.post(CHAT, json=body, headers={"x-request-id": text})


def journaled_ids(url: str) -> set[str]:
    client = redis.Redis.from_url(url)
    try:
        ids = set()
        for _, fields in client.xrange(STREAM):
            raw = next(iter(fields.values())).decode()
            ids.update(part for part in raw.replace('"', " ").split() if part.startswith("fault-"))
        return ids
    finally:
        client.close()


@pytest.mark.ray
def test_redis_stopped_mid_run_answers_every_request_and_loses_no_journal_entry(echo_pool: ExpertPool) -> None:
    with RedisServer() as store:
        config = ServiceConfig.model_validate(
            {
                "redis": {"url": store.url},
                "journal": {"stream": STREAM},
                "rate_limits": {"requests_per_minute": 10_000},  # exercised on every request, never reached
            }
        )
        app = create_app(orchestrator=Orchestrator(echo_pool), service=config)
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            run = uuid.uuid4().hex[:8]
            before = [f"fault-{run}-before-{i}" for i in range(3)]
            assert all(ask(client, rid).status_code == 200 for rid in before)
            assert ask(client, before[0], temperature=0).headers["x-moesaic-cache"] == "miss"
            assert set(before) <= journaled_ids(store.url)

            store.stop()  # Redis crashes (without persistence: what it held is gone with it)
            during = [f"fault-{run}-during-{i}" for i in range(6)]
            replies = [ask(client, rid, temperature=0 if i % 2 else 0.7) for i, rid in enumerate(during)]
            assert [reply.status_code for reply in replies] == [200] * len(during)
            assert [reply.json()["choices"][0]["message"]["content"] for reply in replies] == during
            assert client.get("/healthz").status_code == 200
            assert "fallback" in app.state.service.redis_status

            store.start()  # back on the same port: the stores reconnect and the journal catches up
            after = [f"fault-{run}-after-{i}" for i in range(2)]
            wanted = set(during + after)  # kept in process during the outage, written once Redis is back
            deadline = time.monotonic() + 30
            found: set[str] = set()
            for rid in after:
                assert ask(client, rid).status_code == 200
            while not wanted <= found and time.monotonic() < deadline:
                time.sleep(0.5)
                ask(client, f"fault-{run}-poke-{time.monotonic_ns()}")  # a request gives the link its retry
                found = journaled_ids(store.url)
            assert wanted <= found, sorted(wanted - found)
            assert app.state.service.redis_status == "connected"
            assert client.get("/healthz").status_code == 200


@pytest.mark.ray
def test_a_slow_client_holds_up_nobody_and_is_answered_when_its_body_arrives(echo_pool: ExpertPool) -> None:
    app = create_app(orchestrator=Orchestrator(echo_pool), service=ServiceConfig())
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        host, port = server.url.removeprefix("http://").split(":")
        body = b'{"model": "expert/a", "messages": [{"role": "user", "content": "slow and steady"}]}'
        head = (
            f"POST {CHAT} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        slow = socket.create_connection((host, int(port)), timeout=30)
        gone = socket.create_connection((host, int(port)), timeout=30)
        try:
            slow.sendall(head + body[:10])
            gone.sendall(head + body[:10])
            gone.close()  # this client leaves half-way through its body
            for i in range(5):  # meanwhile everyone else is served
                reply = ask(client, f"meanwhile {i}")
                assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == f"meanwhile {i}"
            for start in range(10, len(body), 16):  # the slow body trickles in
                slow.sendall(body[start : start + 16])
                time.sleep(0.05)
            answer = b""
            while b"slow and steady" not in answer:
                chunk = slow.recv(65536)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and b"slow and steady" in answer
        finally:
            slow.close()

        # a streamed answer read slowly: the reader's pace does not hold up a second request
        stream_body = {
            "model": "expert/a",
            "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(40))}],
            "stream": True,
        }
        with client.stream("POST", CHAT, json=stream_body) as streamed:
            assert streamed.status_code == 200
            lines = streamed.iter_lines()
            next(lines)
            time.sleep(0.5)
            assert ask(client, "while a reader dawdles").status_code == 200
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert client.get("/healthz").status_code == 200
        limits = app.state.service.limits
        assert limits.in_flight == 0 and limits.queued == 0  # nothing left behind by either client
