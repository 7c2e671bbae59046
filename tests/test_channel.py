"""The same-node fast lane (experts/_channel.py): real Unix sockets, in-process and to Ray actors."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from experts._channel import ChannelClient, ChannelLost, ChannelServer, RemoteError
from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from experts.types import GenerationRequest, Message
from tests.conftest import echo_pool_spec
from tests.test_faults import killed


class _Unpicklable(Exception):
    def __init__(self, code: int, detail: str) -> None:  # pickle re-creates it with one argument: fails
        super().__init__(f"{code}: {detail}")


class Target:
    """What an expert actor offers, with hooks to see cancellations arrive."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.closed_streams = 0
        self.release = asyncio.Event()

    async def generate(self, text: str, delay_s: float = 0.0) -> str:
        try:
            await asyncio.sleep(delay_s)
            if delay_s < 0:
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(text)
            raise
        if text == "fail":
            raise ValueError("no answer for 'fail'")
        if text == "odd":
            raise _Unpicklable(7, "cannot travel as it is")
        return text.upper()

    async def generate_batch(self, texts: list[str]) -> list[Any]:
        return [
            ValueError(text) if text == "bad" else _Unpicklable(1, text) if text == "odd" else text.upper()
            for text in texts
        ]

    async def stream(self, text: str) -> AsyncIterator[str]:
        try:
            for word in text.split():
                if word == "boom":
                    raise RuntimeError("stream failed at 'boom'")
                yield word
                await asyncio.sleep(0.01)
        finally:
            self.closed_streams += 1

    async def health(self) -> str:  # not a data-plane method: never served on the channel
        return "secret"


@asynccontextmanager
async def connected(target: Target) -> AsyncIterator[tuple[ChannelServer, ChannelClient]]:
    """A channel server for ``target`` and a client connected to it; both closed afterwards."""
    server = ChannelServer(target)
    client = await ChannelClient.connect(await server.start())
    try:
        yield server, client
    finally:
        await client.close()
        await server.close()


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_calls_multiplex_and_answer_out_of_order() -> None:
    async with connected(Target()) as (server, client):
        slow = asyncio.create_task(client.call("generate", "slow", 0.3))
        assert await client.call("generate", "fast") == "FAST"  # answered while "slow" still runs
        assert not slow.done()
        assert await slow == "SLOW"
        batch = await client.call("generate_batch", ["a", "bad", "c", "odd"])
        assert batch[0] == "A" and batch[2] == "C" and isinstance(batch[1], ValueError) and str(batch[1]) == "bad"
        assert isinstance(batch[3], RuntimeError) and str(batch[3]) == "_Unpicklable: 1: odd"
        assert client.calls == 3
        socket_dir = Path(server.path or "").parent
        assert socket_dir.stat().st_mode & 0o777 == 0o700  # only this user may connect
    assert not socket_dir.exists()


async def test_a_failing_method_raises_its_exception_as_ray_would_word_it() -> None:
    async with connected(Target()) as (server, client):
        with pytest.raises(RemoteError) as failure:
            await client.call("generate", "fail")
        assert isinstance(failure.value.cause, ValueError)
        assert str(failure.value) == "ValueError: no answer for 'fail'"
        with pytest.raises(RemoteError) as odd:  # cannot be unpickled as itself: travels as its text
            await client.call("generate", "odd")
        assert str(odd.value) == "RuntimeError: _Unpicklable: 7: cannot travel as it is"
        with pytest.raises(RemoteError, match="'health' is not served over the expert channel"):
            await client.call("health")
        assert await client.call("generate", "still fine") == "STILL FINE"  # the connection survived


async def test_streams_end_fail_and_stop_early() -> None:
    target = Target()
    async with connected(target) as (server, client):
        assert [item async for item in client.stream("stream", "one two three")] == ["one", "two", "three"]
        received = []
        with pytest.raises(RemoteError, match="stream failed at 'boom'"):
            async for item in client.stream("stream", "one boom two"):
                received.append(item)
        assert received == ["one"]
        # a consumer that stops early closes the generator in the actor
        closed_before = target.closed_streams
        items = client.stream("stream", " ".join(f"w{i}" for i in range(200)))
        assert await anext(items) == "w0"
        await items.aclose()
        await _until(lambda: target.closed_streams == closed_before + 1)


async def test_cancelling_a_call_or_disconnecting_cancels_the_work_in_the_actor() -> None:
    target = Target()
    async with connected(target) as (server, client):
        running = asyncio.create_task(client.call("generate", "abandoned", -1.0))
        await asyncio.sleep(0.05)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await _until(lambda: target.cancelled == ["abandoned"])
        with pytest.raises(asyncio.TimeoutError):  # a timeout is a cancellation too
            await asyncio.wait_for(client.call("generate", "too slow", -1.0), 0.05)
        await _until(lambda: target.cancelled == ["abandoned", "too slow"])

        left = asyncio.create_task(client.call("generate", "orphan", -1.0))
        await asyncio.sleep(0.05)
        await client.close()  # the caller goes away: what it asked for is dropped there
        with pytest.raises(ChannelLost):
            await left
        await _until(lambda: "orphan" in target.cancelled)
        assert not client.usable


