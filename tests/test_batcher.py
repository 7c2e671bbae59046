"""The per-expert request batcher, driven directly (no Ray) with the echo backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from experts.actor.batcher import RequestBatcher
from experts.backends.echo import EchoBackend
from experts.config._pool_spec import ExpertSpec
from experts.errors import BackendError
from experts.types import Completion, GenerationRequest, Message, TextDelta, Usage


def request(text: str) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], max_tokens=50)


def echo(**options: object) -> EchoBackend:
    return EchoBackend(ExpertSpec(name="e", backend="echo", model="echo", options=options))


async def test_concurrent_requests_share_batches() -> None:
    backend = echo()
    batcher = RequestBatcher(backend.generate, max_batch_size=4, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(request(f"q{i}")) for i in range(6)))
    assert [r.text for r in results] == [f"q{i}" for i in range(6)]
    assert batcher.stats.requests == 6
    assert batcher.stats.largest_batch == 4
    assert batcher.stats.batches == 2
    await batcher.close()


async def test_lone_request_waits_max_wait_for_company_then_runs() -> None:
    # a behavioural bound, not a speed target: 0.4 s of waiting must show, and nothing near 10x that
    batcher = RequestBatcher(echo().generate, max_batch_size=8, max_wait_s=0.4)
    started = time.perf_counter()
    result = await asyncio.wait_for(batcher.submit(request("alone")), timeout=10)
    waited = time.perf_counter() - started
    assert result.text == "alone" and result.batch_size == 1
    assert 0.35 <= waited < 0.4 + 2.0, f"a lone request took {waited:.3f} s with max_wait_s 0.4"
    await batcher.close()


async def test_a_full_batch_does_not_wait_for_max_wait() -> None:
    batcher = RequestBatcher(echo().generate, max_batch_size=2, max_wait_s=30.0)
    started = time.perf_counter()
    first, second = await asyncio.wait_for(
        asyncio.gather(batcher.submit(request("one")), batcher.submit(request("two"))), timeout=60
    )
    assert (first.batch_size, second.batch_size) == (2, 2)
    assert time.perf_counter() - started < 5.0  # far under the 30 s it would wait for a batch that is not full
    await batcher.close()


async def test_streamed_and_plain_requests_in_one_batch() -> None:
    batcher = RequestBatcher(echo().generate, max_batch_size=8, max_wait_s=0.05)
    pieces: list[TextDelta] = []
    streamed, plain = await asyncio.gather(
        batcher.submit(request("one two three"), pieces.append), batcher.submit(request("four five"))
    )
    assert streamed.batch_size == 2 and plain.batch_size == 2
    assert "".join(piece.text for piece in pieces) == "one two three"
    assert plain.text == "four five"
    await batcher.close()


async def test_a_failing_batch_fails_its_callers_and_the_worker_survives() -> None:
    failing = echo(fail_generate=True)
    batcher = RequestBatcher(failing.generate, max_batch_size=4, max_wait_s=0.01)
    outcomes = await asyncio.gather(batcher.submit(request("a")), batcher.submit(request("b")), return_exceptions=True)
    assert all(isinstance(outcome, BackendError) for outcome in outcomes)
    assert batcher.stats.failed_batches == 1
    failing.spec = ExpertSpec(name="e", backend="echo", model="echo")  # heal it
    assert (await batcher.submit(request("again"))).text == "again"
    await batcher.close()


async def test_length_limit_reported() -> None:
    batcher = RequestBatcher(echo().generate, max_batch_size=2, max_wait_s=0.0)
    result = await batcher.submit(GenerationRequest([Message("user", "a b c d")], max_tokens=2))
    assert result.text == "a b" and result.finish_reason == "length"
    await batcher.close()


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_concurrency_bounds_batches_in_flight(concurrency: int) -> None:
    backend = echo(delay_s=0.05)
    in_flight, most = 0, 0

    async def counting(batch, on_delta):  # type: ignore[no-untyped-def]
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await backend.generate(batch, on_delta)
        finally:
            in_flight -= 1

    batcher = RequestBatcher(counting, max_batch_size=1, max_wait_s=0.0, concurrency=concurrency)
    await asyncio.gather(*(batcher.submit(request(str(i))) for i in range(6)))
    assert most == concurrency
    await batcher.close()


async def test_a_running_batch_whose_callers_all_left_is_cancelled_and_one_with_a_caller_left_is_not() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(batch, on_delta):  # type: ignore[no-untyped-def]
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return [Completion(r.messages[-1].content, "stop", Usage()) for r in batch]

    batcher = RequestBatcher(slow, max_batch_size=1, max_wait_s=0.0)
    caller = asyncio.create_task(batcher.submit(request("gone")))
    await asyncio.wait_for(started.wait(), 5)
    caller.cancel()  # the only caller goes away while its batch runs
    await asyncio.wait_for(cancelled.wait(), 5)  # the backend call is cancelled (the engine stops for nobody)
    assert batcher.stats.abandoned == 1 and batcher.stats.failed_batches == 0

    quick = RequestBatcher(echo(delay_s=0.3).generate, max_batch_size=2, max_wait_s=0.05)
    stays, leaves = (asyncio.create_task(quick.submit(request(text))) for text in ("stays", "leaves"))
    await asyncio.sleep(0.1)  # both in one running batch now
    leaves.cancel()
    assert (await stays).text == "stays" and quick.stats.abandoned == 0  # one caller still waits: it runs on
    await batcher.close()
    await quick.close()
