"""``GET /metrics``: the pool in Prometheus' text format, written by hand (the format is small; no dependency).

Two sources. Every pool: each actor's health report (its batcher's queue depth and batches,
how often and how long its model loaded, parked, unloaded, and the seconds it spent
generating), so "time loading vs generating" is there per expert. A pool with a ``residency``
section is served through a ``Dispatcher``, which adds its own queues (routed requests not
yet sent to an actor), the sizes of the batches it sent (a histogram), the time requests
waited, and the memory booked per node against the budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from experts.dispatcher import Dispatcher

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
GB = 1024**3

router = APIRouter()

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


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    pool = request.app.state.orchestrator.pool
    return PlainTextResponse(await render(pool), media_type=CONTENT_TYPE)


async def render(pool: Any) -> str:
    """The exposition text for an ``ExpertPool`` or a ``Dispatcher``."""
    health: dict[str, dict[str, Any]] = await pool.health()
    out = _Exposition()
    out.family("moesaic_expert_up", "gauge", "1 when the expert's actor is ready")
    for name, facts in health.items():
        out.sample("moesaic_expert_up", {"expert": name}, 1 if facts.get("state") == "ready" else 0)
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
    if isinstance(pool, Dispatcher):
        _dispatcher(out, pool)
    return out.text()


def _dispatcher(out: _Exposition, dispatcher: Dispatcher) -> None:
    names = dispatcher.expert_names
    out.family("moesaic_dispatch_queue_depth", "gauge", "routed requests queued in the dispatcher, per expert")
    for name in names:
        out.sample("moesaic_dispatch_queue_depth", {"expert": name}, dispatcher.queue_depth(name))
    out.family("moesaic_dispatch_batch_size", "histogram", "requests per batch the dispatcher sent to an expert")
    out.family("moesaic_dispatch_wait_seconds_total", "counter", "seconds requests waited in the dispatcher")
    for name, stats in sorted(dispatcher.stats.items()):
        for bound in BATCH_BUCKETS:
            count = sum(n for size, n in stats.batch_sizes.items() if size <= bound)
            out.sample("moesaic_dispatch_batch_size_bucket", {"expert": name, "le": str(bound)}, count)
        out.sample("moesaic_dispatch_batch_size_bucket", {"expert": name, "le": "+Inf"}, stats.batches)
        out.sample("moesaic_dispatch_batch_size_sum", {"expert": name}, stats.requests)
        out.sample("moesaic_dispatch_batch_size_count", {"expert": name}, stats.batches)
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


class _Exposition:
    """Collects families in order; each family's samples follow its HELP and TYPE lines."""

    def __init__(self) -> None:
        self._families: dict[str, list[str]] = {}
        self._owner: dict[str, str] = {}

    def family(self, name: str, kind: str, text: str) -> None:
        self._families[name] = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for suffix in ("", "_bucket", "_sum", "_count"):
            self._owner[name + suffix] = name

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self._families[self._owner[name]].append(f"{name}{_labels(labels.items())} {_number(value)}")

    def text(self) -> str:
        return "".join(line + "\n" for lines in self._families.values() for line in lines)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    escaped = (f'{key}="{_escape(str(value))}"' for key, value in pairs)
    return "{" + ",".join(escaped) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
