"""Where does a k = 1 request to a ``litellm`` expert spend its time? One layer at a time, same upstream.

The upstream is ``bench/fake_openai.py`` (answers at once) in its own process. Each line adds one
layer on top of the line before, all measured in this process at concurrency 1, in interleaved
rounds (so a noisy stretch of the machine falls on every line alike):

  1. upstream, direct        an ``httpx`` POST to the fake endpoint: the floor every line pays
  2. + LiteLLM               ``litellm.acompletion`` to the same endpoint (what the LiteLLM proxy pays too)
  3. + our backend           ``LiteLLMBackend.generate`` (arguments, usage, cost)
  4. + hop to the actor      ``ExpertPool.generate``: guard, same-node channel, the actor's batcher, the backend
  5. + pipeline              ``Orchestrator.run`` with k = 1: LangGraph, routing, aggregation
  6. + HTTP app              the FastAPI app in process (``httpx.ASGITransport``): middlewares, gate, request
                             validation, response JSON; no socket

Each layer's share is its line minus the line before (medians; CPU ms of this process alongside, which
counts every thread of this process, Ray's included, and none of the actor's or the upstream's). One more
line, outside the chain, calls the pipeline's own steps by hand (the route step, which for one expert without an
escalation also asks it and aggregates: the same method the graph runs), so pipeline minus it is what LangGraph's
machinery costs.
bench/load.py measures the same path over real sockets against the LiteLLM proxy; this script says which
layer to cut.

    .venv/bin/python bench/breakdown.py [--requests 300] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["FAKE_OPENAI_KEY"] = "sk-fake"

from bench.load import QUESTION, free_port, litellm_pool  # noqa: E402
from experts.backends.litellm_backend import LiteLLMBackend  # noqa: E402
from experts.config._pool_spec import parse_pool  # noqa: E402
from experts.runtime._pool import ExpertPool  # noqa: E402
from experts.types import GenerationRequest, Message  # noqa: E402
from orchestrator.pipeline.nodes import PipelineNodes  # noqa: E402
from orchestrator.pipeline.orchestrator import Orchestrator  # noqa: E402
from orchestrator.pipeline.state import PipelineRequest, PipelineState  # noqa: E402

LAYERS = ("upstream", "litellm", "backend", "actor", "pipeline", "http_app")
BY_HAND = "nodes_by_hand"
LABELS = {
    "upstream": "upstream, direct (httpx)",
    "litellm": "+ LiteLLM (litellm.acompletion)",
    "backend": "+ our backend (LiteLLMBackend)",
    "actor": "+ hop to the actor (ExpertPool)",
    "pipeline": "+ pipeline (LangGraph, k=1)",
    "http_app": "+ HTTP app in process (ASGI)",
    BY_HAND: "pipeline steps called by hand",
}


def start_fake(port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "bench/fake_openai.py", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the fake endpoint did not start")


def question(index: int) -> str:
    return f"{QUESTION} #{index}"


async def measure(requests: int, rounds: int) -> dict[str, Any]:
    import litellm
    import ray

    from orchestrator.server.api.app import create_app

    port = free_port()
    fake = start_fake(port)
    api_base = f"http://127.0.0.1:{port}/v1"
    spec = parse_pool(litellm_pool(api_base), "<breakdown>")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = ExpertPool(spec)
    try:
        await pool.start()
        backend = LiteLLMBackend(spec.expert("fake"))
        await backend.load()
        orchestrator = Orchestrator(pool)
        app = create_app(orchestrator=orchestrator)
        upstream = httpx.AsyncClient(base_url=api_base, headers={"authorization": "Bearer sk-fake"})
        # a loopback Host: the browser guard (DNS rebinding) refuses others with 421
        in_process = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        ask = backend._arguments  # the very arguments the backend sends, for the bare LiteLLM line

        def generation(index: int) -> GenerationRequest:
            return GenerationRequest([Message("user", question(index))], max_tokens=16)

        def filled(index: int) -> GenerationRequest:  # what the actor hands its backend (the pool file's defaults)
            defaults = spec.expert("fake").generation
            return replace(generation(index), temperature=defaults.temperature, top_p=defaults.top_p)

        async def direct(index: int) -> None:
            body = {"model": "fake", "messages": [{"role": "user", "content": question(index)}], "max_tokens": 16}
            (await upstream.post("/chat/completions", json=body)).raise_for_status()

        async def bare_litellm(index: int) -> None:
            await litellm.acompletion(**ask(filled(index), stream=False))

        async def our_backend(index: int) -> None:
            [completion] = await backend.generate([filled(index)])
            assert completion.error is None, completion.error

        async def actor(index: int) -> None:
            completion = await pool.generate("fake", generation(index))
            assert completion.error is None, completion.error

        async def pipeline(index: int) -> None:
            await orchestrator.run(PipelineRequest(generation(index), k=1))

        nodes = PipelineNodes(orchestrator.pool, orchestrator.router, orchestrator.aggregator, orchestrator.aggregators)

        async def by_hand(index: int) -> None:
            state: PipelineState = {"request": PipelineRequest(generation(index), k=1), "timings_ms": {}}
            routed = await nodes.routed(state)  # one expert, no escalation: the route step asks it and aggregates too
            assert "final" in routed, "a k = 1 plan is answered inside the route step"

        async def http_app(index: int) -> None:
            body = {"model": "moesaic", "messages": [{"role": "user", "content": question(index)}], "max_tokens": 16}
            (await in_process.post("/v1/chat/completions", json=body)).raise_for_status()

        calls: dict[str, Callable[[int], Awaitable[None]]] = {
            "upstream": direct,
            "litellm": bare_litellm,
            "backend": our_backend,
            "actor": actor,
            "pipeline": pipeline,
            "http_app": http_app,
            BY_HAND: by_hand,
        }
        async with app.router.lifespan_context(app):
            for layer in calls:  # warm-up: connections, lazy imports, the actor's first calls
                for index in range(30):
                    await calls[layer](-1 - index)
            wall: dict[str, list[float]] = {layer: [] for layer in calls}
            cpu: dict[str, list[float]] = {layer: [] for layer in calls}
            share = max(1, requests // rounds)
            for number in range(rounds):
                for layer in calls:
                    for index in range(share):
                        started, started_cpu = time.perf_counter(), time.process_time()
                        await calls[layer](number * 100_000 + index)
                        wall[layer].append((time.perf_counter() - started) * 1000)
                        cpu[layer].append((time.process_time() - started_cpu) * 1000)
        await upstream.aclose()
        await in_process.aclose()
    finally:
        await pool.shutdown()
        ray.shutdown()
        fake.terminate()
    figures: dict[str, Any] = {"requests_per_layer": share * rounds, "rounds": rounds}
    previous = 0.0
    for layer in LAYERS:
        median = statistics.median(wall[layer])
        figures[f"{layer}_ms"] = round(median, 3)
        figures[f"{layer}_cpu_ms"] = round(statistics.median(cpu[layer]), 3)
        figures[f"{layer}_adds_ms"] = round(median - previous, 3)
        previous = median
    figures[f"{BY_HAND}_ms"] = round(statistics.median(wall[BY_HAND]), 3)
    figures["langgraph_ms"] = round(figures["pipeline_ms"] - figures[f"{BY_HAND}_ms"], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per layer, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.requests, args.rounds))
    print(f"{'layer':<36}{'p50 ms':>9}{'adds ms':>9}{'CPU ms here':>13}")
    for layer in LAYERS:
        print(
            f"{LABELS[layer]:<36}{figures[layer + '_ms']:>9.3f}{figures[layer + '_adds_ms']:>9.3f}"
            f"{figures[layer + '_cpu_ms']:>13.3f}"
        )
    print(
        f"{LABELS[BY_HAND]:<36}{figures[BY_HAND + '_ms']:>9.3f}   (pipeline minus this, LangGraph's machinery: "
        f"{figures['langgraph_ms']:.3f} ms)"
    )
    shape = f"{figures['requests_per_layer']} requests per layer, concurrency 1, {figures['rounds']} interleaved rounds"
    print(f"({shape})")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