_ACTOR_PROCESS = """
import asyncio, sys
from experts._channel import ChannelServer

class Slow:
    async def generate(self, text):
        await asyncio.sleep(3600)

    async def stream(self, text):
        yield "first"
        await asyncio.sleep(3600)

async def main():
    server = ChannelServer(Slow())
    print(await server.start(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_actor_process_fails_pending_calls_with_channel_lost() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ACTOR_PROCESS, stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).parents[1])
    )
    try:
        assert process.stdout is not None
        path = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        client = await ChannelClient.connect(path)
        waiting = asyncio.create_task(client.call("generate", "pending"))
        streaming = client.stream("stream", "x")
        assert await anext(streaming) == "first"
        process.kill()  # what a killed actor looks like from here: its end of the socket is gone
        with pytest.raises(ChannelLost, match="broke"):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(ChannelLost):
            await anext(streaming)
        assert not client.usable
        with pytest.raises(ChannelLost, match="closed"):
            await client.call("generate", "after")
        await client.close()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_another_event_loop_does_not_use_the_connection() -> None:
    async with connected(Target()) as (server, client):
        assert client.usable
        other = await asyncio.to_thread(lambda: asyncio.run(_usable_here(client)))
        assert other is False


async def _usable_here(client: ChannelClient) -> bool:
    return client.usable


def test_socket_folders_of_dead_actors_are_swept(tmp_path: Path) -> None:
    from experts._channel import _sweep_stale_directories

    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = Path(tempfile.gettempdir()) / f"moesaic-expert-{dead}-test"
    live = Path(tempfile.gettempdir()) / f"moesaic-expert-{os.getpid()}-test"
    for folder in (stale, live):
        folder.mkdir(exist_ok=True)
    try:
        _sweep_stale_directories()
        assert not stale.exists() and live.exists()
    finally:
        for folder in (stale, live):
            if folder.exists():
                folder.rmdir()


# -- with Ray actors ---------------------------------------------------------------------------
def _ask(text: str) -> GenerationRequest:
    return GenerationRequest([Message("user", text)])


async def test_pool_calls_go_over_the_channel_and_fall_back_to_ray(ray_session: None) -> None:
    pool = ExpertPool(echo_pool_spec("channel"))
    await pool.start()
    try:
        handle = pool._experts["a"].handle
        assert handle.channel is not None and handle.report["channel"]
        before = handle.channel.calls
        assert (await pool.generate("a", _ask("over the socket"))).text == "over the socket"
        pieces = [item async for item in pool.stream("a", _ask("streamed over it"))]
        assert "".join(p for p in pieces if isinstance(p, str)).strip() == "streamed over it"
        assert handle.channel.calls == before + 2

        first_socket = Path(handle.report["channel"])
        await killed(pool._actors["a"])  # the socket breaks; the call goes through Ray, sees the death, retries
        assert (await pool.generate("a", _ask("after a restart"))).text == "after a restart"
        assert pool.restarts["a"] == 1
        assert handle.channel is not None and handle.channel.usable  # the new actor's channel
        assert not first_socket.parent.exists()  # the dead actor's socket folder was removed
        second_socket = Path(handle.report["channel"])
        assert second_socket.exists() and second_socket != first_socket
    finally:
        await pool.shutdown()
    assert not second_socket.parent.exists()  # killed at shutdown: the pool cleans up after it


async def test_transport_ray_keeps_every_call_on_ray(ray_session: None) -> None:
    data = echo_pool_spec("ray-only").model_dump()
    data["transport"] = "ray"
    pool = ExpertPool(parse_pool(data, "<ray-only>"))
    await pool.start()
    try:
        handle = pool._experts["a"].handle
        assert handle.channel is None and handle.report["channel"] is None
        assert (await pool.generate("a", _ask("through Ray"))).text == "through Ray"
    finally:
        await pool.shutdown()


async def test_many_concurrent_calls_streams_and_cancellations_leave_nothing_behind() -> None:
    rng = random.Random(7)
    async with connected(Target()) as (server, client):

        async def one(i: int) -> str:
            if i % 3 == 0:
                return " ".join([item async for item in client.stream("stream", f"s{i} t{i}")])
            return str(await client.call("generate", f"c{i}", rng.choice([0.0, 0.001, 0.02])))

        tasks = [asyncio.create_task(one(i)) for i in range(300)]
        await asyncio.sleep(0.005)
        cancelled = {i for i in range(0, 300, 7) if not tasks[i].done() and tasks[i].cancel()}
        assert cancelled, "some calls must still be running when they are cancelled"
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i in cancelled:
                continue
            assert result == (f"s{i} t{i}" if i % 3 == 0 else f"C{i}"), (i, result)
        await _until(lambda: server.in_flight == 0)  # cancelled calls ended there too
        assert client._pending == {}
