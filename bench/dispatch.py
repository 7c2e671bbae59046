"""Does dispatching by expert pay when the local models do not all fit? Naive loading vs the dispatcher.

Six local experts, each its own copy of the embedded model's weights on disk (real copies, so
every load reads its own files), a residency budget that holds two of them, 64 requests with a
seeded choice of one or two experts each, and short answers (max_tokens 16), so that loading
weighs as much as in the issue's scenario. In one run, on one pool of Ray actors, each mode
starting with every expert unloaded:
  naive concurrent (the baseline)
          - all requests at once, each request's experts called in parallel; an expert is loaded
            when a call needs it and is not resident, evicting the least recently used idle one
            when the budget is full; at most ``max_running`` experts generate at once (calls to an
            expert already generating join it, and its actor batches them). No queue by expert, no
            lookahead, no prefetch: what a user gets from load-on-demand actors and asyncio.gather
  naive serial
          - one call at a time in arrival order, load on demand, LRU eviction (an extra line)
  online  - all requests submitted at once to the Orchestrator, which serves the pool through the
            Dispatcher (per-expert queues, one batch per expert, lookahead eviction, prefetch)
  batch   - the same requests as a ``moesaic batch`` input (route all, each expert once, aggregate)
Prints seconds, loads and the speed-up over naive concurrent (and serial), the online p50/p95
latency, and whether the answers match naive serial's (greedy decoding: they should). Every actor
loads and generates once before the clock starts (its first load imports torch and transformers).

With ``--arrivals RATE`` the requests arrive over time instead, where the dispatcher is meant to help: a
Poisson stream at RATE requests/s (exponential gaps from ``random.Random(seed)``, the first request at 0),
and only two modes run, on the same pool and requests: naive concurrent (each request fired at its arrival,
its experts in parallel, load on demand, LRU eviction) and online (each request submitted to the
Orchestrator at its arrival). Per mode: loads (and their seconds), seconds from the first arrival to the last
answer, p50/p95 latency per request from its arrival; then loads naive/online and p95 naive/online against
issue 28's targets (>= 2x fewer loads, a lower p95), printed as met or not (bench/dispatch_arrivals.py).

``--engine vllm`` runs every expert on vLLM's engine (``options: {engine: vllm, dtype: float32, kv_cache_gb:
1}``, each in an engine actor of its own, its footprint the weights plus that KV cache; the engine environment is
found as experts/config/_engine_choice.py says).

    .venv/bin/python bench/dispatch.py [--requests 64] [--experts 6] [--max-tokens 16] [--seed 0] [--json]
    .venv/bin/python bench/dispatch.py --arrivals 1.5 --requests 32 [--engine native|vllm] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench.dispatch_arrivals import Replay, arrival_figures, arrival_times, match, percentile, print_arrivals, replay  # noqa: E402
from experts.actor.lifecycle import loaded_bytes  # noqa: E402
from experts.config._pool_spec import PoolSpec, parse_pool  # noqa: E402
from experts.engine.embedded import prepare_model, resolve_model  # noqa: E402
from experts.runtime._pool import ExpertPool  # noqa: E402
from experts.runtime.dispatch._dispatcher import dispatching  # noqa: E402
from experts.types import GenerationRequest, Message  # noqa: E402
from orchestrator.pipeline.batch import BatchRunner  # noqa: E402
from orchestrator.pipeline.orchestrator import Orchestrator  # noqa: E402
from orchestrator.pipeline.state import PipelineRequest  # noqa: E402

MODEL = "embedded:smollm2-135m-instruct"
QUESTIONS = [
    "Explain how a rainbow forms.",
    "Write a short poem about the sea.",
    "What is the capital of Japan?",
    "Describe how to make a cup of tea.",
    "Give three tips for learning a language.",
    "What does a compiler do?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "What is 12 times 7?",
    "Name three planets.",
    "How do bees make honey?",
    "What is photosynthesis?",
]


def copy_weights(count: int, workdir: Path) -> list[Path]:
    """``count`` real copies of the dequantised embedded model (no links: each load reads its own files)."""
    source = prepare_model(resolve_model(MODEL))
    copies = []
    for index in range(count):
        target = workdir / f"expert-{index}"
        shutil.copytree(source, target, symlinks=False)
        copies.append(target)
    return copies


VLLM_KV_CACHE_GB = 1.0  # each engine's KV cache (the least vLLM's CPU build takes), counted in its footprint
ENGINE_OPTIONS = {
    "native": {"engine": "native"},
    "vllm": {"engine": "vllm", "dtype": "float32", "kv_cache_gb": VLLM_KV_CACHE_GB},
}


def pool_spec(copies: list[Path], budget_gb: float, max_running: int, engine: str = "native") -> PoolSpec:
    experts = [
        {
            "name": f"e{index}",
            "backend": "local",
            "model": str(path),
            "options": dict(ENGINE_OPTIONS[engine]),
            "system_prompt": f"You are expert number {index}. Answer briefly.",
            "generation": {"max_tokens": 16, "temperature": 0.0},
            "batching": {"max_batch_size": 64, "max_wait_ms": 10},
            "resources": {"num_cpus": 0, "torch_threads": 1},
        }
        for index, path in enumerate(copies)
    ]
    return parse_pool(
        {
            "name": "bench-dispatch",
            "aggregation": {"strategy": "vote"},  # k answers become one without a model call
            "residency": {"budget_gb": budget_gb, "max_running": max_running, "latency_bound_s": 120},
            "experts": experts,
        },
        "<bench pool>",
    )


def workload(count: int, experts: int, seed: int) -> list[tuple[str, list[str]]]:
    """(question, experts) per request: a seeded question and one or two distinct experts."""
    rng = random.Random(seed)
    names = [f"e{index}" for index in range(experts)]
    return [(rng.choice(QUESTIONS), rng.sample(names, rng.choice((1, 2)))) for _ in range(count)]


def ask(question: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest([Message("user", question)], max_tokens=max_tokens, temperature=0.0)


async def total_loads(pool: ExpertPool) -> int:
    return sum(facts["loads"] for facts in (await pool.health()).values())


async def counting_loads(
    pool: ExpertPool, run: Awaitable[Replay], then: Callable[[], Awaitable[Any]] | None = None
) -> Replay:
    """``run``'s replay (``then`` awaited after it) with the loads over all experts meanwhile, and their seconds."""
    before = (await pool.health()).values()
    result = await run
    if then is not None:
        await then()
    after = (await pool.health()).values()
    result.loads = sum(facts["loads"] for facts in after) - sum(facts["loads"] for facts in before)
    result.load_s = sum(facts["load_seconds_total"] for facts in after) - sum(f["load_seconds_total"] for f in before)
    return result


