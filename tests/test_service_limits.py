"""Limits and backpressure: 413, 400 on max_tokens, the bounded waiting line (429), graceful shutdown,
and client disconnects cancelling the work they started. Real uvicorn, echo experts that take 1 s."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.limits import Overloaded, RequestLimits
from orchestrator.server.service.service_config import LimitsSection, ServiceConfig
from tests.conftest import ServerThread, echo_pool_spec

ASK = {"model": "expert/a", "messages": [{"role": "user", "content": "slow answer please"}], "max_tokens": 8}


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# -- the waiting line, in process ----------------------------------------------------------------
def limits(**settings: Any) -> RequestLimits:
    return RequestLimits(LimitsSection(**settings))


async def test_slots_then_a_bounded_line_then_429() -> None:
    gate = limits(max_concurrent=1, max_queue=1, queue_timeout_s=5)
    await gate.acquire()
    waiting = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert (gate.in_flight, gate.queued) == (1, 1)
    with pytest.raises(Overloaded) as refused:
        await gate.acquire()
    assert refused.value.status == 429 and refused.value.code == "server_overloaded"
    assert refused.value.headers == {"Retry-After": "1"} and "limits.max_queue 1" in refused.value.message
    gate.release()  # the slot passes to the one in line
    await waiting
    assert (gate.in_flight, gate.queued, gate.rejected) == (1, 0, 1)
    gate.release()
    assert gate.in_flight == 0 and await gate.drained(0.1)


async def test_the_line_is_first_come_first_served() -> None:
    gate = limits(max_concurrent=1, max_queue=3, queue_timeout_s=5)
    await gate.acquire()
    served: list[int] = []

    async def wait_then_note(number: int) -> None:
        await gate.acquire()
        served.append(number)

    tasks = []
    for number in range(3):
        tasks.append(asyncio.create_task(wait_then_note(number)))
        await asyncio.sleep(0)
    for _ in range(3):
        gate.release()
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert served == [0, 1, 2]


async def test_a_wait_that_times_out_is_429_and_leaves_the_line() -> None:
    gate = limits(max_concurrent=1, max_queue=4, queue_timeout_s=0.05)
    await gate.acquire()
    with pytest.raises(Overloaded, match="limits.queue_timeout_s"):
        await gate.acquire()
    assert (gate.queued, gate.rejected) == (0, 1)
    assert not await gate.drained(0.05)  # one still holds its slot
    gate.release()
    assert await gate.drained(0.05)


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = limits(max_concurrent=1, max_queue=4, queue_timeout_s=5)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.queued == 0
    gate.release()
    assert gate.in_flight == 0 and gate.rejected == 0


# -- over HTTP -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def slow_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("gate-limits", delay_s=1.0))
    await pool.start()
    yield pool
    await pool.shutdown()


def serve(pool: ExpertPool, **limit_settings: Any) -> ServerThread:
    config = ServiceConfig(limits=LimitsSection(**limit_settings))
    return ServerThread(create_app(orchestrator=Orchestrator(pool), service=config))


def gate_of(server: ServerThread) -> RequestLimits:
    return server.server.config.app.state.service.limits


def journal_of(server: ServerThread) -> list[Any]:
    return asyncio.run(server.server.config.app.state.service.journal.latest(20))


@pytest.fixture(scope="module")
def small_server(slow_pool: ExpertPool) -> Iterator[ServerThread]:
    with serve(slow_pool, max_body_bytes=2048, max_tokens=64) as server:
        yield server


def test_a_declared_body_over_the_limit_is_413(small_server: ServerThread) -> None:
    huge = {**ASK, "messages": [{"role": "user", "content": "x" * 5_000_000}]}
    client = openai.OpenAI(base_url=small_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**huge)
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large" and "limits.max_body_bytes" in caught.value.message
    assert gate_of(small_server).too_large >= 1


def test_a_streamed_body_is_counted_and_cut_off(small_server: ServerThread) -> None:
    before = gate_of(small_server).too_large

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"model": "expert/a", "messages": [{"role": "user", "content": "'
        for _ in range(3):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(small_server.url + "/v1/chat/completions", content=chunks(), timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert gate_of(small_server).too_large == before + 1


def test_max_tokens_over_the_limit_is_400_naming_it(small_server: ServerThread) -> None:
    client = openai.OpenAI(base_url=small_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{**ASK, "max_tokens": 65})
    assert caught.value.body["param"] == "max_tokens" and caught.value.body["code"] == "max_tokens_exceeded"
    assert "limits.max_tokens (64)" in caught.value.message
    with pytest.raises(openai.BadRequestError) as newer:
        client.chat.completions.create(model="expert/a", messages=ASK["messages"], max_completion_tokens=100)
    assert newer.value.body["param"] == "max_completion_tokens"


def test_a_full_line_is_429_server_overloaded_with_retry_after(slow_pool: ExpertPool) -> None:
    with serve(slow_pool, max_concurrent=1, max_queue=1) as server, ThreadPoolExecutor(2) as threads:
        gate = gate_of(server)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        client.models.list()  # the client's first call imports a lot: done before the clock matters
        first = threads.submit(httpx.post, server.url + "/v1/chat/completions", json=ASK, timeout=30)
        wait_until(lambda: gate.in_flight == 1)
        second = threads.submit(httpx.post, server.url + "/v1/chat/completions", json=ASK, timeout=30)
        wait_until(lambda: gate.queued == 1)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**ASK)
        assert caught.value.body["code"] == "server_overloaded" and caught.value.body["type"] == "overloaded_error"
        assert caught.value.response.headers["retry-after"] == "1"
        health = httpx.get(server.url + "/healthz", timeout=10)  # probes never wait in the line
        assert health.status_code == 200
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert (gate.rejected, gate.in_flight, gate.queued) == (1, 0, 0)


def test_a_wait_longer_than_queue_timeout_is_429(slow_pool: ExpertPool) -> None:
    with serve(slow_pool, max_concurrent=1, max_queue=4, queue_timeout_s=0.2) as server:
        gate = gate_of(server)
        with ThreadPoolExecutor(1) as threads:
            first = threads.submit(httpx.post, server.url + "/v1/chat/completions", json=ASK, timeout=30)
            wait_until(lambda: gate.in_flight == 1)
            late = httpx.post(server.url + "/v1/chat/completions", json=ASK, timeout=30)
            assert late.status_code == 429 and "limits.queue_timeout_s" in late.json()["error"]["message"]
            assert late.headers["retry-after"] == "1"
            assert first.result().status_code == 200


def test_graceful_shutdown_finishes_the_request_in_flight(slow_pool: ExpertPool) -> None:
    server = serve(slow_pool, shutdown_grace_s=20).__enter__()
    gate = gate_of(server)
    with ThreadPoolExecutor(1) as threads:
        in_flight = threads.submit(httpx.post, server.url + "/v1/chat/completions", json=ASK, timeout=30)
        wait_until(lambda: gate.in_flight == 1)
        server.server.should_exit = True  # what SIGTERM does
        response = in_flight.result()
    server.thread.join(timeout=20)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "slow answer please"
    assert not server.thread.is_alive() and gate.in_flight == 0
    with pytest.raises(httpx.ConnectError):  # no longer accepting
        httpx.get(server.url + "/healthz", timeout=2)


def expert_health(server: ServerThread, name: str) -> dict[str, Any]:
    return httpx.get(server.url + "/healthz", timeout=10).json()["experts"][name]


def test_a_client_that_goes_away_cancels_its_work(slow_pool: ExpertPool) -> None:
    with serve(slow_pool) as server, ThreadPoolExecutor(1) as threads:
        gate = gate_of(server)
        before = expert_health(server, "a")
        first = threads.submit(httpx.post, server.url + "/v1/chat/completions", json=ASK, timeout=30)
        wait_until(lambda: gate.in_flight == 1)
        time.sleep(0.2)  # the first request is in the expert's backend; the next one waits behind it
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", json={**ASK, "max_tokens": 7}, timeout=0.4)
        assert first.result().status_code == 200
        assert_never_generated(server, "a", before)
        gone = [entry for entry in journal_of(server) if entry.request.get("max_tokens") == 7]
        assert [(entry.status, entry.response) for entry in gone] == [(499, None)]
        assert "client closed" in (gone[0].error or "")


def test_a_stream_closed_by_its_client_cancels_its_work(slow_pool: ExpertPool) -> None:
    with serve(slow_pool) as server, ThreadPoolExecutor(1) as threads:
        gate = gate_of(server)
        before = expert_health(server, "b")
        ask_b = {**ASK, "model": "expert/b"}
        first = threads.submit(httpx.post, server.url + "/v1/chat/completions", json=ask_b, timeout=30)
        wait_until(lambda: gate.in_flight == 1)
        time.sleep(0.2)
        with httpx.stream(
            "POST", server.url + "/v1/chat/completions", json={**ask_b, "stream": True, "max_tokens": 6}, timeout=30
        ) as stream:
            assert stream.status_code == 200
            first_line = next(stream.iter_lines())  # the role chunk; then the client hangs up
            assert first_line.startswith("data: ")
        assert first.result().status_code == 200
        assert_never_generated(server, "b", before)
        gone = [entry for entry in journal_of(server) if entry.request.get("max_tokens") == 6]
        assert len(gone) == 1 and gone[0].status == 499 and gone[0].error == "the client closed the stream"


def assert_never_generated(server: ServerThread, expert: str, before: dict[str, Any]) -> None:
    """The abandoned request was dropped (from the actor's queue, or before reaching it), never generated.

    A later request to the same expert answers after the abandoned one would have: by then the
    actor has generated exactly the first and the later one.
    """
    later = {**ASK, "model": f"expert/{expert}", "max_tokens": 5}
    assert httpx.post(server.url + "/v1/chat/completions", json=later, timeout=30).status_code == 200
    after = expert_health(server, expert)
    assert after["requests"] == before["requests"] + 2 and after["queue_depth"] == 0
    assert after["dropped"] - before["dropped"] in (0, 1)  # 1 when it had reached the actor's queue


def test_requests_beyond_the_slots_wait_their_turn_and_all_succeed(slow_pool: ExpertPool) -> None:
    with serve(slow_pool, max_concurrent=2, max_queue=8) as server:
        gate = gate_of(server)
        samples: list[tuple[int, int]] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                samples.append((gate.in_flight, gate.queued))
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        with ThreadPoolExecutor(4) as threads:
            replies = list(
                threads.map(lambda _: httpx.post(server.url + "/v1/chat/completions", json=ASK, timeout=60), range(4))
            )
        done.set()
        watcher.join()
        assert [reply.status_code for reply in replies] == [200] * 4
        assert max(running for running, _ in samples) == 2 and max(waiting for _, waiting in samples) >= 1
        assert gate.rejected == 0 and (gate.in_flight, gate.queued) == (0, 0)
