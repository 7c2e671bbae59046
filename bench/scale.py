"""Does running each expert as a Serve deployment of its own pay? Layouts and replicas, on a real Ray cluster.

A ``LocalCluster`` (``bench/ray_cluster.py``: a head node on this machine) runs Moesaic's Serve application, deployed
from this process (``serve.run`` of ``orchestrator.frameworks.serve_app:build``) and called over HTTP through
Serve's proxy at a fixed concurrency, ``expert/<name>`` requests so that routing plays no part:

1. **Layouts** (2 ingress replicas, the same two echo experts whose batch takes ``--batch-delay`` seconds whatever
   its size, as a model's forward pass on a GPU roughly does, with room for every request in flight in one batch,
   ``--max-batch``): ``serve.layout: pool`` (each
   ingress replica runs its own copy of every expert) against ``experts`` (one replica per expert, both ingress
   replicas call it). Measured: requests/s, and the mean batch a request rode in (each answer's
   ``moesaic.calls[0].batch_size``) with the mean batch size per batch. Targets: mean batch >= 1.8x, throughput not
   lower.
2. **Replicas** (layout experts): one slow echo expert (``--slow-delay`` seconds per request, one at a time) at 1,
   2 and 4 replicas. Target: >= 1.8x and >= 3.2x the requests/s of one replica.
3. **The extra hop**: latency p50 at concurrency 1 of an expert that answers at once, layout experts (ingress ->
   the expert's replica, a deployment-handle call) minus layout pool (ingress -> its own actor on this node, the
   same-node channel): what the handle call adds per request.

Layouts and replica counts take turns over ``--rounds`` rounds (a noisy stretch falls on each alike).

    .venv/bin/python bench/scale.py [--requests 400] [--concurrency 32] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench.ray_cluster import LocalCluster, free_port  # noqa: E402

BATCH_TARGET, REPLICA_TARGETS = 1.8, {2: 1.8, 4: 3.2}


@dataclass
class Run:
    """One measured phase: answers' batch sizes, latencies, wall time."""

    batch_sizes: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def mean_batch_per_request(self) -> float:
        return statistics.fmean(self.batch_sizes) if self.batch_sizes else 0.0

    @property
    def mean_batch(self) -> float:
        """Requests per batch: each request of a batch of n counts 1/n of a batch."""
        batches = sum(1 / size for size in self.batch_sizes)
        return len(self.batch_sizes) / batches if batches else 0.0

    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else 0.0


def pool(layout: str, http: int, experts: list[dict[str, Any]], replicas: int = 1) -> dict[str, Any]:
    return {
        "name": "scale",
        "roles": {"aggregator": experts[0]["name"]},
        "serve": {
            "layout": layout,
            "num_replicas": 2,
            "ingress_resources": {"num_cpus": 0.25},
            "http": {"port": http},
            "experts": {"num_replicas": replicas, "max_ongoing_requests": 64},
        },
        "experts": experts,
    }


def echo(name: str, delay_s: float, max_batch: int, skill: str) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "echo",
        "model": "echo",
        "skills": [skill],
        "options": {"delay_s": delay_s} if delay_s else {},
        "batching": {"max_batch_size": max_batch, "max_wait_ms": 2},
        "concurrency": 1,
        "resources": {"num_cpus": 0},
    }


async def phase(url: str, expert: str, requests: int, concurrency: int) -> Run:
    run, index = Run(), iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for i in index:
                body = {"model": f"expert/{expert}", "messages": [{"role": "user", "content": f"q {i}"}]}
                started = time.perf_counter()
                reply = await client.post("/v1/chat/completions", json=body)
                if reply.status_code != 200:
                    run.errors += 1
                    continue
                run.latencies.append(time.perf_counter() - started)
                run.batch_sizes.append(int(reply.json()["moesaic"]["calls"][0]["batch_size"]))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started
    return run


def deploy(pool_data: dict[str, Any]) -> None:
    from ray import serve

    from orchestrator.frameworks.serve_app import build

    serve.run(build({"pool_spec": pool_data, "http_host": "127.0.0.1"}), name="scale", route_prefix="/")


def undeploy() -> None:
    from ray import serve

    serve.delete("scale")


def measure(url: str, pool_data: dict[str, Any], expert: str, requests: int, concurrency: int, warmup: int) -> Run:
    deploy(pool_data)
    asyncio.run(phase(url, expert, warmup, concurrency))  # connections, the replicas' first calls
    run = asyncio.run(phase(url, expert, requests, concurrency))
    undeploy()
    return run


