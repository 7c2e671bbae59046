"""What Ray runs each expert in: its actor's options, and the options of its Serve deployment.

One expert's resources (CPUs, GPUs, memory, custom resources naming a node), the API key its hosted model reads, and,
above one GPU, the placement that keeps its GPUs together: for an actor the pool starts (``moesaic serve``), and for
the expert's own Serve deployment (``serve.layout: experts``), whose replicas and autoscaling come from the pool
file's ``serve.experts`` and the expert's own ``serve`` entry.

Runs in: the driver (the pool, and the process that builds the Serve application). May import: ``experts.config``.
"""

from __future__ import annotations

import os
from typing import Any

from experts.config import ExpertServeSpec, ExpertSpec, PoolSpec
from experts.runtime._placement import STRATEGY, bundles_for

REPLICA_CALLS_PER_BATCH = 4  # a replica holds this many batches' worth of calls by default (max_ongoing_requests)


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


def vllm_requested(pool: PoolSpec) -> list[str]:
    """Experts that ask for vLLM's engine by name (``options.engine: vllm``), which the experts layout does not run
    yet (an engine shared by several experts is not a deployment of its own); ``auto`` runs ours there."""
    return [expert.name for expert in pool.experts if str(expert.options.get("engine", "auto")) == "vllm"]


def expert_applications(pool: PoolSpec) -> dict[str, Any]:
    """One bound Serve deployment per expert (``ExpertReplica`` with ``deployment_options``), by expert name, for the
    ingress to take as handles; refuses, naming what to change, a pool this layout cannot run."""
    from ray import serve

    from experts.actor.replica import ExpertReplica

    if pool.residency is not None:
        raise ValueError(
            f"pool {pool.name!r}: a residency section needs the experts' actors under one pool's control; "
            "set serve.layout: pool, or remove the residency section"
        )
    on_vllm = vllm_requested(pool)
    if on_vllm:
        raise ValueError(
            f"pool {pool.name!r}: expert(s) {', '.join(on_vllm)} ask for options.engine: vllm, which serve.layout "
            "experts does not run yet (an engine shared by several experts is not a deployment of its own); set "
            "options.engine: native (or auto, which runs ours there), or serve.layout: pool"
        )
    replica = serve.deployment(ExpertReplica)
    return {
        expert.name: replica.options(**deployment_options(expert, pool)).bind(expert.model_dump())
        for expert in pool.experts
    }
