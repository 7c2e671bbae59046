"""The default pool end to end through ``moesaic serve``, on our engine and on vLLM's: throughput and latency.

Two servers on 127.0.0.1, started together and measured in interleaved rounds (each round sends the same batch of
requests to one, then the other; who goes first alternates): the default pool as shipped with its local experts on
``engine: native``, and the same pool with ``engine: vllm`` (one shared vLLM engine for the five personas). Each
request is a routed pipeline request (``model: moesaic``: two experts and, unless they agree, the aggregator),
different prompts (no cache hits), ``max_tokens`` as given, sent ``--concurrency`` at a time by one async client.
Figures: requests per second over each round (median of the rounds) and the latency p50/p95 over every request.

    .venv/bin/python bench/serve_engines.py [--rounds 3] [--requests 32] [--concurrency 16] [--max-tokens 32] [--json]

Needs the engine environment (``make engine-env``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.prompts import PROMPTS  # noqa: E402

ENGINES = ("native", "vllm")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pool_file(engine: str, folder: Path) -> Path:
    """The default pool with every local expert on ``engine`` (fp32, as ours runs on CPU)."""
    import yaml

    from experts.config._pool_spec import load_pool

    document = load_pool("default").document()
    document["name"] = f"default-{engine}"
    for expert in document["experts"]:
        expert["options"] = {**expert.get("options", {}), "engine": engine, "dtype": "float32"}
    path = folder / f"default-{engine}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


class Server:
    """``moesaic serve`` on a pool file, in a process group of its own (Ray's processes go with it)."""

    def __init__(self, pool: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "orchestrator.cli", "serve", "--pool", str(pool), "--port", str(self.port)]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "MOESAIC_LOG_LEVEL": "warning"}
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT
        )

    def wait_ready(self, timeout_s: float = 600) -> float:
        import httpx

        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"moesaic serve exited ({self.process.returncode}); see {self.log.name}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"moesaic serve not ready within {timeout_s:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


async def one_round(url: str, requests: int, concurrency: int, max_tokens: int, offset: int) -> dict[str, Any]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def ask(client: httpx.AsyncClient, number: int) -> None:
        question = f"{PROMPTS[number % len(PROMPTS)]} (request {offset + number})"
        body = {"model": "moesaic", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
        async with gate:
            started = time.perf_counter()
            reply = await client.post(url + "/v1/chat/completions", json=body)
            reply.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(ask(client, number) for number in range(requests)))
        seconds = time.perf_counter() - started
    return {"rps": requests / seconds, "latencies": latencies}


def measure(rounds: int, requests: int, concurrency: int, max_tokens: int) -> dict[str, Any]:
    from experts.config._engine_choice import find_engine_environment

    if find_engine_environment().python is None:
        raise SystemExit("no engine environment: run `make engine-env` first")
    folder = Path(tempfile.mkdtemp(prefix="serve-engines-"))
    servers = {engine: Server(pool_file(engine, folder), folder / f"{engine}.log") for engine in ENGINES}
    runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
    try:
        ready = {engine: server.wait_ready() for engine, server in servers.items()}
        for engine, server in servers.items():  # warm-up: one round each, not counted
            asyncio.run(one_round(server.url, min(requests, concurrency), concurrency, max_tokens, 10_000))
        for number in range(rounds):
            order = ENGINES if number % 2 == 0 else ENGINES[::-1]
            for engine in order:
                runs[engine].append(
                    asyncio.run(one_round(servers[engine].url, requests, concurrency, max_tokens, number * requests))
                )
    finally:
        for server in servers.values():
            server.stop()
    figures: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "max_tokens": max_tokens}
    figures["rounds"] = rounds
    figures["ready_s"] = {engine: round(seconds, 1) for engine, seconds in ready.items()}
    for engine in ENGINES:
        latencies = sorted(value for run in runs[engine] for value in run["latencies"])
        figures[engine] = {
            "rps": round(statistics.median(run["rps"] for run in runs[engine]), 3),
            "p50_s": round(latencies[len(latencies) // 2], 2),
            "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
        }
    figures["vllm_over_native_rps"] = round(figures["vllm"]["rps"] / figures["native"]["rps"], 2)
    figures["date"] = time.strftime("%Y-%m-%d")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = measure(args.rounds, args.requests, args.concurrency, args.max_tokens)
    print(f"{'engine':<8} {'req/s':>7} {'p50 s':>7} {'p95 s':>7}  ready s")
    for engine in ENGINES:
        row = figures[engine]
        print(f"{engine:<8} {row['rps']:>7} {row['p50_s']:>7} {row['p95_s']:>7}  {figures['ready_s'][engine]}")
    print(f"vLLM / ours, requests per second: {figures['vllm_over_native_rps']}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
