"""Placement groups for experts that need more than one GPU.

An expert with ``resources.num_gpus > 1`` gets a placement group before its actor starts: its
GPUs (and CPUs) are reserved together on one node (``STRICT_PACK``), atomically, and the actor
runs inside the group. The group outlives the actor: when a dead actor is replaced
(``experts/runtime/_actor_handle.py``) the new one starts in the same group, on GPUs still held for it,
instead of competing for GPUs again. The pool removes the groups when it shuts down.

The group has one bundle holding all of the expert's GPUs rather than one bundle per GPU: a Ray
actor lives in a single bundle, and an expert is one process (one actor) using all its GPUs.
Experts with one GPU or less (fractions share a GPU) are scheduled as plain actors.
"""

from __future__ import annotations

import uuid
from typing import Any

from experts.config import ExpertSpec

STRATEGY = "STRICT_PACK"


def bundles_for(expert: ExpertSpec) -> list[dict[str, float]] | None:
    """The expert's placement-group bundles, or None when it needs no group (one GPU or less)."""
    resources = expert.resources
    if resources.num_gpus <= 1:
        return None
    bundle = {"GPU": float(resources.num_gpus)}
    if resources.num_cpus:
        bundle["CPU"] = float(resources.num_cpus)
    if resources.memory_gb:
        bundle["memory"] = float(int(resources.memory_gb * 1024**3))
    return [bundle]


class ExpertPlacement:
    """The placement groups of one pool's multi-GPU experts: created once per expert, removed at shutdown."""

    def __init__(self, pool_name: str) -> None:
        self.pool_name = pool_name
        self.groups: dict[str, Any] = {}

    def actor_options(self, expert: ExpertSpec) -> dict[str, Any]:
        """Extra ``ray.remote(...).options`` that put the expert's actor in its group ({} without one)."""
        bundles = bundles_for(expert)
        if bundles is None:
            return {}
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = self.groups.get(expert.name)
        if group is None:
            name = f"moesaic-{self.pool_name}-{expert.name}-{uuid.uuid4().hex[:8]}"
            group = self.groups[expert.name] = placement_group(bundles, strategy=STRATEGY, name=name)
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True
        )
        return {"scheduling_strategy": strategy}

    def release(self) -> None:
        """Remove every group (after the actors are gone: the reserved GPUs return to the cluster)."""
        from ray.util.placement_group import remove_placement_group

        for group in self.groups.values():
            remove_placement_group(group)
        self.groups.clear()
