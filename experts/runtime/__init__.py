"""The driver side of the experts: what the serving process (or a batch run) uses to call them.

Runs in: the driver (the API server, the CLI, batch mode), never inside an expert actor. May import:
``experts.config``, ``experts.actor`` (only to start actors), ``experts.types``, ``experts.errors``,
``experts.channel``.

Public surface (import it from here): ``ExpertPool`` (start the actors, call an expert with failover),
``ExpertClient`` (the protocol the pipeline calls: a pool, or a ``Dispatcher`` in front of one), ``Dispatcher`` and
``dispatching`` (queues by expert and on-demand residency in front of a pool), ``is_client_mistake`` (a failure that
is the caller's), and the errors ``ExpertCallFailed``/``ExpertUnavailable``. Inside: ``guarded`` (one expert's calls
with timeout, retries, breaker), ``retry``, ``breaker``, ``actor_handle`` (one actor, restarted when it dies),
``placement`` (multi-GPU placement groups), ``engines`` (shared vLLM engines).
"""

from experts.errors import ExpertCallFailed, ExpertUnavailable
from experts.runtime.client import ExpertClient
from experts.runtime.dispatch.dispatcher import Dispatcher, dispatching
from experts.runtime.pool import ExpertPool
from experts.runtime.retry import is_client_mistake

__all__ = [
    "Dispatcher",
    "ExpertCallFailed",
    "ExpertClient",
    "ExpertPool",
    "ExpertUnavailable",
    "dispatching",
    "is_client_mistake",
]
