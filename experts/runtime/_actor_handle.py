"""``ActorHandle``: one expert's Ray actor, one try at a time, and a new actor when it dies.

Each try is bounded by a timeout (for a stream: the wait for the first piece and between
pieces); a try whose caller is cancelled (the client went away) or that times out cancels its
Ray task, so the actor's batcher drops the request if it has not started. Ray's failures
become ``ExpertCallFailed`` with a code ``experts.runtime._retry`` understands:

* the actor died (``ActorDiedError``, e.g. killed or out of memory): a replacement actor is
  created with the same options and started (loaded) in the background; the try fails with
  ``actor_died`` and the caller may wait for the restart (``wait_restarted``) and try again;
* Ray could not reach the actor for a moment (``ActorUnavailableError``): ``actor_unavailable``;
* no answer within the timeout: ``expert_timeout``.

Calls go over the actor's same-node channel (``experts/_channel.py``, a Unix socket, ~0.1 ms
instead of a Ray call's 2-4 ms) when the actor offers one, runs on this node and the pool
allows it; everything else, and every call after the channel breaks, goes through Ray. A
broken channel is never a verdict on its own: the call is made again through Ray, which
tells a dead actor (restart) from a live one.

The handle keeps the actor's last health report; a health probe that times out (a busy
machine loading models) keeps it and adds ``"probe": "slow"`` instead of declaring the actor
lost. Retries and the circuit breaker are ``experts.runtime._guarded``'s business, not this one's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any

from experts._channel import DATA_METHODS, ChannelClient, ChannelLost, RemoteError, remove_socket_folder
from experts._health import ExpertState, HealthReport, is_ready
from experts.errors import ErrorCode, ExpertCallFailed
from experts.types import Completion, GenerationRequest

log = logging.getLogger(__name__)

Create = Callable[[], Any]  # a new Ray actor for this expert (not started)
Boot = Callable[[Any], Awaitable[dict[str, Any]]]  # start (load) it; its health report, never raises


class ActorHandle:
    """The current actor of one expert, its last health report and how often it was restarted."""

    def __init__(self, name: str, create: Create, boot: Boot, start_timeout_s: float, channel: bool = True) -> None:
        self.name = name
        self.use_channel = channel  # the pool file's ``transport``: auto (True) or ray (False)
        self.channel: ChannelClient | None = None
        self._create = create
        self._boot = boot
        self.start_timeout_s = start_timeout_s
        self.actor: Any = None
        self.report: HealthReport = {"name": name, "state": ExpertState.STARTING, "error": None}
        self.restarts = 0
        self.closed = False
        self._restart: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> HealthReport:
        """Create the actor and wait until it has loaded (or failed); never raises."""
        self.actor = self._create()
        self.report = await self._booted(self.actor, "did not start")
        await self._connect()
        return self.report

    async def _booted(self, actor: Any, failure: str) -> HealthReport:
        try:
            return await asyncio.wait_for(self._boot(actor), self.start_timeout_s)
        except Exception as error:
            return {"name": self.name, "state": ExpertState.FAILED, "error": f"actor {failure}: {root_message(error)}"}

    @property
    def restarting(self) -> bool:
        return self._restart is not None and not self._restart.done()

    @property
    def ready(self) -> bool:
        return not self.restarting and is_ready(self.report)

    def restart(self, dead: Any, reason: str) -> None:
        """Replace the actor ``dead`` (once, however many callers saw it die) in the background."""
        if self.closed or self.restarting or dead is not self.actor:
            return  # shutting down, or already being (or been) replaced
        self.restarts += 1
        self.report = {**self.report, "state": ExpertState.RESTARTING, "error": f"actor died ({reason}); restarting"}
        log.warning("expert %s: actor died (%s); restart %d", self.name, reason, self.restarts)
        self._restart = asyncio.get_running_loop().create_task(self._replace(dead))

    async def _replace(self, dead: Any) -> None:
        import ray

        with suppress(Exception):  # it is dead already; make sure Ray does not bring it back on its own
            ray.kill(dead, no_restart=True)
        await self._disconnect(remove=True)
        self.actor = self._create()
        self.report = await self._booted(self.actor, "did not restart")
        await self._connect()
        if is_ready(self.report):
            log.info("expert %s: actor restarted and ready", self.name)
        else:
            log.error("expert %s: actor restart failed: %s", self.name, self.report.get("error"))

    async def wait_restarted(self, timeout_s: float | None) -> bool:
        """Wait (at most ``timeout_s``) for a restart in progress; True when the actor is ready again."""
        task = self._restart
        if task is not None and not task.done():
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
        return self.ready

    async def close(self) -> None:
        """Stop the actor and any restart in progress."""
        import ray

        self.closed = True
        if self._restart is not None and not self._restart.done():
            self._restart.cancel()
            with suppress(BaseException):
                await self._restart
        path = self.channel_path
        await self._disconnect()
        if self.actor is not None:
            with suppress(Exception):  # already dead: nothing left to stop
                ray.kill(self.actor)
        if path is not None:
            remove_socket_folder(path)

    # -- the same-node channel -------------------------------------------------------------
    async def _connect(self) -> None:
        """Open the actor's channel when it offers one on this node (else calls use Ray)."""
        path = self.report.get("channel")
        if not self.use_channel or not path or not is_ready(self.report) or self.closed:
            return
        if self.report.get("node") != _local_node():
            return  # another node: its socket is not reachable from here
        try:
            self.channel = await ChannelClient.connect(str(path))
        except (OSError, asyncio.TimeoutError) as error:
            log.warning("expert %s: no same-node channel (%s); calls go through Ray", self.name, error)

    @property
    def channel_path(self) -> str | None:
        """The current actor's socket, when it is on this node (the folder is ours to clean up)."""
        path = self.report.get("channel")
        return str(path) if path and self.report.get("node") == _local_node() else None

    async def _disconnect(self, remove: bool = False) -> None:
        """Close the channel; ``remove``: the actor is dead, so its socket folder goes too."""
        channel, self.channel = self.channel, None
        path = self.channel_path if remove else None
        if channel is not None:
            await channel.close()
        if path is not None:
            remove_socket_folder(path)

    def _usable_channel(self) -> ChannelClient | None:
        channel = self.channel
        if channel is not None and channel.closed:  # it broke; the next good health probe opens a new one
            self.channel = None
            return None
        return channel if channel is not None and channel.usable else None

    # -- one try ---------------------------------------------------------------------------
    async def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``actor.<method>(*args)`` once, within ``timeout_s``; Ray's failures as ``ExpertCallFailed``."""
        channel = self._usable_channel() if method in DATA_METHODS else None
        if channel is not None:
            try:
                return await self._call_channel(channel, method, args, timeout_s)
            except ChannelLost as error:  # dead, or just the socket? Ray will say: same call through Ray
                await self._lost(channel, error)
        actor = self.actor
        ref = getattr(actor, method).remote(*args)
        try:
            return await asyncio.wait_for(_await(ref), timeout_s)
        except asyncio.TimeoutError:
            _cancel(ref)
            raise self._timed_out(timeout_s) from None
        except asyncio.CancelledError:
            _cancel(ref)  # the caller went away: the actor drops the request if it has not started
            raise
        except Exception as error:
            raise self._failure(actor, error) from error

    async def _call_channel(
        self, channel: ChannelClient, method: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        try:
            async with asyncio.timeout(timeout):  # unlike wait_for, no extra task per call (Python 3.11)
                return await channel.call(method, *args)
        except TimeoutError:  # the timeout cancelled the call: the channel told the actor
            raise self._timed_out(timeout) from None
        except RemoteError as error:
            raise self._failure(self.actor, error) from error

    async def _lost(self, channel: ChannelClient, error: ChannelLost) -> None:
        log.warning("expert %s: %s; calls go through Ray", self.name, error)
        if self.channel is channel:
            await self._disconnect()

    async def stream(self, request: GenerationRequest, timeout_s: float | None) -> AsyncIterator[str | Completion]:
        """The actor's stream, each item (the first piece, each next one) within ``timeout_s``."""
        channel = self._usable_channel()
        if channel is not None:
            sent = False
            try:
                async for item in self._stream_channel(channel, request, timeout_s):
                    sent = True
                    yield item
                return
            except ChannelLost as error:
                await self._lost(channel, error)
                if sent:  # part of the answer is out: no silent restart; say whether the actor died
                    await self.call("health", timeout_s=timeout_s)
                    raise ExpertCallFailed(
                        f"expert {self.name!r}: the stream broke off ({error})", ErrorCode.ACTOR_UNAVAILABLE
                    ) from error
        async for item in self._stream_ray(request, timeout_s):
            yield item

    async def _stream_channel(
        self, channel: ChannelClient, request: GenerationRequest, timeout_s: float | None
    ) -> AsyncIterator[str | Completion]:
        items = channel.stream("stream", request)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(anext(items), timeout_s)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise self._timed_out(timeout_s, "its next streamed piece") from None
                except RemoteError as error:
                    raise self._failure(self.actor, error) from error
                yield item
        finally:
            await items.aclose()

    async def _stream_ray(self, request: GenerationRequest, timeout_s: float | None) -> AsyncIterator[str | Completion]:
        actor = self.actor
        generator = actor.stream.remote(request)
        finished = False
        try:
            while True:
                try:
                    item = await asyncio.wait_for(_next(generator), timeout_s)
                except StopAsyncIteration:
                    finished = True
                    return
                except asyncio.TimeoutError:
                    raise self._timed_out(timeout_s, "its next streamed piece") from None
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    finished = True  # the remote generator is over
                    raise self._failure(actor, error) from error
                yield item
        finally:
            if not finished:  # timed out, or the consumer stopped listening
                _cancel(generator)

    async def probe(self, timeout_s: float) -> HealthReport:
        """Ask the actor for its health; a slow answer keeps the last report, a dead actor is restarted."""
        if self.restarting or self.actor is None:
            return self.report
        actor = self.actor
        ref = actor.health.remote()
        try:
            self.report = await asyncio.wait_for(_await(ref), timeout_s)
            if self.channel is None:
                await self._connect()  # the channel broke earlier but the actor lives: use it again
        except asyncio.TimeoutError:
            _cancel(ref)
            return {**self.report, "probe": "slow"}  # busy (loading a model?), not lost: keep the last state
        except Exception as error:
            failure = self._failure(actor, error)
            if failure.code == ErrorCode.ACTOR_UNAVAILABLE:
                return {**self.report, "probe": "unreachable"}
            if failure.code != ErrorCode.ACTOR_DIED:  # the actor answered with an error: report it, it stays unroutable
                self.report = {**self.report, "state": ExpertState.UNREACHABLE, "error": str(failure)}
        return self.report

    # -- errors ----------------------------------------------------------------------------
    def _timed_out(self, timeout_s: float | None, what: str = "an answer") -> ExpertCallFailed:
        return ExpertCallFailed(
            f"expert {self.name!r} timed out: no {what} within {timeout_s:g} s (resilience.timeout_s)",
            ErrorCode.EXPERT_TIMEOUT,
        )

    def _failure(self, actor: Any, error: BaseException) -> ExpertCallFailed:
        from ray.exceptions import ActorUnavailableError, RayActorError

        if isinstance(error, ActorUnavailableError):
            return ExpertCallFailed(
                f"expert {self.name!r} is unreachable for now: {root_message(error)}", ErrorCode.ACTOR_UNAVAILABLE
            )
        if isinstance(error, RayActorError):
            reason = root_message(error)
            self.restart(actor, reason)
            return ExpertCallFailed(
                f"expert {self.name!r} failed: its actor died ({reason}); restarting", ErrorCode.ACTOR_DIED
            )
        return ExpertCallFailed(f"expert {self.name!r} failed: {root_message(error)}")


async def _await(ref: Any) -> Any:
    return await ref


async def _next(generator: Any) -> Any:
    ref = await generator.__anext__()
    return await ref


def _local_node() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _cancel(ref: Any) -> None:
    import ray

    with suppress(Exception):  # finished already, or its actor is gone
        ray.cancel(ref)


def root_message(error: BaseException) -> str:
    """Ray wraps an actor's exception in a long traceback; keep the original message."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
