"""``ExpertPool``: the experts of a pool file, each in its own Ray actor, called with failure handling.

The pool starts a local Ray instance (or joins a cluster given ``ray_address``), starts
one ``ExpertActor`` per expert with the resources its pool entry asks for, and keeps a
health table. Callers use expert names; the pool turns them into actor calls and Ray's
failures into ``ExpertUnavailable``/``ExpertCallFailed`` with the expert's name in them.

Every call goes through the expert's ``GuardedExpert`` (``experts/runtime/_guarded.py``): a timeout per
try, retries of transient failures with backoff, a circuit breaker that makes a failing expert
unroutable for a cool-down, and a new actor when the old one died (``experts/runtime/_actor_handle.py``).
Settings come from the pool file's ``resilience`` sections (``experts/config/_resilience_spec.py``).
In a pool with a ``residency`` section the local experts' actors start without loading;
``experts.runtime.dispatch._dispatcher.Dispatcher`` then drives ``control`` (load/park/unload) and ``generate_batch``.

On Ray Serve with ``serve.layout: experts`` the experts are deployments of their own, started by Serve; the ingress
hands the pool their handles (``deployments``) and the pool calls them through ``DeploymentLink``s instead of
``ActorHandle``s, with the same guards above them: one pipeline, whichever runs the experts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Literal

from experts._health import HealthReport, is_ready
from experts.actor.expert_actor import ExpertActor
from experts.config import ExpertSpec, PoolSpec
from experts.errors import ExpertCallFailed, ExpertUnavailable
from experts.runtime._actor_handle import ActorHandle
from experts.runtime._breaker import BreakerState
from experts.runtime._deployment_link import DeploymentLink
from experts.runtime._deployments import ExpertRoute, actor_options, expert_serve_settings
from experts.runtime._engines import SharedEngines
from experts.runtime._guarded import GuardedExpert
from experts.runtime._link import ExpertLink
from experts.runtime._placement import ExpertPlacement
from experts.types import Completion, GenerationRequest

__all__ = ["ExpertCallFailed", "ExpertPool", "ExpertUnavailable"]

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 2.0  # how often a pool over Serve deployments reads their replicas' health


class ExpertPool:
    """Starts, calls, watches and stops the actors of one pool."""

    def __init__(
        self,
        spec: PoolSpec,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        start_timeout_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        deployments: Mapping[str, ExpertRoute] | None = None,
    ) -> None:
        """``deployments``: each expert's route to its Serve deployment (its handle, and its name there where the
        deployment serves an engine group), when Serve runs the experts (the pool then starts no actor and no Ray
        instance of its own)."""
        if deployments is not None:
            missing = sorted({expert.name for expert in spec.experts} - set(deployments))
            if missing:
                raise ValueError(f"pool {spec.name!r}: no Serve deployment handle for expert(s) {', '.join(missing)}")
            if spec.residency is not None:
                raise ValueError(
                    f"pool {spec.name!r} has a residency section, which needs actors the pool controls; "
                    "serve it with serve.layout: pool"
                )
        self.spec = spec
        self.deployments = dict(deployments) if deployments is not None else None
        self.ray_address = ray_address
        self.num_cpus = num_cpus
        self.start_timeout_s = start_timeout_s
        self.clock = clock  # the circuit breakers' time (tests step it by hand)
        self.rng = rng or random.Random()  # retry jitter
        self._experts: dict[str, GuardedExpert] = {}
        self._remote_class: Any = None
        self._owns_ray = False
        self._watch: asyncio.Task[None] | None = None  # over Serve deployments: the health watch
        self._loaded_on_demand: set[str] = set()  # residency-managed experts told to load and not since released
        self._placement = ExpertPlacement(spec.name)  # placement groups of multi-GPU experts
        self.engines: SharedEngines | None = None  # the shared vLLM engines, once started

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> dict[str, HealthReport]:
        """Start every actor and wait until each has loaded (or failed); return the health table."""
        if self.deployments is not None:
            return await self._start_deployments(self.deployments)
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
        self._remote_class = ray.remote(ExpertActor)
        self.engines = SharedEngines(self.spec)  # local experts on vLLM: one engine actor per model
        self.engines.start()
        for expert in self.spec.experts:
            channel = self.spec.transport == "auto"
            boot = self._boot(expert.name)
            self._guard(expert, ActorHandle(expert.name, self._creator(expert), boot, self.start_timeout_s, channel))
        return await self._started("failed to start")

    async def _start_deployments(self, deployments: dict[str, ExpertRoute]) -> dict[str, HealthReport]:
        """Wait for every expert's deployment to have a ready replica (Serve starts them); the health table."""
        for expert in self.spec.experts:
            scaling = expert_serve_settings(expert, self.spec).autoscaling_config
            to_zero = scaling is not None and scaling.min_replicas == 0
            route = deployments[expert.name]
            link = DeploymentLink(
                expert.name, route.deployment, self.start_timeout_s, scales_to_zero=to_zero, persona=route.persona
            )
            self._guard(expert, link)
        table = await self._started("has no ready deployment replica")
        self._watch = asyncio.get_running_loop().create_task(self._watch_deployments())
        return table

    def _guard(self, expert: ExpertSpec, link: ExpertLink) -> None:
        """The expert's calls go through ``link`` under its timeouts, retries and breaker."""
        resilience = self.spec.resilience_for(expert.name)
        batch = expert.batching.max_batch_size
        self._experts[expert.name] = GuardedExpert(link, resilience, batch, clock=self.clock, rng=self.rng)

    async def _started(self, failure: str) -> dict[str, HealthReport]:
        """Start (or wait for) every expert's link at once; log the ones that are not ready; the health table."""
        reports = await asyncio.gather(*(guarded.handle.start() for guarded in self._experts.values()))
        for name, report in zip(self._experts, reports):
            if not is_ready(report):
                log.error("expert %s %s: %s", name, failure, report.get("error"))
        return self._table()

    async def _watch_deployments(self) -> None:
        """Ask every deployment's replicas for their health every ``WATCH_INTERVAL_S``: an expert whose replicas are
        all gone (their node stopped) stops being routed to until Serve has one running again."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self.health(timeout_s=WATCH_INTERVAL_S)
            except Exception as error:  # keep watching: the next round may reach them
                log.warning("pool %s: health of the deployments not read: %s", self.spec.name, error)

    def _creator(self, expert: ExpertSpec) -> Callable[[], Any]:
        load_at_start = not self.spec.residency_managed(expert.name)
        options = {**actor_options(expert), **self._placement.actor_options(expert)}  # multi-GPU: its group
        assert self.engines is not None
        options = self.engines.persona_options(expert.name, options)  # on a shared engine: holds no model
        channel = self.spec.transport == "auto"
        engine, namespace = self.engines.engine_of.get(expert.name), self.engines.namespace
        return lambda: self._remote_class.options(**options).remote(
            expert.model_dump(), load_at_start, channel, engine, namespace
        )

    def _boot(self, name: str) -> Callable[[Any], Any]:
        async def boot(actor: Any) -> dict[str, Any]:
            report: dict[str, Any] = await actor.start.remote()
            # a restarted expert that was told to load (and not since to park or unload) is loaded again
            if is_ready(report) and name in self._loaded_on_demand:
                await actor.load.remote()
                report = await actor.health.remote()
            return report

        return boot

    async def shutdown(self) -> None:
        """Stop every actor; stop Ray too if this pool started it."""
        import ray

        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for guarded in self._experts.values():
            await guarded.handle.close()
        self._experts.clear()
        if self.engines is not None:
            await self.engines.shutdown()
        self._placement.release()  # multi-GPU experts' reserved GPUs go back to the cluster
        self._loaded_on_demand.clear()
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
        """Routable now: its actor is ready (not restarting) and its circuit breaker lets calls through."""
        guarded = self._experts.get(name)
        return guarded is not None and guarded.available()

    def healthy_names(self) -> list[str]:
        return [name for name in self.expert_names if self.is_healthy(name)]

    def breaker_states(self) -> dict[str, str]:
        """Each expert's circuit: "closed", "open" or "half_open"."""
        return {name: guarded.breaker.state for name, guarded in self._experts.items()}

    @property
    def restarts(self) -> dict[str, int]:
        """How often each expert's actor died and was replaced."""
        return {name: guarded.handle.restarts for name, guarded in self._experts.items()}

    def expect(self, calls: Counter[str]) -> None:
        """Nothing to keep in mind: every expert of a plain pool stays resident (``ExpertClient``)."""

    async def release_all(self) -> None:
        """Nothing to give back: a plain pool's experts stay loaded until ``shutdown`` (``ExpertClient``)."""

    async def health(self, timeout_s: float = 5.0) -> dict[str, HealthReport]:
        """Ask every actor for its health now.

        A probe that times out keeps the last known state and says ``"probe": "slow"`` (a busy
        machine loading models is not a lost actor); a dead actor is restarted ("restarting").
        """
        names = list(self._experts)
        probes = await asyncio.gather(*(self._experts[name].handle.probe(timeout_s) for name in names))
        return {name: self._entry(name, report) for name, report in zip(names, probes)}

    def _table(self) -> dict[str, HealthReport]:
        return {name: self._entry(name, guarded.handle.report) for name, guarded in self._experts.items()}

    def _entry(self, name: str, report: HealthReport) -> HealthReport:
        guarded = self._experts[name]
        breaker: BreakerState = guarded.breaker.state
        return {**report, "breaker": breaker, "restarts": guarded.handle.restarts, "retries": guarded.retries}

    # -- calls -----------------------------------------------------------------------------
    def _guarded(self, name: str) -> GuardedExpert:
        guarded = self._experts.get(name)
        if guarded is None:
            if name in self.expert_names:
                raise ExpertUnavailable(f"expert {name!r} is not healthy: not started")
            raise ExpertUnavailable(f"no expert named {name!r} in pool {self.spec.name!r}")
        if not guarded.handle.ready:
            raise ExpertUnavailable(f"expert {name!r} is not healthy: {guarded.why_unavailable()}")
        return guarded

    @property
    def _actors(self) -> dict[str, Any]:
        """The current Ray actor of each expert (fault tests kill them)."""
        return {name: guarded.handle.actor for name, guarded in self._experts.items()}

    async def generate(self, name: str, request: GenerationRequest) -> Completion:
        return await self._guarded(name).generate(request)

    def honours(self, name: str, field: str) -> bool:
        """Whether the expert acts on the request's ``field``: ``ExpertSpec.supports`` says what its backend does;
        an expert on vLLM's engine also calls tools (``experts/vllm/tools.py``) and reports log-probabilities,
        which ours and the hosted APIs here do not."""
        on_vllm = self.engines is not None and name in self.engines.engine_of
        if field == "logprobs":
            return on_vllm
        return self.spec.expert(name).supports(field) or (on_vllm and field in ("tools", "tool_choice"))

    async def generate_batch(self, name: str, requests: list[GenerationRequest]) -> list[Completion | Exception]:
        """Several requests to one expert in one actor call (its batcher sees them together); failures in place."""
        return list(await self._guarded(name).generate_batch(requests))

    async def control(self, name: str, action: Literal["load", "park", "unload"]) -> dict[str, Any]:
        """Load, park or unload an expert's model (residency-managed pools); returns the actor's timing report.

        The pool remembers what it was told: an actor restarted after a crash is loaded again if its model was.
        """
        report = await self._guarded(name).control(action)
        if action == "load":
            self._loaded_on_demand.add(name)
        else:
            self._loaded_on_demand.discard(name)
        return report

    async def stream(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        """Yield text pieces from the expert's actor, then its ``Completion``."""
        async for item in self._guarded(name).stream(request):
            yield item


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