async def warm_up(pool: ExpertPool) -> None:
    for name in pool.expert_names:  # one at a time: the budget holds two
        await pool.control(name, "load")
        await pool.generate(name, ask("Hi", 2))
        await pool.control(name, "unload")


async def naive_serial(
    pool: ExpertPool, work: list[tuple[str, list[str]]], capacity: int, max_tokens: int
) -> dict[str, Any]:
    """Arrival order, one call at a time, load on demand, evict the least recently used."""
    resident: OrderedDict[str, None] = OrderedDict()
    answers: dict[tuple[int, str], str] = {}
    for index, (question, names) in enumerate(work):
        for name in names:
            if name in resident:
                resident.move_to_end(name)
            else:
                if len(resident) >= capacity:
                    victim, _ = resident.popitem(last=False)
                    await pool.control(victim, "unload")
                await pool.control(name, "load")
                resident[name] = None
            answers[(index, name)] = (await pool.generate(name, ask(question, max_tokens))).text
    for name in resident:
        await pool.control(name, "unload")
    return answers


class OnDemandLRU:
    """The naive concurrent baseline's residency: load on demand, evict the least recently used idle expert.

    ``capacity`` experts may be resident or loading at once (the same memory budget as the dispatcher's);
    ``max_running`` experts may generate at once. A call for an expert that is already generating joins it.
    """

    def __init__(self, pool: ExpertPool, capacity: int, max_running: int) -> None:
        self.pool, self.capacity, self.max_running = pool, capacity, max_running
        self.changed = asyncio.Condition()
        self.resident: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self.loading: set[str] = set()
        self.calls_in_flight: dict[str, int] = {}
        self.victims: dict[str, str] = {}  # expert being loaded -> the expert it evicts

    async def generate(self, name: str, request: GenerationRequest) -> str:
        while not await self._claim(name):
            await self._load(name)
        try:
            return (await self.pool.generate(name, request)).text
        finally:
            async with self.changed:
                self.calls_in_flight[name] -= 1
                if not self.calls_in_flight[name]:
                    del self.calls_in_flight[name]
                self.changed.notify_all()

    async def unload_all(self) -> None:
        for name in list(self.resident):
            await self.pool.control(name, "unload")
        self.resident.clear()

    async def _claim(self, name: str) -> bool:
        """True once a call may run on resident ``name``; False when the caller must load it first."""
        async with self.changed:
            while True:
                if name in self.resident:
                    if name in self.calls_in_flight or len(self.calls_in_flight) < self.max_running:
                        self.calls_in_flight[name] = self.calls_in_flight.get(name, 0) + 1
                        self.resident.move_to_end(name)
                        return True
                elif name not in self.loading and self._book_slot(name):
                    return False
                await self.changed.wait()

    def _book_slot(self, name: str) -> bool:
        """Book room to load ``name``; when the budget is full, the least recently used idle expert is evicted."""
        if len(self.resident) + len(self.loading) >= self.capacity:
            victim = next((resident for resident in self.resident if resident not in self.calls_in_flight), None)
            if victim is None:
                return False
            del self.resident[victim]  # its memory stays booked by ``name`` in ``loading`` until it is unloaded
            self.victims[name] = victim
        self.loading.add(name)
        return True

    async def _load(self, name: str) -> None:
        try:
            victim = self.victims.pop(name, None)
            if victim is not None:
                await self.pool.control(victim, "unload")
            await self.pool.control(name, "load")
        finally:
            async with self.changed:
                self.loading.discard(name)
                self.resident[name] = None
                self.changed.notify_all()


