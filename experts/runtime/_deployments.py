"""What Ray runs each expert in: its actor's options, and the options of its Serve deployment.

One expert's resources (CPUs, GPUs, memory, custom resources naming a node), the API key its hosted model reads, and,
above one GPU, the placement that keeps its GPUs together: for an actor the pool starts (``moesaic serve``), and for
the expert's own Serve deployment (``serve.layout: experts``), whose replicas and autoscaling come from the pool
file's ``serve.experts`` and the expert's own ``serve`` entry.

Experts that share one vLLM engine (``experts.runtime._engines``: the same model, resources and engine options) are
one deployment, ``engine-<model>``: each replica is one engine and its personas (``EngineGroupReplica``), placed by
the group's resources in a placement group of one bundle, so the engine lands beside its personas. The ingress
reaches each expert through an ``ExpertRoute``: the deployment, and the persona where the deployment serves several.

Runs in: the driver (the pool, and the process that builds the Serve application). May import: ``experts.config``,
``experts.runtime._engines``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from experts.config import EngineEnvironment, ExpertServeSpec, ExpertSpec, PoolSpec, ResourceSpec
from experts.runtime._engines import EngineGroup, SharedEngines, engine_actor_options
from experts.runtime._placement import STRATEGY, bundles_for

REPLICA_CALLS_PER_BATCH = 4  # a replica holds this many batches' worth of calls by default (max_ongoing_requests)


@dataclass(frozen=True)
class ExpertRoute:
    """How the ingress reaches one expert: its deployment, and its name there when the deployment serves several
    experts (an engine group); None: the deployment is the expert's own."""

    deployment: Any  # a bound application where the app is built; Serve hands the ingress a DeploymentHandle instead
    persona: str | None = None


def deployment_name(expert: str) -> str:
    """The Serve deployment of expert ``expert`` (``serve status`` lists it)."""
    return f"expert-{expert}"


def process_options(expert: ExpertSpec) -> dict[str, Any]:
    """What the expert's process asks the cluster for, and the environment it needs, as Ray's options take them."""
    resources = expert.resources
    options: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * 1024**3)
    if resources.custom:
        options["resources"] = dict(resources.custom)
    # An API key named in the pool file travels with the process, so it works on any node of a cluster.
    key_env = expert.options.get("api_key_env")
    if key_env and os.environ.get(key_env):
        options["runtime_env"] = {"env_vars": {key_env: os.environ[key_env]}}
    return options


def actor_options(expert: ExpertSpec) -> dict[str, Any]:
    """``ray.remote(...).options`` of the expert's actor (``moesaic serve``; placement groups are the pool's)."""
    return {**process_options(expert), "max_concurrency": 1000}  # an async actor: many callers wait on one queue


def expert_serve_settings(expert: ExpertSpec, pool: PoolSpec) -> ExpertServeSpec:
    """The expert's deployment settings: its own ``serve`` entry over the pool's ``serve.experts``."""
    return (expert.serve or ExpertServeSpec()).over(pool.serve.experts)


def deployment_options(expert: ExpertSpec, pool: PoolSpec) -> dict[str, Any]:
    """``serve.deployment(...).options`` of the expert's deployment: name, scaling, the replica's resources."""
    settings = expert_serve_settings(expert, pool)
    calls = settings.max_ongoing_requests or REPLICA_CALLS_PER_BATCH * expert.batching.max_batch_size
    options: dict[str, Any] = {
        "name": deployment_name(expert.name),
        "max_ongoing_requests": calls,
        "ray_actor_options": process_options(expert),
        **settings.scaling_options(),
    }
    bundles = bundles_for(expert)
    if bundles is not None:  # several GPUs: each replica's GPUs reserved together on one node
        options["placement_group_bundles"] = bundles
        options["placement_group_strategy"] = STRATEGY
    return options


@dataclass(frozen=True)
class DeploymentUnit:
    """One Serve deployment of the experts layout: one expert's own, or an engine group's (its personas)."""

    name: str
    members: tuple[ExpertSpec, ...]
    settings: ExpertServeSpec  # replicas or autoscaling, calls per replica
    options: dict[str, Any]  # serve.deployment(...).options
    engine: EngineGroup | None = None  # the vLLM engine an engine group's replicas each run
    engine_options: dict[str, Any] | None = None  # its actor's options (engine_actor_options)

    @property
    def resources(self) -> ResourceSpec:
        """What one replica takes (an engine group's members all ask the same: it is part of what groups them)."""
        return self.members[0].resources


