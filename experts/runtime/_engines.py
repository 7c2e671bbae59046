"""Shared vLLM engines: one engine actor per model, however many experts (personas) name it.

The default pool runs four personas and an aggregator on one SmolLM2. On our own engine each is an actor holding
its own copy; on vLLM they share one: experts whose engine resolves to vLLM (``experts.config._engine_choice``) are
grouped by what makes an engine (the model, its resources, the engine options), and each group gets one
``VllmEngineActor`` with the group's resources. The personas' actors stay (each expert keeps its own queue, health,
breaker, restarts and usage) but hold no model and ask the cluster for nothing; their requests meet in the engine,
where vLLM's scheduler batches them.

A residency-managed expert on vLLM gets an engine of its own: evicting it releases the engine, which sleeps (CUDA:
vLLM's sleep mode, weights to host RAM) or stops (memory freed), and loading it wakes or rebuilds it, under the same
budgets as any managed expert (its footprint counts the KV cache, ``options.kv_cache_gb``, beside the weights).

The engine actor runs in the engine environment (``runtime_env.py_executable``, with this checkout on its
``PYTHONPATH`` so our module imports there) and is restarted by Ray if it dies (``max_restarts``); a persona's
calls meanwhile fail and go through the pool's retries and breakers like any expert's.

Runs in: the driver. May import: ``experts.config``, ``experts.vllm.engine_actor`` (to name the actor class).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experts.config import (
    Engine,
    EngineChoice,
    EngineEnvironment,
    EngineUnavailable,
    ExpertSpec,
    PoolSpec,
    choose_engine,
    cpu_flags,
    fast_bf16,
    find_engine_environment,
    prepared_directory,
    resolve_model,
)
from experts.errors import BackendError
from experts.vllm.engine_actor import EngineSettings, VllmEngineActor, kv_cache_gb

log = logging.getLogger(__name__)

CODE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the `experts` package
ENGINE_RESTARTS = 3


@dataclass(frozen=True)
class EngineGroup:
    """The experts one engine actor serves, and how that engine runs."""

    name: str  # the engine actor's name (unique per pool start)
    model: str
    settings: EngineSettings
    experts: tuple[str, ...]
    num_cpus: float
    num_gpus: float
    memory_gb: float | None
    threads: int
    custom: tuple[tuple[str, float], ...] = ()  # custom resources (a node's label): where the engine runs


def engine_settings(
    expert: ExpertSpec, flags: frozenset[str] = frozenset(), residency_managed: bool = False
) -> EngineSettings:
    """An expert's engine settings from its pool entry (``options`` and ``resources``); the default dtype is the
    model's own on CUDA, bf16 on a CPU that does bf16 natively, else fp32. On CUDA, sleep mode is on (parking puts
    the engine to sleep) and a residency-managed expert's KV cache is pinned to ``kv_cache_gb``."""
    options, resources = expert.options, expert.resources
    cuda = resources.device == "cuda" or resources.num_gpus > 0
    default_dtype = "auto" if cuda else "bfloat16" if fast_bf16(flags) else "float32"
    return EngineSettings(
        dtype=str(options.get("dtype", default_dtype)),
        device="cuda" if cuda else "cpu",
        max_model_len=int(options.get("max_len", 2048)),
        max_num_seqs=int(options.get("max_num_seqs", 64)),
        kv_cache_gb=kv_cache_gb(float(options.get("kv_cache_gb", 1.0)), "cuda" if cuda else "cpu"),
        gpu_memory_utilization=float(options.get("gpu_memory_utilization", 0.85)),
        tensor_parallel_size=max(1, int(resources.num_gpus)) if cuda else 1,
        enable_prefix_caching=bool(options.get("prefix_caching", True)),
        enforce_eager=bool(options.get("enforce_eager", not cuda)),
        sleep_mode=cuda and bool(options.get("sleep_mode", True)),
        tool_parser=str(options["tool_parser"]) if options.get("tool_parser") else None,
        kv_cache_pinned=cuda and (residency_managed or "kv_cache_gb" in options),
    )


def engine_actor_options(group: EngineGroup, environment: EngineEnvironment) -> dict[str, Any]:
    """``ray.remote(VllmEngineActor).options`` of a group's engine actor, less its name and namespace: the group's
    resources, and the engine environment (its Python, with this checkout importable there, and vLLM's settings)."""
    env_vars = {
        "PYTHONPATH": str(CODE_ROOT),  # our engine actor's module, in the engine environment
        "OMP_NUM_THREADS": str(group.threads),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # Ray places the actor; threads as resources.torch_threads
        "VLLM_CPU_KVCACHE_SPACE": str(int(group.settings.kv_cache_gb)),  # whole GiB (kv_cache_gb rounds up)
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",  # its INFO lines would flood the serving process (Ray forwards them)
    }
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    if environment.python is not None and not environment.same_python:
        runtime_env["py_executable"] = environment.python
    options: dict[str, Any] = {
        "num_cpus": group.num_cpus,
        "num_gpus": group.num_gpus,
        "max_concurrency": 1000,  # an async actor: every persona's requests at once
        "max_restarts": ENGINE_RESTARTS,
        "runtime_env": runtime_env,
    }
    if group.memory_gb:
        options["memory"] = int(group.memory_gb * 1024**3)
    if group.custom:
        options["resources"] = dict(group.custom)
    return options


