"""An expert's hosted deployments behind LiteLLM's ``Router`` (``ExpertSpec.deployments``).

LiteLLM's Router already does what several endpoints of one model need: it picks a primary deployment per call
(least busy by default, or by latency, usage, at random), cools down one that keeps failing, and on failure tries
the fallback groups in their order, or the context group when the prompt does not fit. So it is used as it is; this
module only turns the pool file's deployments into its ``model_list`` and groups:

* the primaries: one group named after the expert;
* each ``fallback`` deployment: a group of its own, tried in the order listed;
* the ``context`` deployments: one group, LiteLLM's ``context_window_fallbacks``.

The Router retries once per further primary (another deployment, since a failed one is left out of the next pick
once it cools down); the pool's retries, breaker and replacement by the next-best expert stay above it.

Runs in: the expert's actor (the ``litellm`` backend).
"""

from __future__ import annotations

import os
from typing import Any

from experts.config import ExpertSpec, HostedDeployment
from experts.errors import BackendError


def fallback_group(expert: str, deployment: str) -> str:
    return f"{expert}:fallback:{deployment}"


def context_group(expert: str) -> str:
    return f"{expert}:context"


def group_of(spec: ExpertSpec, deployment: HostedDeployment) -> str:
    if deployment.role == "fallback":
        return fallback_group(spec.name, deployment.name)
    if deployment.role == "context":
        return context_group(spec.name)
    return spec.name


def model_list(spec: ExpertSpec) -> list[dict[str, Any]]:
    """The Router's ``model_list``: each deployment with its group, parameters and id (its name)."""
    entries = []
    for deployment in spec.deployments:
        params: dict[str, Any] = {"model": deployment.model or spec.model}
        for field in ("api_base", "api_version", "rpm", "tpm"):
            value = getattr(deployment, field)
            if value is not None:
                params[field] = value
        if deployment.api_key_env:
            key = os.environ.get(deployment.api_key_env)
            if not key:
                raise BackendError(
                    f"expert {spec.name!r}: environment variable {deployment.api_key_env} "
                    f"(deployments[{deployment.name}].api_key_env) is not set"
                )
            params["api_key"] = key
        for option in ("timeout", "extra_headers"):
            if option in spec.options:
                params[option] = spec.options[option]
        params["max_retries"] = 0  # the provider SDK's own retries: off (the Router and the pool retry)
        entries.append(
            {"model_name": group_of(spec, deployment), "litellm_params": params, "model_info": {"id": deployment.name}}
        )
    return entries


def build_router(spec: ExpertSpec, litellm: Any) -> Any:
    """LiteLLM's Router over the expert's deployments."""
    routing = spec.deployment_routing
    primaries = [d for d in spec.deployments if d.role == "primary"]
    fallbacks = [fallback_group(spec.name, d.name) for d in spec.deployments if d.role == "fallback"]
    has_context = any(d.role == "context" for d in spec.deployments)
    return litellm.Router(
        model_list=model_list(spec),
        routing_strategy=routing.strategy,
        num_retries=len(primaries) - 1,  # another primary before the pool's own retry
        retry_after=0,
        cooldown_time=routing.cooldown_s,
        allowed_fails=routing.allowed_fails,
        fallbacks=[{spec.name: fallbacks}] if fallbacks else [],
        context_window_fallbacks=[{spec.name: [context_group(spec.name)]}] if has_context else [],
    )


def deployment_states(spec: ExpertSpec, router: Any) -> list[dict[str, Any]]:
    """Each deployment and whether the Router is cooling it down now (``/v1/pool`` shows them)."""
    cooling = _cooling(router)
    return [
        {
            "name": d.name,
            "model": d.model or spec.model,
            "api_base": d.api_base,
            "role": d.role,
            "cooling_down": None if cooling is None else d.name in cooling,
        }
        for d in spec.deployments
    ]


def _cooling(router: Any) -> set[str] | None:
    """The deployments the Router cools down this minute; None when this LiteLLM cannot say."""
    try:
        from litellm.router_utils.cooldown_handlers import _get_cooldown_deployments

        return set(_get_cooldown_deployments(router, None))
    except Exception:  # another LiteLLM's internals: the state is unknown, not "all healthy"
        return None
