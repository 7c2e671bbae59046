"""Load on 127.0.0.1: Moesaic against the LiteLLM proxy, like for like, and Moesaic's internal overhead.

The target comparison is like for like: ``moesaic serve`` with one ``litellm`` expert calling the
fake upstream (k = 1) against the LiteLLM proxy calling the same fake upstream. Both make the same
upstream call through LiteLLM, per request, at the same concurrency, on the same cores. The fake
OpenAI-compatible endpoint (``bench/fake_openai.py``, answers at once) is also called directly, as
the floor. Two more lines measure Moesaic's own machinery: ``moesaic serve`` over echo experts
(no upstream call, no LiteLLM call) at k = 1 and k = 3 ("internal overhead").

Every target is a real server in its own process on 127.0.0.1, started first, warmed up, then
measured in interleaved rounds (each round runs every target once), so a burst of load from
elsewhere on the machine falls on all of them alike. One async httpx client:

- latency: ``--latency-requests`` per target, one at a time (concurrency 1), so a request's time
  is its own, not a queue's; the overhead figures come from this phase;
- throughput: ``--requests`` per target at ``--concurrency`` in flight: requests per second, and
  the latency under that load.

Overhead, exactly: for the proxy and for Moesaic on the litellm backend, latency pX at concurrency 1
minus the p50 of the same request sent straight to the fake endpoint, i.e. what each adds on top of
calling the upstream itself. For the echo targets: latency pX minus the echo backend's own p50 time
(microseconds), so the client's HTTP round trip is included. Every prompt differs (no response-cache
hits); the pools batch without waiting (``batching.max_wait_ms: 0``). Targets: Moesaic's litellm
overhead p50 <= 1.0x the proxy's and its rps at c=8 >= the proxy's; internal overhead (echo, k = 1)
p50 <= 5 ms. ``bench/breakdown.py`` says which layer of a request the time goes to.

    .venv/bin/python bench/load.py [--requests 500] [--concurrency 8] [--latency-requests 200] [--json]

Needs the LiteLLM proxy: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTION = "Compute the sum of two numbers, then write a short poem about the code"
SKILLS = {"m": ["math"], "w": ["writing"], "c": ["code"]}


@dataclass
class Run:
    """One phase against one target: per-request latencies (ms), failures, wall time."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0

    def pct(self, p: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s else 0.0


@dataclass
class Target:
    name: str
    url: str
    model: str
    baseline: str  # "echo": minus the echo backend's time; "direct": minus the direct call's p50; "none"
    extra: dict[str, Any] = field(default_factory=dict)  # added to every request body (``moesaic.k``)
    latency: Run = field(default_factory=Run)
    load: Run = field(default_factory=Run)
    overhead_p50_ms: float = math.nan
    overhead_p99_ms: float = math.nan


# -- pools and processes ------------------------------------------------------------------------------
def echo_pool(k: int = 1) -> dict[str, Any]:
    experts = [
        {"name": name, "backend": "echo", "model": "echo", "skills": skills} for name, skills in SKILLS.items()
    ] + [{"name": "agg", "backend": "echo", "model": "echo", "routable": False}]
    for expert in experts:
        expert.update(batching={"max_wait_ms": 0}, resources={"num_cpus": 0})
    return {"name": f"load-echo-k{k}", "routing": {"k": k}, "roles": {"aggregator": "agg"}, "experts": experts}


def litellm_pool(api_base: str) -> dict[str, Any]:
    expert = {
        "name": "fake",
        "backend": "litellm",
        "model": "openai/fake",
        "skills": ["math", "writing", "code"],
        "options": {"api_base": api_base, "api_key_env": "FAKE_OPENAI_KEY"},
        "batching": {"max_wait_ms": 0},
        "concurrency": 16,  # a hosted API: let the actor keep many calls in flight
        "resources": {"num_cpus": 0},
    }
    return {"name": "load-litellm", "routing": {"k": 1}, "experts": [expert]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process on 127.0.0.1 whose output goes to a log file; ready when ``ready_path`` answers 200."""

    def __init__(self, name: str, command: list[str], port: int, ready_path: str, workdir: Path) -> None:
        self.name, self.command, self.port, self.ready_path = name, command, port, ready_path
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "RAY_USAGE_STATS_ENABLED": "0"}
        env.update(FAKE_OPENAI_KEY="sk-fake", LITELLM_LOG="ERROR")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{self.name} did not become ready on port {self.port}; its log ends:\n{tail}")

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# -- measuring ------------------------------------------------------------------------------------
def body_for(target: Target, index: int) -> dict[str, Any]:
    message = {"role": "user", "content": f"{QUESTION} #{index}"}
    return {"model": target.model, "messages": [message], "max_tokens": 16, **target.extra}


async def phase(target: Target, requests: int, concurrency: int, first_index: int, run: Run | None = None) -> Run:
    """``requests`` POSTs with ``concurrency`` in flight, added to ``run``; a non-200 or no choices is an error."""
    run = run if run is not None else Run()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=target.url, timeout=60, limits=limits) as client:
        indices = iter(range(first_index, first_index + requests))

        async def worker() -> None:
            for index in indices:
                started = time.perf_counter()
                try:
                    reply = await client.post("/v1/chat/completions", json=body_for(target, index))
                    ok = reply.status_code == 200 and bool(reply.json().get("choices"))
                except httpx.HTTPError:
                    ok = False
                if ok:
                    run.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    run.errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        run.wall_s += time.perf_counter() - started
    return run


def check_experts(target: Target, k: int) -> None:
    """The pool answers with k experts (the routing this line claims to measure)."""
    reply = httpx.post(target.url + "/v1/chat/completions", json=body_for(target, -1), timeout=60)
    reply.raise_for_status()
    experts = reply.json()["moesaic"]["decision"]["experts"]
    if len(experts) != k:
        raise SystemExit(f"{target.name}: expected k = {k} experts, the pool recruited {experts}")


async def measure(targets: list[Target], args: argparse.Namespace) -> None:
    """Warm every target up, then interleaved rounds: latency (concurrency 1), then throughput."""
    for target in targets:
        await phase(target, args.warmup, 1, 1_000_000)  # connections, lazy imports, Ray actors
        await phase(target, args.warmup, args.concurrency, 2_000_000)
    rounds = max(1, args.rounds)
    for number in range(rounds):
        for target in targets:
            await phase(target, args.latency_requests // rounds, 1, number * 10_000, target.latency)
    for number in range(rounds):
        for target in targets:
            await phase(target, args.requests // rounds, args.concurrency, 500_000 + number * 10_000, target.load)


def echo_backend_ms(calls: int = 2000) -> float:
    """The echo backend's own time per request (the part of an echo target's latency that is not overhead)."""
    from experts.backends.echo import EchoBackend
    from experts.config._pool_spec import parse_pool
    from experts.types import GenerationRequest, Message

    backend = EchoBackend(parse_pool(echo_pool(1), "<load>").expert("m"))
    request = GenerationRequest([Message("user", QUESTION)], max_tokens=16)

    async def timed() -> list[float]:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await backend.generate([request])
            times.append((time.perf_counter() - started) * 1000)
        return times

    return statistics.median(asyncio.run(timed()))


def run_all(args: argparse.Namespace, workdir: Path) -> tuple[list[Target], float]:
    python = sys.executable
    backend_ms = echo_backend_ms()
    fake_port, proxy_port, echo_port, routed_port = (free_port() for _ in range(4))
    fake_url = f"http://127.0.0.1:{fake_port}"
    proxy_config = workdir / "proxy.yaml"
    proxy_params = {"model": "openai/fake", "api_base": fake_url + "/v1", "api_key": "sk-fake"}
    proxy_config.write_text(yaml.safe_dump({"model_list": [{"model_name": "fake", "litellm_params": proxy_params}]}))
    litellm = str(Path(python).parent / "litellm")
    servers = [
        Server("fake", [python, "bench/fake_openai.py", "--port", str(fake_port)], fake_port, "/v1/models", workdir),
        Server(
            "litellm-proxy",
            [litellm, "--config", str(proxy_config), "--host", "127.0.0.1", "--port", str(proxy_port)],
            proxy_port,
            "/health/liveliness",
            workdir,
        ),
    ]
    for name, pool, port in (("echo", echo_pool(), echo_port), ("routed", litellm_pool(fake_url + "/v1"), routed_port)):
        pool["transport"] = args.transport
        pool_file = workdir / f"{pool['name']}.yaml"
        pool_file.write_text(yaml.safe_dump(pool))
        command = [python, "-m", "orchestrator.cli", "serve", "--pool", str(pool_file), "--port", str(port)]
        command += ["--num-cpus", "2", "--log-level", args.log_level]
        servers.append(Server(f"moesaic-{name}", command, port, "/healthz", workdir))
    targets = [
        Target("fake endpoint, direct (baseline)", fake_url, "fake", "none"),
        Target("LiteLLM proxy -> fake", f"http://127.0.0.1:{proxy_port}", "fake", "direct"),
        Target("moesaic k=1, echo", f"http://127.0.0.1:{echo_port}", "moesaic", "echo"),
        Target("moesaic k=3, echo", f"http://127.0.0.1:{echo_port}", "moesaic", "echo", {"moesaic": {"k": 3}}),
        Target("moesaic k=1, litellm -> fake", f"http://127.0.0.1:{routed_port}", "moesaic", "direct"),
    ]
    with contextlib.ExitStack() as running:
        for server in servers:
            running.enter_context(server)
        for target, k in zip(targets[2:], (1, 3, 1)):
            check_experts(target, k)
        asyncio.run(measure(targets, args))
    direct_p50 = targets[0].latency.pct(50)
    for target in targets:
        subtract = {"echo": backend_ms, "direct": direct_p50}.get(target.baseline)
        if subtract is not None:
            target.overhead_p50_ms = target.latency.pct(50) - subtract
            target.overhead_p99_ms = target.latency.pct(99) - subtract
    return targets, backend_ms


# -- report ---------------------------------------------------------------------------------------
def report(targets: list[Target], backend_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    by = {target.name: target for target in targets}
    direct, proxy = by["fake endpoint, direct (baseline)"], by["LiteLLM proxy -> fake"]
    k1, k3, routed = by["moesaic k=1, echo"], by["moesaic k=3, echo"], by["moesaic k=1, litellm -> fake"]
    c = args.concurrency
    header = f"{'target':<34}{'rps c=' + str(c):>10}{'p50 c=' + str(c):>10}{'p99 c=' + str(c):>10}"
    header += f"{'p50 c=1':>9}{'p99 c=1':>9}{'ovh p50':>9}{'ovh p99':>9}{'errors':>8}"
    print(header)
    for t in targets:
        print(
            f"{t.name:<34}{t.load.rps:>10.0f}{t.load.pct(50):>10.2f}{t.load.pct(99):>10.2f}"
            f"{t.latency.pct(50):>9.2f}{t.latency.pct(99):>9.2f}"
            f"{_ms(t.overhead_p50_ms):>9}{_ms(t.overhead_p99_ms):>9}{t.latency.errors + t.load.errors:>8}"
        )
    print(
        f"ms; ovh = overhead at concurrency 1 (echo backend's own time {backend_ms * 1000:.1f} us; direct p50 "
        f"{direct.latency.pct(50):.2f} ms)"
    )
    ratio = routed.overhead_p50_ms / proxy.overhead_p50_ms if proxy.overhead_p50_ms > 0 else math.nan
    rps_ratio = routed.load.rps / proxy.load.rps if proxy.load.rps else math.nan
    print(
        f"like for like (litellm -> fake): moesaic overhead p50 {routed.overhead_p50_ms:.2f} ms vs the proxy's "
        f"{proxy.overhead_p50_ms:.2f} ms = {ratio:.2f}x (target <= 1.0: {'met' if ratio <= 1.0 else 'NOT met'}); "
        f"rps c={c} {routed.load.rps:.0f} vs {proxy.load.rps:.0f} = {rps_ratio:.2f}x "
        f"(target >= 1.0: {'met' if rps_ratio >= 1.0 else 'NOT met'})"
    )
    print(
        f"internal overhead (echo experts, k=1): p50 {k1.overhead_p50_ms:.2f} ms "
        f"(target <= 5: {'met' if k1.overhead_p50_ms <= 5.0 else 'NOT met'}); k=3 {k3.overhead_p50_ms:.2f} ms"
    )
    figures = {
        "rps": round(k1.load.rps, 1),
        "overhead_p50_ms_k1": round(k1.overhead_p50_ms, 3),
        "overhead_p99_ms_k1": round(k1.overhead_p99_ms, 3),
        "overhead_p50_ms_k3": round(k3.overhead_p50_ms, 3),
        "overhead_p99_ms_k3": round(k3.overhead_p99_ms, 3),
        "litellm_proxy_overhead_p50_ms": round(proxy.overhead_p50_ms, 3),
        "litellm_proxy_overhead_p99_ms": round(proxy.overhead_p99_ms, 3),
        "moesaic_litellm_overhead_p50_ms": round(routed.overhead_p50_ms, 3),
        "moesaic_litellm_over_proxy": round(ratio, 3),
        "moesaic_litellm_rps_over_proxy": round(rps_ratio, 3),
        "moesaic_litellm_overhead_p99_ms": round(routed.overhead_p99_ms, 3),
        "log_level": args.log_level,
        "rps_k3": round(k3.load.rps, 1),
        "rps_litellm_proxy": round(proxy.load.rps, 1),
        "rps_moesaic_litellm": round(routed.load.rps, 1),
        "rps_direct": round(direct.load.rps, 1),
        "errors": sum(t.latency.errors + t.load.errors for t in targets),
        "requests": args.requests,
        "latency_requests": args.latency_requests,
        "concurrency": c,
        "transport": args.transport,
        "echo_backend_ms": round(backend_ms, 5),
    }
    return figures


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="requests per target in the throughput phase")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight in the throughput phase")
    parser.add_argument("--latency-requests", type=int, default=200, help="sequential requests per target")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured requests per target, per phase")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the requests are split into")
    parser.add_argument(
        "--transport",
        choices=["auto", "ray"],
        default="auto",
        help="the pools' transport: auto (same-node channel, the default) or ray (every expert call a Ray call)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="moesaic serve's --log-level (its default, info, logs every request and every expert batch)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    if (
        importlib.util.find_spec("litellm_proxy_extras") is None
        or not (Path(sys.executable).parent / "litellm").exists()
    ):
        raise SystemExit("the LiteLLM proxy baseline is not installed: run `pip install -e .[bench]`")
    with tempfile.TemporaryDirectory(prefix="moesaic-load-") as workdir:
        targets, backend_ms = run_all(args, Path(workdir))
    figures = report(targets, backend_ms, args)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