async def naive_on_demand(
    pool: ExpertPool,
    work: list[tuple[str, list[str]]],
    capacity: int,
    max_running: int,
    max_tokens: int,
    arrivals: list[float],
) -> Replay:
    """Each request at its arrival offset, its experts in parallel, residency by :class:`OnDemandLRU`."""
    residency = OnDemandLRU(pool, capacity, max_running)

    async def one(index: int) -> dict[str, str]:
        question, names = work[index]
        texts = await asyncio.gather(*(residency.generate(name, ask(question, max_tokens)) for name in names))
        return dict(zip(names, texts))

    run = await replay(arrivals, one)
    await residency.unload_all()
    return run


async def naive_concurrent(
    pool: ExpertPool, work: list[tuple[str, list[str]]], capacity: int, max_running: int, max_tokens: int
) -> dict[tuple[int, str], str]:
    """Every request at once, each request's experts in parallel, residency by :class:`OnDemandLRU`."""
    return (await naive_on_demand(pool, work, capacity, max_running, max_tokens, [0.0] * len(work))).answers


async def online(
    orchestrator: Orchestrator, work: list[tuple[str, list[str]]], max_tokens: int, arrivals: list[float] | None = None
) -> Replay:
    """Each request submitted to the Orchestrator at its arrival offset (``None``: all at once)."""

    async def one(index: int) -> dict[str, str]:
        question, names = work[index]
        result = await orchestrator.run(PipelineRequest(ask(question, max_tokens), experts=names))
        return {answer.expert: answer.text for answer in result.answers}

    return await replay(arrivals or [0.0] * len(work), one)


