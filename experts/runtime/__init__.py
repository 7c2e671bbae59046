"""The driver side of the experts: what the serving process (or a batch run) uses to call them.

Runs in: the driver (the API server, the CLI, batch mode), never inside an expert actor. May import:
``experts.config``, ``experts.actor`` (only to start actors), ``experts.types``, ``experts.errors``,
``experts._channel``.

Public surface (import it from here): ``ExpertPool`` (start the actors, call an expert with failover),
``ExpertClient`` (the protocol the pipeline calls: a pool, or a ``Dispatcher`` in front of one), ``Dispatcher`` and
``dispatching`` (queues by expert and on-demand residency in front of a pool), ``is_client_mistake`` (a failure that
is the caller's), ``expert_applications``, ``ExpertRoute``, ``deployment_plan``, ``DeploymentUnit``,
``expert_serve_settings``, ``deployment_options``, ``deployment_name`` (each expert, or each group of experts on one
vLLM engine, as a Ray Serve deployment of its own), and the errors ``ExpertCallFailed``/``ExpertUnavailable``. Inside
(private): ``_guarded`` (one expert's calls with timeout, retries, breaker), ``_retry``, ``_breaker``,
``_actor_handle`` (one actor, restarted when it dies), ``_placement`` (multi-GPU placement groups), ``_engines``
(shared vLLM engines).
"""

from experts.errors import ExpertCallFailed, ExpertUnavailable
from experts.runtime._client import ExpertClient
from experts.runtime._deployments import (
    DeploymentUnit,
    ExpertRoute,
    deployment_name,
    deployment_options,
    deployment_plan,
    expert_applications,
    expert_serve_settings,
)
from experts.runtime._pool import ExpertPool
from experts.runtime._retry import is_client_mistake
from experts.runtime.dispatch import Dispatcher, dispatching

__all__ = [
    "DeploymentUnit",
    "Dispatcher",
    "ExpertCallFailed",
    "ExpertClient",
    "ExpertPool",
    "ExpertRoute",
    "ExpertUnavailable",
    "deployment_name",
    "deployment_options",
    "deployment_plan",
    "dispatching",
    "expert_applications",
    "expert_serve_settings",
    "is_client_mistake",
]
