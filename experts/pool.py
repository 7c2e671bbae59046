"""``ExpertPool``: the experts of a pool file, each in its own Ray actor.

The pool starts a local Ray instance (or joins a cluster given ``ray_address``), starts
one ``ExpertActor`` per expert with the resources its pool entry asks for, and keeps a
health table. Callers use expert names; the pool turns them into actor calls and Ray's
failures into ``ExpertUnavailable``/``ExpertCallFailed`` with the expert's name in them.
In a pool with a ``residency`` section the local experts' actors start without loading;
``experts.dispatcher.Dispatcher`` then drives ``control`` (load/park/unload) and ``generate_batch``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Literal

from experts.actor import ExpertActor
from experts.spec import ExpertSpec, PoolSpec
from experts.types import Completion, GenerationRequest

log = logging.getLogger(__name__)


class ExpertUnavailable(RuntimeError):
    """The expert does not exist or is not healthy."""


class ExpertCallFailed(RuntimeError):
    """The expert could not answer; ``code`` says when it was the request's fault."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ExpertPool:
    """Starts, calls, watches and stops the actors of one pool."""

    def __init__(
        self,
        spec: PoolSpec,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        start_timeout_s: float = 900.0,
    ) -> None:
        self.spec = spec
        self.ray_address = ray_address
        self.num_cpus = num_cpus
        self.start_timeout_s = start_timeout_s
        self._actors: dict[str, Any] = {}
        self._health: dict[str, dict[str, Any]] = {}
        self._owns_ray = False
        self.dispatcher: Any = None  # its one Dispatcher, if any (experts.dispatcher.dispatching)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> dict[str, dict[str, Any]]:
        """Start every actor and wait until each has loaded (or failed); return the health table."""
        import ray

        if not ray.is_initialized():
            with _keep_signal_handlers():
                ray.init(
                    address=self.ray_address,
                    num_cpus=None if self.ray_address else self.num_cpus,
                    include_dashboard=False,
                    namespace="moesaic",
                    runtime_env=self._runtime_env(),
                )
            self._owns_ray = True
        remote_class = ray.remote(ExpertActor)
        for expert in self.spec.experts:
            load_at_start = not self.spec.residency_managed(expert.name)
            options = _actor_options(expert)
            self._actors[expert.name] = remote_class.options(**options).remote(expert.model_dump(), load_at_start)
        names = list(self._actors)
        starts = [self._actors[name].start.remote() for name in names]
        results = await asyncio.wait_for(asyncio.gather(*starts, return_exceptions=True), self.start_timeout_s)
        for name, result in zip(names, results):
            if isinstance(result, BaseException):
                result = {"name": name, "state": "failed", "error": f"actor did not start: {result}"}
            self._health[name] = result
            if result["state"] != "ready":
                log.error("expert %s failed to start: %s", name, result.get("error"))
        return dict(self._health)

    async def shutdown(self) -> None:
        """Stop every actor; stop Ray too if this pool started it."""
        import ray

        for actor in self._actors.values():
            try:
                ray.kill(actor)
            except Exception as error:  # already dead: nothing left to stop
                log.debug("kill failed: %s", error)
        self._actors.clear()
        self._health.clear()
        self.dispatcher = None  # its view of the (now gone) actors
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False

    def _runtime_env(self) -> dict[str, Any] | None:
        # Workers on other machines of a cluster need our code; a local instance shares this venv.
        if not self.ray_address:
            return None
        import experts

        return {"py_modules": [str(Path(experts.__file__).parent)]}

    # -- health ----------------------------------------------------------------------------
    @property
    def expert_names(self) -> list[str]:
        return [expert.name for expert in self.spec.experts]

    def is_healthy(self, name: str) -> bool:
        return self._health.get(name, {}).get("state") == "ready"

    def healthy_names(self) -> list[str]:
        return [name for name in self.expert_names if self.is_healthy(name)]

    async def health(self, timeout_s: float = 5.0) -> dict[str, dict[str, Any]]:
        """Ask every actor for its health now; an actor that does not answer is 'unreachable'."""
        names = list(self._actors)
        calls = [asyncio.wait_for(_await_ref(self._actors[name].health.remote()), timeout_s) for name in names]
        for name, result in zip(names, await asyncio.gather(*calls, return_exceptions=True)):
            if isinstance(result, BaseException):
                result = {**self._health.get(name, {}), "name": name, "state": "unreachable", "error": str(result)}
            self._health[name] = result
        return dict(self._health)

    # -- calls -----------------------------------------------------------------------------
    def _actor(self, name: str) -> Any:
        if name not in self._actors:
            raise ExpertUnavailable(f"no expert named {name!r} in pool {self.spec.name!r}")
        if not self.is_healthy(name):
            error = self._health.get(name, {}).get("error")
            raise ExpertUnavailable(f"expert {name!r} is not healthy: {error or 'not started'}")
        return self._actors[name]

    async def generate(self, name: str, request: GenerationRequest) -> Completion:
        actor = self._actor(name)
        try:
            return await actor.generate.remote(request)
        except Exception as error:
            raise ExpertCallFailed(f"expert {name!r} failed: {_root_message(error)}") from error

    async def generate_batch(self, name: str, requests: list[GenerationRequest]) -> list[Completion | Exception]:
        """Several requests to one expert in one actor call (its batcher sees them together); failures in place."""
        actor = self._actor(name)
        try:
            results = await actor.generate_batch.remote(requests)
        except Exception as error:
            raise ExpertCallFailed(f"expert {name!r} failed: {_root_message(error)}") from error
        return [
            ExpertCallFailed(f"expert {name!r} failed: {type(r).__name__}: {r}") if isinstance(r, BaseException) else r
            for r in results
        ]

    async def control(self, name: str, action: Literal["load", "park", "unload"]) -> dict[str, Any]:
        """Load, park or unload an expert's model (residency-managed pools); returns the actor's timing report."""
        actor = self._actor(name)
        try:
            return await getattr(actor, action).remote()
        except Exception as error:
            raise ExpertCallFailed(f"expert {name!r} could not {action}: {_root_message(error)}") from error

    async def stream(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        """Yield text pieces from the expert's actor, then its ``Completion``."""
        actor = self._actor(name)
        try:
            async for ref in actor.stream.remote(request):
                yield await ref
        except Exception as error:
            raise ExpertCallFailed(f"expert {name!r} failed: {_root_message(error)}") from error


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` replaces SIGTERM/SIGINT handlers; put back the server's so it shuts down cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            if handler is not None:
                signal.signal(number, handler)


def _actor_options(expert: ExpertSpec) -> dict[str, Any]:
    resources = expert.resources
    options: dict[str, Any] = {
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "max_concurrency": 1000,  # an async actor: many callers wait on one queue
    }
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * 1024**3)
    # An API key named in the pool file travels with the actor, so it works on any node of a cluster.
    key_env = expert.options.get("api_key_env")
    if key_env and os.environ.get(key_env):
        options["runtime_env"] = {"env_vars": {key_env: os.environ[key_env]}}
    return options


async def _await_ref(ref: Any) -> Any:
    return await ref


def _root_message(error: BaseException) -> str:
    """Ray wraps an actor's exception in a long traceback; keep the original message."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
