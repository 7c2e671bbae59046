"""What does orchestration cost? Pipeline latency with the echo backend vs calling it in-process.

The echo backend answers instantly (it exists for this kind of measurement), so the time
left is ours: LangGraph steps, routing, Ray actor calls, batching waits, aggregation.
Baseline in the same run: the same backend called directly in this process.

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
from experts.pool import ExpertPool  # noqa: E402
from experts.spec import parse_pool  # noqa: E402
from experts.types import GenerationRequest, Message  # noqa: E402
from orchestrator.pipeline import Orchestrator  # noqa: E402
from orchestrator.state import PipelineRequest  # noqa: E402

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
    pool = ExpertPool(spec)
    await pool.start()
    orchestrator = Orchestrator(pool)
    request = GenerationRequest([Message("user", QUESTION)])
    bare = ray.remote(num_cpus=0)(_Bare).remote()
    try:
        await orchestrator.run(PipelineRequest(GenerationRequest([Message("user", QUESTION)]), k=2))  # warm-up
        direct_ms = await timed(calls, lambda: direct.generate([request]))
        await timed(10, lambda: bare.echo.remote(request))  # warm-up
        bare_ms = await timed(calls, lambda: bare.echo.remote(request))
        actor_ms = await timed(calls, lambda: pool.generate("math", request))
        k1_ms = await timed(
            calls, lambda: orchestrator.run(PipelineRequest(GenerationRequest([Message("user", QUESTION)]), k=1))
        )
        k2_ms = await timed(
            calls, lambda: orchestrator.run(PipelineRequest(GenerationRequest([Message("user", QUESTION)]), k=2))
        )
    finally:
        await pool.shutdown()
        ray.shutdown()
    return {
        "requests": calls,
        "direct_ms": round(statistics.median(direct_ms), 3),
        "bare_ray_call_ms": round(statistics.median(bare_ms), 3),
        "actor_ms": round(statistics.median(actor_ms), 3),
        "pipeline_k1_ms": round(statistics.median(k1_ms), 3),
        "pipeline_k2_ms": round(statistics.median(k2_ms), 3),
        "pipeline_k2_p95_ms": round(sorted(k2_ms)[int(0.95 * (len(k2_ms) - 1))], 3),
        "k2_over_actor_call": round(statistics.median(k2_ms) / statistics.median(actor_ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.requests))
    print(f"{'path':<34}{'median ms':>10}")
    print(f"{'echo backend, in-process':<34}{figures['direct_ms']:>10}")
    print(f"{'bare Ray actor call (the floor)':<34}{figures['bare_ray_call_ms']:>10}")
    print(f"{'one Ray actor call':<34}{figures['actor_ms']:>10}")
    print(f"{'pipeline, k=1 (1 call)':<34}{figures['pipeline_k1_ms']:>10}")
    print(f"{'pipeline, k=2 (3 calls)':<34}{figures['pipeline_k2_ms']:>10}")
    print(f"k=2 pipeline = {figures['k2_over_actor_call']}x one actor call; p95 {figures['pipeline_k2_p95_ms']} ms")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