async def batch(orchestrator: Orchestrator, work: list[tuple[str, list[str]]], workdir: Path, max_tokens: int) -> Any:
    source, out = workdir / "in.jsonl", workdir / "out.jsonl"
    with open(source, "w") as handle:
        for index, (question, names) in enumerate(work):
            handle.write(json.dumps({"id": index, "question": question, "experts": names}) + "\n")
    report = await BatchRunner(orchestrator, max_tokens=max_tokens).run(source, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    answers = {(row["id"], answer["expert"]): answer["text"] for row in rows for answer in row["answers"]}
    return answers, report


@asynccontextmanager
async def bench_pool(
    experts: int, max_running: int, engine: str
) -> AsyncIterator[tuple[ExpertPool, Path, dict[str, Any]]]:
    """The started, warmed-up pool of ``experts`` weight copies under a budget for two, its work folder, its shape."""
    workdir = Path(tempfile.mkdtemp(prefix="moesaic-bench-dispatch-"))
    try:
        copies = copy_weights(experts, workdir)
        footprint_gb = loaded_bytes(copies[0], 4) / 1024**3  # fp32 on CPU
        footprint_gb += VLLM_KV_CACHE_GB if engine == "vllm" else 0.0  # as the actors measure it
        spec = pool_spec(copies, round(2.05 * footprint_gb, 3), max_running, engine)
        pool = ExpertPool(spec, num_cpus=os.cpu_count())
        try:
            health = await pool.start()
            failed = {name: facts.get("error") for name, facts in health.items() if facts["state"] != "ready"}
            if failed:
                raise SystemExit(f"experts did not start: {failed}")
            await warm_up(pool)
            budget_gb = spec.residency.budget_gb if spec.residency else None
            shape = {"budget_gb": budget_gb, "expert_gb": round(footprint_gb, 3), "engine": engine}
            yield pool, workdir, shape
        finally:
            await pool.shutdown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def measure(
    requests: int, experts: int, max_tokens: int, seed: int, max_running: int, engine: str = "native"
) -> dict[str, Any]:
    async with bench_pool(experts, max_running, engine) as (pool, workdir, shape):
        work = workload(requests, experts, seed)
        calls = sum(len(names) for _, names in work)
        loads, started = await total_loads(pool), time.perf_counter()
        naive_answers = await naive_serial(pool, work, capacity=2, max_tokens=max_tokens)
        serial_s, serial_loads = time.perf_counter() - started, await total_loads(pool) - loads

        loads, started = await total_loads(pool), time.perf_counter()
        concurrent_answers = await naive_concurrent(pool, work, 2, max_running, max_tokens)
        naive_s, naive_loads = time.perf_counter() - started, await total_loads(pool) - loads

        orchestrator = Orchestrator(pool)
        dispatcher = dispatching(pool)
        loads, started = await total_loads(pool), time.perf_counter()
        online_run = await online(orchestrator, work, max_tokens)
        online_s, online_answers = time.perf_counter() - started, online_run.answers
        await dispatcher.release_all()  # type: ignore[union-attr]
        online_loads = await total_loads(pool) - loads

        loads, started = await total_loads(pool), time.perf_counter()
        batch_answers, report = await batch(orchestrator, work, workdir, max_tokens)
        batch_s, batch_loads = time.perf_counter() - started, await total_loads(pool) - loads
    return {
        "requests": requests,
        "expert_calls": calls,
        "experts": experts,
        "max_tokens": max_tokens,
        **shape,
        "max_running": max_running,
        "naive_concurrent_s": round(naive_s, 2),
        "naive_serial_s": round(serial_s, 2),
        "online_s": round(online_s, 2),
        "batch_s": round(batch_s, 2),
        "loads_naive": naive_loads,
        "loads_naive_serial": serial_loads,
        "loads_online": online_loads,
        "loads_batch": batch_loads,
        "online_speedup": round(naive_s / online_s, 2),
        "batch_speedup": round(naive_s / batch_s, 2),
        "online_speedup_vs_serial": round(serial_s / online_s, 2),
        "batch_speedup_vs_serial": round(serial_s / batch_s, 2),
        "online_p50_s": round(percentile(online_run.latencies, 0.5), 2),
        "online_p95_s": round(percentile(online_run.latencies, 0.95), 2),
        "batch_failed_items": report.failed,
        "answers_match_naive_concurrent": match(concurrent_answers, naive_answers),
        "answers_match_online": match(online_answers, naive_answers),
        "answers_match_batch": match(batch_answers, naive_answers),
    }


async def measure_arrivals(
    requests: int, experts: int, max_tokens: int, seed: int, max_running: int, rate: float, engine: str
) -> dict[str, Any]:
    """Naive concurrent load-on-demand against the Orchestrator over the Dispatcher, requests arriving at ``rate``/s."""
    async with bench_pool(experts, max_running, engine) as (pool, _, shape):
        work, arrivals = workload(requests, experts, seed), arrival_times(requests, rate, seed)

        naive = await counting_loads(pool, naive_on_demand(pool, work, 2, max_running, max_tokens, arrivals))
        orchestrator, dispatcher = Orchestrator(pool), dispatching(pool)
        online_run = await counting_loads(
            pool,
            online(orchestrator, work, max_tokens, arrivals),
            dispatcher.release_all,  # type: ignore[union-attr]
        )
        stats = list(dispatcher.stats.values())  # type: ignore[union-attr]
    figures = arrival_figures(rate, arrivals, naive, online_run)
    figures["online_batches"] = sum(expert.batches for expert in stats)  # runs of an expert over all queued for it
    figures["online_queue_wait_s"] = round(sum(e.wait_seconds_total for e in stats) / sum(e.requests for e in stats), 2)
    return {
        "requests": requests,
        "expert_calls": sum(len(names) for _, names in work),
        "experts": experts,
        "max_tokens": max_tokens,
        **shape,
        "max_running": max_running,
        "seed": seed,
        "arrivals": figures,
    }


def continuous_figures() -> dict[str, Any]:
    """The continuous-batching figures of ``bench/continuous.py``, when that benchmark is present and runs."""
    try:
        from bench.continuous import measure_continuous
    except ImportError as error:
        return {"continuous_error": f"bench/continuous.py not importable: {error}"}
    try:
        figures = measure_continuous()
    except Exception as error:  # another engineer's work in progress must not sink this benchmark
        return {"continuous_error": f"{type(error).__name__}: {error}"}
    keys = ("cb_tokens_per_s_16", "serial_tokens_per_s", "hf_generate_tokens_per_s")
    return {key: figures[key] for key in keys if key in figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--experts", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-running", type=int, default=2, help="experts generating at once (residency)")
    parser.add_argument("--no-continuous", action="store_true", help="skip bench/continuous.py's figures")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    parser.add_argument(
        "--arrivals", type=float, metavar="RATE", help="requests arrive as a Poisson stream at RATE/s: naive vs online"
    )
    parser.add_argument("--engine", choices=tuple(ENGINE_OPTIONS), default="native", help="the experts' engine")
    args = parser.parse_args()
    sizes = (args.requests, args.experts, args.max_tokens, args.seed, args.max_running)
    if args.arrivals is not None:
        figures = asyncio.run(measure_arrivals(*sizes, rate=args.arrivals, engine=args.engine))
        print_arrivals(figures)
        if args.json:
            print(json.dumps(figures))
        return
    figures = asyncio.run(measure(*sizes, engine=args.engine))
    if not args.no_continuous:
        figures.update(continuous_figures())
    print(f"{'mode':<18}{'seconds':>10}{'loads':>8}{'vs naive concurrent':>21}{'vs serial':>11}")
    rows = (
        ("naive concurrent", "naive_concurrent_s", "loads_naive"),
        ("naive serial", "naive_serial_s", "loads_naive_serial"),
        ("online", "online_s", "loads_online"),
        ("batch", "batch_s", "loads_batch"),
    )
    for label, seconds, loads in rows:
        over_naive = figures["naive_concurrent_s"] / figures[seconds]
        over_serial = figures["naive_serial_s"] / figures[seconds]
        print(f"{label:<18}{figures[seconds]:>10}{figures[loads]:>8}{over_naive:>21.2f}{over_serial:>11.2f}")
    shape = f"{figures['requests']} requests = {figures['expert_calls']} expert calls over {figures['experts']} experts"
    print(
        f"({shape} of {figures['expert_gb']} GB, budget {figures['budget_gb']} GB; online latency p50 "
        f"{figures['online_p50_s']} s, p95 {figures['online_p95_s']} s; answers equal to naive serial's: naive "
        f"concurrent {figures['answers_match_naive_concurrent']}, online {figures['answers_match_online']}, batch "
        f"{figures['answers_match_batch']}; target: online and batch >= 5x naive concurrent)"
    )
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
