"""The pool's series, read at scrape time: actors, circuit breakers, restarts and the dispatcher.

Every pool: each actor's health report (its batcher's queue depth and batches, how often and
how long its model loaded, parked, unloaded, and the seconds it spent generating), so "time
loading vs generating" is there per expert; each expert's circuit breaker state and actor
restarts when the pool keeps them. A pool with a ``residency`` section is served through a
``Dispatcher``, which adds its own queues (routed requests not yet sent to an actor), the sizes
of the batches it sent (a histogram), the time requests waited, and the memory booked per node.
"""

from __future__ import annotations

from typing import Any

from experts import is_ready
from experts.runtime import Dispatcher, ExpertClient
from orchestrator.server.observability.exposition import Snapshot

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
BREAKER_STATES = ("closed", "open", "half_open")
GB = 1024**3

# name -> (type, help, actor health key); counters are read from the actors' reports
_ACTOR_SERIES = [
    ("moesaic_actor_queue_depth", "gauge", "requests waiting in the expert actor's batcher", "queue_depth"),
    ("moesaic_expert_loads_total", "counter", "model loads (disk or host RAM to device)", "loads"),
    ("moesaic_expert_load_seconds_total", "counter", "seconds spent loading the model", "load_seconds_total"),
    ("moesaic_expert_parks_total", "counter", "models parked in host RAM (GPU experts)", "parks"),
    ("moesaic_expert_park_seconds_total", "counter", "seconds spent parking", "park_seconds_total"),
    ("moesaic_expert_unloads_total", "counter", "models unloaded to disk", "unloads"),
    ("moesaic_expert_unload_seconds_total", "counter", "seconds spent unloading", "unload_seconds_total"),
    ("moesaic_expert_generate_seconds_total", "counter", "seconds spent generating", "generate_seconds_total"),
]


async def write_pool(out: Snapshot, pool: ExpertClient) -> None:
    """Append the series of an ``ExpertPool`` or a ``Dispatcher``."""
    health: dict[str, dict[str, Any]] = await pool.health()
    out.family("moesaic_expert_up", "gauge", "1 when the expert's actor is ready")
    for name, facts in health.items():
        out.sample("moesaic_expert_up", {"expert": name}, 1 if is_ready(facts) else 0)
    out.family("moesaic_expert_residency", "gauge", "1 for the expert's residency state (disk, parked, resident)")
    for name, facts in health.items():
        if facts.get("residency"):
            out.sample("moesaic_expert_residency", {"expert": name, "state": facts["residency"]}, 1)
    for metric, kind, text, key in _ACTOR_SERIES:
        out.family(metric, kind, text)
        for name, facts in health.items():
            if isinstance(facts.get(key), (int, float)):
                out.sample(metric, {"expert": name}, facts[key])
    out.family("moesaic_actor_batch_size", "summary", "requests per batch the expert's backend ran")
    for name, facts in health.items():
        if isinstance(facts.get("batches"), int):
            out.sample("moesaic_actor_batch_size_sum", {"expert": name}, facts.get("requests", 0))
            out.sample("moesaic_actor_batch_size_count", {"expert": name}, facts["batches"])
    _resilience(out, pool)
    if isinstance(pool, Dispatcher):
        _dispatcher(out, pool)


def _resilience(out: Snapshot, pool: ExpertClient) -> None:
    """Breaker states and actor restarts."""
    states = pool.breaker_states()
    out.family("moesaic_expert_breaker_state", "gauge", "1 for the expert's circuit breaker state, 0 for the others")
    for name, current in sorted(states.items()):
        for state in BREAKER_STATES:
            out.sample("moesaic_expert_breaker_state", {"expert": name, "state": state}, 1 if current == state else 0)
    restarts = pool.restarts
    out.family("moesaic_expert_restarts_total", "counter", "times the expert's actor was restarted after dying")
    for name, count in sorted(restarts.items()):
        out.sample("moesaic_expert_restarts_total", {"expert": name}, count)


def _dispatcher(out: Snapshot, dispatcher: Dispatcher) -> None:
    names = dispatcher.expert_names
    out.family("moesaic_dispatch_queue_depth", "gauge", "routed requests queued in the dispatcher, per expert")
    for name in names:
        out.sample("moesaic_dispatch_queue_depth", {"expert": name}, dispatcher.queue_depth(name))
    out.family("moesaic_dispatch_batch_size", "histogram", "requests per batch the dispatcher sent to an expert")
    out.family("moesaic_dispatch_wait_seconds_total", "counter", "seconds requests waited in the dispatcher")
    for name, stats in sorted(dispatcher.stats.items()):
        counts = [0] * (len(BATCH_BUCKETS) + 1)
        for size, n in stats.batch_sizes.items():
            counts[next((i for i, bound in enumerate(BATCH_BUCKETS) if size <= bound), len(BATCH_BUCKETS))] += n
        out.histogram("moesaic_dispatch_batch_size", {"expert": name}, BATCH_BUCKETS, counts, stats.requests)
        out.sample("moesaic_dispatch_wait_seconds_total", {"expert": name}, stats.wait_seconds_total)
    residency = dispatcher.residency
    if residency is None:
        return
    out.family("moesaic_residency_budget_bytes", "gauge", "memory per node for resident experts")
    out.family("moesaic_residency_used_bytes", "gauge", "memory booked by resident and loading experts")
    out.family("moesaic_residency_parked_bytes", "gauge", "host RAM held by parked GPU experts")
    for node in residency.nodes():
        out.sample("moesaic_residency_budget_bytes", {"node": node}, residency.budget_gb * GB)
        out.sample("moesaic_residency_used_bytes", {"node": node}, residency.used_gb(node) * GB)
        out.sample("moesaic_residency_parked_bytes", {"node": node}, residency.parked_gb(node) * GB)