def deployment_plan(
    pool: PoolSpec, environment: EngineEnvironment | None = None, flags: frozenset[str] | None = None
) -> list[DeploymentUnit]:
    """The pool's deployments in the experts layout: the experts that run on vLLM (where
    ``environment``, default the one found here, has it) grouped by engine, one deployment per group, and one per
    other expert. The Serve application (``expert_applications``) and the rendered config (``moesaic deploy
    render``) both come from it, so their deployment names agree."""
    engines = SharedEngines(pool, environment, flags)  # nothing starts here
    by_name = {expert.name: expert for expert in pool.experts}
    names = engine_deployment_names(engines.groups)
    units: list[DeploymentUnit] = []
    for group in engines.groups:
        members = tuple(by_name[name] for name in group.experts)
        settings = _group_settings(members, pool)
        options = engine_group_options(names[group.name], group, members, settings)
        engine_options = engine_actor_options(group, engines.environment)
        units.append(DeploymentUnit(names[group.name], members, settings, options, group, engine_options))
    grouped = set(engines.engine_of)
    for expert in pool.experts:
        if expert.name not in grouped:
            settings = expert_serve_settings(expert, pool)
            units.append(
                DeploymentUnit(deployment_name(expert.name), (expert,), settings, deployment_options(expert, pool))
            )
    return units


def engine_deployment_names(groups: list[EngineGroup]) -> dict[str, str]:
    """Each engine group's deployment name, ``engine-<model>`` (``-2``, ``-3`` where models repeat), by group."""
    names: dict[str, str] = {}
    for group in groups:
        model = group.model.rsplit(":", 1)[-1].rsplit("/", 1)[-1].lower()
        base = "engine-" + (re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "model")
        name, n = base, 1
        while name in names.values():
            n += 1
            name = f"{base}-{n}"
        names[group.name] = name
    return names


def _group_settings(members: tuple[ExpertSpec, ...], pool: PoolSpec) -> ExpertServeSpec:
    """The serve settings of an engine group: its members', which must agree (they scale together)."""
    settings = {member.name: expert_serve_settings(member, pool) for member in members}
    first = next(iter(settings.values()))
    differing = [member for member, setting in settings.items() if setting != first]
    if differing:
        raise ValueError(
            f"pool {pool.name!r}: experts {', '.join(settings)} share one vLLM engine (the same model, resources and "
            f"engine options), so they scale together, but {', '.join(differing)} ask(s) for other serve settings "
            "than the first; give them the same serve entry, or options.engine: native to run one on its own"
        )
    return first


def engine_group_options(
    name: str, group: EngineGroup, members: tuple[ExpertSpec, ...], settings: ExpertServeSpec
) -> dict[str, Any]:
    """``serve.deployment(...).options`` of an engine group's deployment: the replica itself asks for nothing, its
    placement group's one bundle holds what the engine takes, on one node."""
    calls = settings.max_ongoing_requests or sum(
        REPLICA_CALLS_PER_BATCH * member.batching.max_batch_size for member in members
    )
    bundle: dict[str, float] = {"CPU": group.num_cpus, "GPU": group.num_gpus, **dict(group.custom)}
    if group.memory_gb:
        bundle["memory"] = float(int(group.memory_gb * 1024**3))
    bundle = {key: float(value) for key, value in bundle.items() if value}
    options: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": calls,
        "ray_actor_options": {"num_cpus": 0},
        **settings.scaling_options(),
    }
    if bundle:  # the engine actor is started in this bundle: on the replica's node, with the group's resources
        options["placement_group_bundles"] = [bundle]
        options["placement_group_strategy"] = STRATEGY
    return options


def expert_applications(
    pool: PoolSpec, environment: EngineEnvironment | None = None, flags: frozenset[str] | None = None
) -> dict[str, ExpertRoute]:
    """Each expert's route to its bound Serve deployment (``deployment_plan``), by expert name, for the ingress to
    take as handles: ``ExpertReplica`` for an expert's own deployment, ``EngineGroupReplica`` for an engine
    group's; refuses, naming what to change, a pool this layout cannot run. ``environment``, ``flags``: as for
    ``deployment_plan``."""
    from ray import serve

    from experts.actor.engine_group_replica import EngineGroupReplica
    from experts.actor.replica import ExpertReplica

    if pool.residency is not None:
        raise ValueError(
            f"pool {pool.name!r}: a residency section needs the experts' actors under one pool's control; "
            "set serve.layout: pool, or remove the residency section"
        )
    routes: dict[str, ExpertRoute] = {}
    for unit in deployment_plan(pool, environment, flags):
        if unit.engine is None or unit.engine_options is None:
            [expert] = unit.members
            app = serve.deployment(ExpertReplica).options(**unit.options).bind(expert.model_dump())
            routes[expert.name] = ExpertRoute(app)
            continue
        personas = [member.model_dump() for member in unit.members]
        app = (
            serve.deployment(EngineGroupReplica)
            .options(**unit.options)
            .bind(unit.name, asdict(unit.engine.settings), unit.engine_options, personas)
        )
        routes.update({member.name: ExpertRoute(app, member.name) for member in unit.members})
    return routes