def merge(runs: list[Run]) -> Run:
    merged = Run()
    for run in runs:
        merged.batch_sizes += run.batch_sizes
        merged.latencies += run.latencies
        merged.seconds += run.seconds
        merged.errors += run.errors
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per measured phase")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (layouts, replicas)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds the layouts and replica counts take turns in")
    parser.add_argument("--batch-delay", type=float, default=0.3, help="seconds per batch of the layouts' experts")
    parser.add_argument("--max-batch", type=int, default=64, help="max_batch_size of the layouts' experts")
    parser.add_argument("--slow-delay", type=float, default=0.1, help="seconds per request of the slow expert")
    parser.add_argument("--hop-requests", type=int, default=200, help="sequential requests for the hop's latency")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()

    http = free_port()
    url = f"http://127.0.0.1:{http}"
    layouts: dict[str, list[Run]] = {"pool": [], "experts": []}
    replicas: dict[int, list[Run]] = {1: [], 2: [], 4: []}
    hops: dict[str, list[Run]] = {"pool": [], "experts": []}
    batched = [echo(name, args.batch_delay, args.max_batch, skill) for name, skill in (("a", "math"), ("b", "writing"))]
    slow = [echo("slow", args.slow_delay, 1, "math")]
    instant = [echo("a", 0.0, 16, "math"), echo("b", 0.0, 16, "writing")]
    with LocalCluster(head_cpus=2) as cluster:
        os.environ.update({k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
        import ray
        from ray import serve

        ray.init(address=cluster.address, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": http})
        for round_index in range(args.rounds):
            for layout in ("pool", "experts") if round_index % 2 == 0 else ("experts", "pool"):
                data = pool(layout, http, batched)
                layouts[layout].append(measure(url, data, "a", args.requests, args.concurrency, 32))
                data = pool(layout, http, instant)
                hop = measure(url, data, "a", args.hop_requests, 1, 20)
                hops[layout].append(hop)
            for count in (1, 2, 4) if round_index % 2 == 0 else (4, 2, 1):
                data = pool("experts", http, slow, replicas=count)
                replicas[count].append(measure(url, data, "slow", args.requests // 2, args.concurrency, 16))
        serve.shutdown()
        ray.shutdown()

    figures = report({k: merge(v) for k, v in layouts.items()}, {k: merge(v) for k, v in replicas.items()}, hops)
    figures.update({"requests": args.requests, "concurrency": args.concurrency, "rounds": args.rounds})
    figures.update({"batch_delay_s": args.batch_delay, "max_batch": args.max_batch, "slow_delay_s": args.slow_delay})
    figures["cores"] = os.cpu_count()
    if args.json:
        print(json.dumps(figures))


def report(layouts: dict[str, Run], replicas: dict[int, Run], hops: dict[str, list[Run]]) -> dict[str, Any]:
    pool_run, experts_run = layouts["pool"], layouts["experts"]
    print("layouts (2 ingress replicas, expert a's batches take the same time whatever their size)")
    print(f"{'layout':<10}{'req/s':>9}{'batch/request':>15}{'batch':>8}{'p50 ms':>9}{'errors':>8}")
    for name, run in layouts.items():
        print(
            f"{name:<10}{run.rps:>9.1f}{run.mean_batch_per_request:>15.2f}{run.mean_batch:>8.2f}"
            f"{run.p50_ms():>9.1f}{run.errors:>8}"
        )
    batch_ratio = experts_run.mean_batch / pool_run.mean_batch if pool_run.mean_batch else 0.0
    rps_ratio = experts_run.rps / pool_run.rps if pool_run.rps else 0.0
    print(f"experts / pool: mean batch {batch_ratio:.2f}x (target >= {BATCH_TARGET}x), requests/s {rps_ratio:.2f}x")
    print("\nreplicas of one slow expert (one request at a time per replica)")
    print(f"{'replicas':<10}{'req/s':>9}{'x one':>8}{'target':>8}{'errors':>8}")
    one = replicas[1].rps
    scaling = {}
    for count, run in replicas.items():
        scaling[count] = run.rps / one if one else 0.0
        target = f">= {REPLICA_TARGETS[count]}" if count in REPLICA_TARGETS else ""
        print(f"{count:<10}{run.rps:>9.1f}{scaling[count]:>8.2f}{target:>8}{run.errors:>8}")
    hop_ms = [e.p50_ms() - p.p50_ms() for e, p in zip(hops["experts"], hops["pool"])]
    print(
        "\nthe extra hop (latency p50 at concurrency 1, experts layout minus pool layout, per round): "
        + ", ".join(f"{ms:.2f} ms" for ms in hop_ms)
    )
    return {
        "rps_pool_layout": round(pool_run.rps, 1),
        "rps_experts_layout": round(experts_run.rps, 1),
        "rps_experts_over_pool": round(rps_ratio, 3),
        "mean_batch_pool_layout": round(pool_run.mean_batch, 3),
        "mean_batch_experts_layout": round(experts_run.mean_batch, 3),
        "mean_batch_experts_over_pool": round(batch_ratio, 3),
        "batch_per_request_pool_layout": round(pool_run.mean_batch_per_request, 3),
        "batch_per_request_experts_layout": round(experts_run.mean_batch_per_request, 3),
        "slow_rps": {str(count): round(run.rps, 2) for count, run in replicas.items()},
        "slow_scaling": {str(count): round(value, 3) for count, value in scaling.items()},
        "hop_p50_ms": [round(ms, 3) for ms in hop_ms],
        "hop_p50_pool_ms": [round(run.p50_ms(), 3) for run in hops["pool"]],
        "hop_p50_experts_ms": [round(run.p50_ms(), 3) for run in hops["experts"]],
        "errors": sum(run.errors for run in [*layouts.values(), *replicas.values()]),
        "batch_target_met": batch_ratio >= BATCH_TARGET and rps_ratio >= 1.0,
        "replica_targets_met": all(scaling[c] >= t for c, t in REPLICA_TARGETS.items()),
    }


if __name__ == "__main__":
    main()
