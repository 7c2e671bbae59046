"""A same-node fast lane to an expert actor: a Unix socket beside Ray's own calls.

Why: a Ray actor call goes through the caller's core worker, the object store and the
actor's task queue; on a small machine that costs 1.5-4 ms a call (``bench/overhead.py``),
while a request over a Unix socket to the same process costs about 0.1 ms (0.3 ms end to end
through the pool). For a quick expert (a cached or remote model) that hop is most of what the
orchestrator adds.

What travels here: the data plane only (``generate``, ``generate_batch``, ``stream``) and
only when the caller runs on the actor's own node. Starting, health, load/park/unload and
restarts stay on Ray, and so does every call to an actor on another node or when the pool
file says ``transport: ray``. When the socket breaks (the actor died, or was killed), the
caller falls back to a Ray call, which tells a dead actor from a live one.

Frames are a 4-byte big-endian length and a pickled tuple:

* caller -> actor: ``("call", id, method, args)``, ``("cancel", id)``
* actor -> caller: ``("ok", id, value)``, ``("error", id, exception)``, ``("item", id, value)``,
  ``("end", id)``

Trust: the socket sits in a directory only the actor's user may enter (mode 0700), so only
processes of that user can connect, which is the same trust Ray's own object store relies on.
A cancelled call is cancelled in the actor too (a request still queued is dropped, as with
``ray.cancel``), and a caller that disconnects cancels everything it had asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATA_METHODS = frozenset({"generate", "generate_batch", "stream"})
STREAM_METHODS = frozenset({"stream"})
_HEADER = struct.Struct("!I")
_MAX_FRAME = 256 * 1024 * 1024  # a frame larger than this is a corrupt stream, not a message
_PREFIX = "moesaic-expert-"


class ChannelLost(ConnectionError):
    """The socket to the actor broke; the call may or may not have run. Use Ray from here."""


class RemoteError(Exception):
    """The actor's method raised ``cause``; the message reads as Ray's ``RayTaskError`` would."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # lambdas, local classes: what Ray itself would send
        from ray import cloudpickle

        return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def _frame(message: tuple[Any, ...]) -> bytes:
    body = _dumps(message)
    return _HEADER.pack(len(body)) + body


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives a pickle round trip, else a RuntimeError that says the same."""
    try:
        pickle.loads(_dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


async def _read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > _MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the {_MAX_FRAME} limit")
    message = pickle.loads(await reader.readexactly(size))
    if not isinstance(message, tuple) or len(message) < 2:
        raise ValueError("malformed frame")
    return message


class ChannelServer:
    """Serves ``target``'s data-plane methods on a Unix socket; runs in the actor's event loop."""

    def __init__(self, target: Any, methods: frozenset[str] = DATA_METHODS) -> None:
        self.target = target
        self.methods = methods
        self.path: str | None = None
        self._directory: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._running: set[asyncio.Task[None]] = set()  # calls in progress, over every connection

    @property
    def in_flight(self) -> int:
        """Calls running now (health reports, tests: cancelled and abandoned calls leave this set)."""
        return len(self._running)

    async def start(self) -> str:
        """Listen; returns the socket path callers connect to."""
        _sweep_stale_directories()
        self._directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")  # mode 0700: this user only
        self.path = os.path.join(self._directory, "channel.sock")
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return self.path

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: dict[int, asyncio.Task[None]] = {}
        lock = asyncio.Lock()

        async def send(frame: bytes) -> None:
            async with lock:
                writer.write(frame)
                await writer.drain()

        try:
            while True:
                message = await _read_frame(reader)
                kind, call_id = message[0], message[1]
                if kind == "call":
                    task = asyncio.create_task(self._run(call_id, message[2], message[3], send))
                    tasks[call_id] = task
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                    task.add_done_callback(lambda _, key=call_id: tasks.pop(key, None))
                elif kind == "cancel" and call_id in tasks:
                    tasks[call_id].cancel()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the caller went away
        except Exception as error:
            log.warning("expert channel: dropping a connection that sent a bad frame: %s", error)
        finally:
            for task in list(tasks.values()):
                task.cancel()  # nobody is left to answer: drop the work, as a cancelled Ray call would
            writer.close()

    async def _run(self, call_id: int, method: str, args: tuple[Any, ...], send: Any) -> None:
        try:
            if method not in self.methods:
                raise AttributeError(f"{method!r} is not served over the expert channel")
            function = getattr(self.target, method)
            if method in STREAM_METHODS:
                async with contextlib.aclosing(function(*args)) as items:
                    async for item in items:
                        if not await _deliver(send, ("item", call_id, item)):
                            return  # the caller is gone: closing the generator stops the work
                outcome: tuple[Any, ...] = ("end", call_id)
            else:
                value = await function(*args)
                if isinstance(value, list):  # generate_batch: failures come back in place, as exceptions
                    value = [_portable(item) if isinstance(item, BaseException) else item for item in value]
                outcome = ("ok", call_id, value)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the method failed: the caller gets the exception
            outcome = ("error", call_id, _portable(error))
        await _deliver(send, outcome)


async def _deliver(send: Any, message: tuple[Any, ...]) -> bool:
    """Send ``message``; False when the caller's connection is gone. A value that cannot be pickled
    is answered with an error saying so, not left unanswered."""
    try:
        frame = _frame(message)
    except Exception as error:
        frame = _frame(("error", message[1], RuntimeError(f"the expert's answer could not be sent: {error}")))
    try:
        await send(frame)
    except (ConnectionError, RuntimeError):  # RuntimeError: the transport is closing
        return False
    return True


def remove_socket_folder(path: str) -> None:
    """Remove a stopped actor's socket folder (the actor was killed, so it could not); only ours."""
    folder = Path(path).parent
    if folder.name.startswith(_PREFIX) and folder.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(folder, ignore_errors=True)