class SharedEngines:
    """Which experts run on a shared vLLM engine, and the engine actors that serve them (started by ``start``)."""

    def __init__(
        self,
        spec: PoolSpec,
        environment: EngineEnvironment | None = None,
        flags: frozenset[str] | None = None,
    ) -> None:
        self.spec = spec
        self.environment = environment or find_engine_environment()
        flags = cpu_flags() if flags is None else flags
        self.flags = flags
        self.choices: dict[str, EngineChoice] = {}
        keys = {expert.name: self._key(expert) for expert in spec.experts if expert.backend == "local"}
        for expert in spec.experts:
            sharing = sum(1 for key in keys.values() if key == keys.get(expert.name))
            try:
                managed = spec.residency_managed(expert.name)
                choice = choose_engine(expert, self.environment, flags, managed, sharing)
            except EngineUnavailable as error:  # that expert fails to load, saying this; the others start
                choice = EngineChoice(Engine.NATIVE, str(error))
            self.choices[expert.name] = choice
        self.groups = self._group()
        self.engine_of = {name: group.name for group in self.groups for name in group.experts}
        self._actors: dict[str, Any] = {}
        self._preloads: list[Any] = []  # the engines' early loads (their errors reach the personas' own loads)
        self.namespace: str | None = None

    def _key(self, expert: ExpertSpec) -> str:
        """What makes one engine: experts with equal keys can share it. A residency-managed expert has one of its
        own, so that loading and evicting it moves exactly its model."""
        managed = self.spec.residency_managed(expert.name)
        settings = engine_settings(expert, self.flags, managed)
        own = expert.name if managed else None
        return json.dumps([expert.model, asdict(settings), expert.resources.model_dump(), own], sort_keys=True)

    def _group(self) -> list[EngineGroup]:
        by_key: dict[str, list[ExpertSpec]] = {}
        for expert in self.spec.experts:
            if self.choices[expert.name].engine is Engine.VLLM:
                by_key.setdefault(self._key(expert), []).append(expert)
        run = uuid.uuid4().hex[:6]  # two pools in one Ray namespace (tests) never share a name
        groups = []
        for key, experts in by_key.items():
            first = experts[0]
            digest = hashlib.sha256(key.encode()).hexdigest()[:8]
            groups.append(
                EngineGroup(
                    name=f"moesaic-engine-{self.spec.name}-{digest}-{run}",
                    model=first.model,
                    settings=engine_settings(first, self.flags, self.spec.residency_managed(first.name)),
                    experts=tuple(e.name for e in experts),
                    num_cpus=first.resources.num_cpus,
                    num_gpus=first.resources.num_gpus,
                    memory_gb=first.resources.memory_gb,
                    threads=first.resources.torch_threads,
                    custom=tuple(sorted(first.resources.custom.items())),
                )
            )
        return groups

    def start(self) -> None:
        """Start every group's engine actor; one that is not residency-managed loads its model at once where the
        model is on disk ready to load (else when the first persona has prepared it)."""
        import ray

        self.namespace = ray.get_runtime_context().namespace
        for expert in self.spec.experts:
            if expert.backend == "local":
                choice = self.choices[expert.name]
                log.info("expert %s runs on engine %s: %s", expert.name, choice.engine.value, choice.reason)
        remote = ray.remote(VllmEngineActor)
        for group in self.groups:
            options = {**engine_actor_options(group, self.environment), "name": group.name, "namespace": self.namespace}
            actor = self._actors[group.name] = remote.options(**options).remote(asdict(group.settings))
            directory = self._ready_directory(group)
            if directory is not None:  # the engine loads while the personas' actors start
                self._preloads.append(actor.preload.remote(str(directory)))
            log.info(
                "vLLM engine %s for %s serves %s (%s)",
                group.name,
                group.model,
                ", ".join(group.experts),
                self.environment.source,
            )

    def _ready_directory(self, group: EngineGroup) -> Path | None:
        """The model's directory when the engine loads at start (not residency-managed) and the model is on disk
        ready to load (an ``embedded:`` model dequantised already); else None: the first persona prepares it."""
        if any(self.spec.residency_managed(name) for name in group.experts):
            return None
        try:
            return prepared_directory(resolve_model(group.model))
        except BackendError:  # a model that is not there: the personas' loads say so
            return None

    def persona_options(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """A persona's actor options: when its model is in a shared engine, it asks the cluster for nothing."""
        if name not in self.engine_of:
            return options
        return {key: value for key, value in options.items() if key != "memory"} | {"num_cpus": 0, "num_gpus": 0}

    def describe(self) -> dict[str, dict[str, str]]:
        """Per expert: its engine and why (``moesaic experts``, the start-up log, tests)."""
        return {
            name: {"engine": choice.engine.value, "reason": choice.reason, "engine_actor": self.engine_of.get(name, "")}
            for name, choice in self.choices.items()
        }

    async def stats(self) -> dict[str, dict[str, int]]:
        """Each engine's counters (requests, the most held at once, aborts, tokens)."""
        return {name: await actor.stats.remote() for name, actor in self._actors.items()}

    async def shutdown(self) -> None:
        import ray

        for name, actor in self._actors.items():
            try:
                await actor.shutdown.remote()
            except Exception as error:  # already dead: nothing to stop
                log.debug("engine %s did not shut down cleanly: %s", name, error)
            ray.kill(actor)
        self._actors.clear()
