"""``ActorHandle``: one expert's Ray actor, one try at a time, and a new actor when it dies.

Each try is bounded by a timeout (for a stream: the wait for the first piece and between
pieces); a try whose caller is cancelled (the client went away) or that times out cancels its
Ray task, so the actor's batcher drops the request if it has not started. Ray's failures
become ``ExpertCallFailed`` with a code ``experts.retry`` understands:

* the actor died (``ActorDiedError``, e.g. killed or out of memory): a replacement actor is
  created with the same options and started (loaded) in the background; the try fails with
  ``actor_died`` and the caller may wait for the restart (``wait_restarted``) and try again;
* Ray could not reach the actor for a moment (``ActorUnavailableError``): ``actor_unavailable``;
* no answer within the timeout: ``expert_timeout``.

The handle keeps the actor's last health report; a health probe that times out (a busy
machine loading models) keeps it and adds ``"probe": "slow"`` instead of declaring the actor
lost. Retries and the circuit breaker are ``experts.guarded``'s business, not this one's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any

from experts.errors import ExpertCallFailed
from experts.retry import ACTOR_DIED, ACTOR_UNAVAILABLE, EXPERT_TIMEOUT
from experts.types import Completion, GenerationRequest

log = logging.getLogger(__name__)

Create = Callable[[], Any]  # a new Ray actor for this expert (not started)
Boot = Callable[[Any], Awaitable[dict[str, Any]]]  # start (load) it; its health report, never raises


class ActorHandle:
    """The current actor of one expert, its last health report and how often it was restarted."""

    def __init__(self, name: str, create: Create, boot: Boot, start_timeout_s: float) -> None:
        self.name = name
        self._create = create
        self._boot = boot
        self.start_timeout_s = start_timeout_s
        self.actor: Any = None
        self.report: dict[str, Any] = {"name": name, "state": "starting", "error": None}
        self.restarts = 0
        self.closed = False
        self._restart: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        """Create the actor and wait until it has loaded (or failed); never raises."""
        self.actor = self._create()
        self.report = await self._booted(self.actor, "did not start")
        return self.report

    async def _booted(self, actor: Any, failure: str) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._boot(actor), self.start_timeout_s)
        except Exception as error:
            return {"name": self.name, "state": "failed", "error": f"actor {failure}: {_root_message(error)}"}

    @property
    def restarting(self) -> bool:
        return self._restart is not None and not self._restart.done()

    @property
    def ready(self) -> bool:
        return not self.restarting and self.report.get("state") == "ready"

    def restart(self, dead: Any, reason: str) -> None:
        """Replace the actor ``dead`` (once, however many callers saw it die) in the background."""
        if self.closed or self.restarting or dead is not self.actor:
            return  # shutting down, or already being (or been) replaced
        self.restarts += 1
        self.report = {**self.report, "state": "restarting", "error": f"actor died ({reason}); restarting"}
        log.warning("expert %s: actor died (%s); restart %d", self.name, reason, self.restarts)
        self._restart = asyncio.get_running_loop().create_task(self._replace(dead))

    async def _replace(self, dead: Any) -> None:
        import ray

        with suppress(Exception):  # it is dead already; make sure Ray does not bring it back on its own
            ray.kill(dead, no_restart=True)
        self.actor = self._create()
        self.report = await self._booted(self.actor, "did not restart")
        if self.report.get("state") == "ready":
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
        if self.actor is not None:
            with suppress(Exception):  # already dead: nothing left to stop
                ray.kill(self.actor)

    # -- one try ---------------------------------------------------------------------------
    async def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``actor.<method>(*args)`` once, within ``timeout_s``; Ray's failures as ``ExpertCallFailed``."""
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

    async def stream(self, request: GenerationRequest, timeout_s: float | None) -> AsyncIterator[str | Completion]:
        """The actor's stream, each item (the first piece, each next one) within ``timeout_s``."""
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

    async def probe(self, timeout_s: float) -> dict[str, Any]:
        """Ask the actor for its health; a slow answer keeps the last report, a dead actor is restarted."""
        if self.restarting or self.actor is None:
            return self.report
        actor = self.actor
        ref = actor.health.remote()
        try:
            self.report = await asyncio.wait_for(_await(ref), timeout_s)
        except asyncio.TimeoutError:
            _cancel(ref)
            return {**self.report, "probe": "slow"}  # busy (loading a model?), not lost: keep the last state
        except Exception as error:
            failure = self._failure(actor, error)
            if failure.code == ACTOR_UNAVAILABLE:
                return {**self.report, "probe": "unreachable"}
            if failure.code != ACTOR_DIED:  # the actor answered with an error: report it, it stays unroutable
                self.report = {**self.report, "state": "unreachable", "error": str(failure)}
        return self.report

    # -- errors ----------------------------------------------------------------------------
    def _timed_out(self, timeout_s: float | None, what: str = "an answer") -> ExpertCallFailed:
        return ExpertCallFailed(
            f"expert {self.name!r} timed out: no {what} within {timeout_s:g} s (resilience.timeout_s)", EXPERT_TIMEOUT
        )

    def _failure(self, actor: Any, error: BaseException) -> ExpertCallFailed:
        from ray.exceptions import ActorUnavailableError, RayActorError

        if isinstance(error, ActorUnavailableError):
            return ExpertCallFailed(
                f"expert {self.name!r} is unreachable for now: {_root_message(error)}", ACTOR_UNAVAILABLE
            )
        if isinstance(error, RayActorError):
            reason = _root_message(error)
            self.restart(actor, reason)
            return ExpertCallFailed(f"expert {self.name!r} failed: its actor died ({reason}); restarting", ACTOR_DIED)
        return ExpertCallFailed(f"expert {self.name!r} failed: {_root_message(error)}")


async def _await(ref: Any) -> Any:
    return await ref


async def _next(generator: Any) -> Any:
    ref = await generator.__anext__()
    return await ref


def _cancel(ref: Any) -> None:
    import ray

    with suppress(Exception):  # finished already, or its actor is gone
        ray.cancel(ref)


def _root_message(error: BaseException) -> str:
    """Ray wraps an actor's exception in a long traceback; keep the original message."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
