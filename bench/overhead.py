"""What does orchestration cost? Pipeline latency with the echo backend vs calling it in-process.

The echo backend answers instantly (it exists for this kind of measurement), so the time
left is ours: LangGraph steps, routing, actor calls, batching waits, aggregation.
Baselines in the same run: the same backend called directly in this process, a bare async
Ray actor call, and the same pool with ``transport: ray`` (every call through Ray instead of
the same-node channel, ``experts/_channel.py``).

    .venv/bin/python bench/overhead.py [--requests 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experts.backends.echo import EchoBackend  # noqa: E402
from experts.config._pool_spec import parse_pool  # noqa: E402
from experts.runtime._pool import ExpertPool  # noqa: E402
from experts.types import GenerationRequest, Message  # noqa: E402
from orchestrator.pipeline.orchestrator import Orchestrator  # noqa: E402
from orchestrator.pipeline.state import PipelineRequest  # noqa: E402

POOL = {
    "name": "echo-bench",
    "roles": {"aggregator": "aggregator"},
    "experts": [
        {
            "name": "math",
            "backend": "echo",
            "model": "echo",
            "skills": ["math"],
            "batching": {"max_wait_ms": 0},
            "resources": {"num_cpus": 0},
        },
        {
            "name": "writer",
            "backend": "echo",
            "model": "echo",
            "skills": ["writing"],
            "batching": {"max_wait_ms": 0},
            "resources": {"num_cpus": 0},
        },
        {
            "name": "aggregator",
            "backend": "echo",
            "model": "echo",
            "routable": False,
            "batching": {"max_wait_ms": 0},
            "resources": {"num_cpus": 0},
        },
    ],
}
QUESTION = "Write a poem with the sum of 2 + 2"
TRANSPORTS = ("auto", "ray")
ROUNDS = 5  # the same-node channel (the default), and every call through Ray


async def timed(calls: int, make_call) -> list[float]:  # type: ignore[no-untyped-def]
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        await make_call()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


class _Bare:
    """The floor: an async Ray actor method that returns its argument (no Moesaic code on either side)."""

    async def echo(self, value: object) -> object:
        return value


async def measure(calls: int) -> dict[str, float]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    spec = parse_pool(POOL, "<bench>")
    direct = EchoBackend(spec.expert("math"))
    request = GenerationRequest([Message("user", QUESTION)])
    bare = ray.remote(num_cpus=0)(_Bare).remote()
    pools = {transport: ExpertPool(parse_pool({**POOL, "transport": transport}, "<bench>")) for transport in TRANSPORTS}
    figures: dict[str, float] = {"requests": calls}
    try:
        for pool in pools.values():
            await pool.start()
        direct_ms = await timed(calls, lambda: direct.generate([request]))
        await timed(10, lambda: bare.echo.remote(request))  # warm-up
        figures["direct_ms"] = _median(direct_ms)
        figures["bare_ray_call_ms"] = _median(await timed(calls, lambda: bare.echo.remote(request)))
        orchestrators = {transport: Orchestrator(pool) for transport, pool in pools.items()}
        for orchestrator in orchestrators.values():
            await orchestrator.run(PipelineRequest(GenerationRequest([Message("user", QUESTION)]), k=2))  # warm-up
        samples: dict[str, list[float]] = {}
        for _ in range(ROUNDS):  # the transports take turns, so a noisy minute falls on both alike
            for transport, pool in pools.items():
                suffix = "" if transport == "auto" else "_ray"
                orchestrator = orchestrators[transport]
                share = max(1, calls // ROUNDS)
                samples.setdefault(f"actor_ms{suffix}", []).extend(
                    await timed(share, lambda: pool.generate("math", request))
                )
                for k in (1, 2):
                    samples.setdefault(f"pipeline_k{k}_ms{suffix}", []).extend(
                        await timed(
                            share,
                            lambda: orchestrator.run(
                                PipelineRequest(GenerationRequest([Message("user", QUESTION)]), k=k)
                            ),
                        )
                    )
        for key, latencies in samples.items():
            figures[key] = _median(latencies)
        k2 = sorted(samples["pipeline_k2_ms"])
        figures["pipeline_k2_p95_ms"] = round(k2[int(0.95 * (len(k2) - 1))], 3)
    finally:
        for pool in pools.values():
            await pool.shutdown()
        ray.shutdown()
    figures["k1_channel_speedup"] = round(figures["pipeline_k1_ms_ray"] / figures["pipeline_k1_ms"], 2)
    return figures


def _median(latencies: list[float]) -> float:
    return round(statistics.median(latencies), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.requests))
    print(f"{'path':<36}{'auto (channel)':>15}{'transport: ray':>15}")
    print(f"{'echo backend, in-process':<36}{figures['direct_ms']:>15}")
    print(f"{'bare async Ray actor call':<36}{'':>15}{figures['bare_ray_call_ms']:>15}")
    for label, key in (
        ("one expert call (pool.generate)", "actor_ms"),
        ("pipeline, k=1 (1 call)", "pipeline_k1_ms"),
        ("pipeline, k=2 (2 calls, consensus)", "pipeline_k2_ms"),
    ):
        print(f"{label:<36}{figures[key]:>15}{figures[key + '_ray']:>15}")
    speedup, p95 = figures["k1_channel_speedup"], figures["pipeline_k2_p95_ms"]
    print(f"k=1 pipeline {speedup}x faster over the channel than through Ray; k=2 p95 {p95} ms")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