def _sweep_stale_directories() -> None:
    """Remove the socket folders of actors that died without closing theirs (killed processes)."""
    for entry in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = entry.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or not entry.is_dir() or entry.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            continue  # alive (another user's pid)


class ChannelClient:
    """One connection to one actor's channel, shared by every concurrent call (answers carry ids)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.loop = asyncio.get_running_loop()
        self.calls = 0  # calls sent over the channel (health, tests)
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any] | asyncio.Queue[Any]] = {}
        self._closed = False
        self._listener = asyncio.create_task(self._listen())

    @classmethod
    async def connect(cls, path: str, timeout_s: float = 2.0) -> ChannelClient:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout_s)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def usable(self) -> bool:
        """Open, and called from the event loop it belongs to (another loop goes through Ray)."""
        if self._closed:
            return False
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    async def call(self, method: str, *args: Any) -> Any:
        """``actor.<method>(*args)``; raises ``RemoteError`` for the method's own failure, ``ChannelLost``."""
        call_id = next(self._ids)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._pending[call_id] = future
        try:
            self._send(("call", call_id, method, args))
            return await future
        except asyncio.CancelledError:
            self._cancel(call_id)
            raise
        finally:
            self._pending.pop(call_id, None)

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """The items of ``actor.<method>(*args)``, an async generator; stopping early cancels it there."""
        call_id = next(self._ids)
        items: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[call_id] = items
        finished = False
        try:
            self._send(("call", call_id, method, args))
            while True:
                kind, value = await items.get()
                if kind != "item":  # "end", or a failure: the actor's (RemoteError) or the socket's
                    finished = True
                    if kind == "end":
                        return
                    raise value
                yield value
        finally:
            self._pending.pop(call_id, None)
            if not finished:
                self._cancel(call_id)

    async def close(self) -> None:
        self._fail_all(ChannelLost("channel closed"))
        self._writer.close()
        self._listener.cancel()
        with contextlib.suppress(BaseException):
            await self._listener

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._closed:
            raise ChannelLost("the expert channel is closed")
        self.calls += message[0] == "call"
        self._writer.write(_frame(message))  # a local socket drains at once; no await on the hot path

    def _cancel(self, call_id: int) -> None:
        if not self._closed:
            with contextlib.suppress(Exception):
                self._writer.write(_frame(("cancel", call_id)))

    async def _listen(self) -> None:
        try:
            while True:
                message = await _read_frame(self._reader)
                kind, call_id = message[0], message[1]
                waiter = self._pending.get(call_id)
                if waiter is None:
                    continue  # cancelled here already
                if isinstance(waiter, asyncio.Queue):
                    value = RemoteError(message[2]) if kind == "error" else message[2] if kind == "item" else None
                    waiter.put_nowait((kind, value))
                elif not waiter.done():
                    if kind == "ok":
                        waiter.set_result(message[2])
                    else:
                        waiter.set_exception(RemoteError(message[2]))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # EOF (the actor died), or a frame we cannot read
            self._fail_all(ChannelLost(f"the expert channel broke: {type(error).__name__}: {error}"))
            self._writer.close()

    def _fail_all(self, error: ChannelLost) -> None:
        self._closed = True
        for waiter in self._pending.values():
            if isinstance(waiter, asyncio.Queue):
                waiter.put_nowait(("error", error))
            elif not waiter.done():
                waiter.set_exception(error)
