"""bench/dispatch.py's arrivals mode: requests arrive over time, a seeded Poisson stream, instead of all at once.

The arrival offsets (``arrival_times``), a replay that starts each request at its offset and times it from its
arrival (``replay``), and the figures, targets and table of the two modes compared (``arrival_figures``,
``print_arrivals``). bench/dispatch.py owns the pool and the two modes: naive concurrent load-on-demand and the
Orchestrator over the Dispatcher.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

LOADS_TARGET = 2.0  # issue 28: the dispatcher under arrivals, at least 2x fewer loads than naive (and a lower p95)


@dataclass
class Replay:
    """One mode's run: its answers, each request's latency from its arrival, and the run's length."""

    answers: dict[tuple[int, str], str]  # (request index, expert) -> text
    latencies: list[float]  # seconds from each request's arrival to its answers, in request order
    seconds: float  # from the first arrival to the last answer
    peak_in_flight: int  # the most requests arrived and not yet answered at one moment
    loads: int = 0  # expert loads during the run (set by the caller, which reads the actors' counters)
    load_s: float = 0.0  # the seconds those loads took, summed


def arrival_times(count: int, rate: float, seed: int) -> list[float]:
    """Offsets (seconds) of ``count`` arrivals at ``rate`` per second: the first at 0, then exponential gaps drawn
    from ``random.Random(seed)`` (a Poisson stream)."""
    if rate <= 0:
        raise ValueError(f"arrival rate must be positive, not {rate}")
    rng, offsets, now = random.Random(seed), [], 0.0
    for _ in range(count):
        offsets.append(now)
        now += rng.expovariate(rate)
    return offsets


async def replay(arrivals: list[float], serve: Callable[[int], Awaitable[dict[str, str]]]) -> Replay:
    """Start ``serve(index)`` (its answers by expert) at each request's arrival offset; all at once where they are 0.

    A request's latency runs from its scheduled arrival, so a late start counts against the mode.
    """
    started = time.perf_counter()

    async def one(index: int, offset: float) -> tuple[dict[str, str], float, float]:
        arrival = started + offset
        if arrival > time.perf_counter():  # no yield for offset 0: requests submitted together queue together
            await asyncio.sleep(arrival - time.perf_counter())
        texts = await serve(index)
        return texts, arrival, time.perf_counter()

    outcomes = await asyncio.gather(*(one(index, offset) for index, offset in enumerate(arrivals)))
    seconds = time.perf_counter() - started
    answers = {(index, name): text for index, (texts, _, _) in enumerate(outcomes) for name, text in texts.items()}
    return Replay(answers, [done - arrival for _, arrival, done in outcomes], seconds, peak_in_flight(outcomes))


def peak_in_flight(outcomes: list[tuple[Any, float, float]]) -> int:
    events = sorted([(arrival, 1) for _, arrival, _ in outcomes] + [(done, -1) for _, _, done in outcomes])
    peak = current = 0
    for _, step in events:  # at equal times an answer (-1) sorts before an arrival
        current += step
        peak = max(peak, current)
    return peak


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def match(answers: dict[tuple[int, str], str], reference: dict[tuple[int, str], str]) -> float:
    return round(sum(answers.get(key) == text for key, text in reference.items()) / len(reference), 3)


def arrival_figures(rate: float, arrivals: list[float], naive: Replay, online: Replay) -> dict[str, Any]:
    """The ``arrivals`` figures of bench/dispatch.py's JSON: per mode, then the ratios and the targets."""
    figures: dict[str, Any] = {"rate_per_s": rate, "arrival_span_s": round(arrivals[-1], 2)}
    for mode, run in (("naive", naive), ("online", online)):
        figures[f"{mode}_loads"] = run.loads
        figures[f"{mode}_load_s"] = round(run.load_s, 2)
        figures[f"{mode}_s"] = round(run.seconds, 2)
        figures[f"{mode}_p50_s"] = round(percentile(run.latencies, 0.5), 2)
        figures[f"{mode}_p95_s"] = round(percentile(run.latencies, 0.95), 2)
        figures[f"{mode}_peak_in_flight"] = run.peak_in_flight
    naive_p95, online_p95 = percentile(naive.latencies, 0.95), percentile(online.latencies, 0.95)
    loads_ratio = naive.loads / max(online.loads, 1)
    figures["loads_ratio"] = round(loads_ratio, 2)  # naive / online
    figures["p95_ratio"] = round(naive_p95 / online_p95, 2)  # naive / online
    figures["loads_target_met"] = loads_ratio >= LOADS_TARGET
    figures["p95_target_met"] = online_p95 < naive_p95
    figures["answers_match"] = match(online.answers, naive.answers)  # online's against naive's (greedy: equal)
    return figures


def print_arrivals(figures: dict[str, Any]) -> None:
    arrivals = figures["arrivals"]
    print(
        f"{'mode (arrivals)':<18}{'seconds':>10}{'loads':>8}{'load s':>9}{'p50 s':>9}{'p95 s':>9}{'peak in flight':>16}"
    )
    for label, mode in (("naive concurrent", "naive"), ("online", "online")):
        print(
            f"{label:<18}{arrivals[f'{mode}_s']:>10}{arrivals[f'{mode}_loads']:>8}{arrivals[f'{mode}_load_s']:>9}"
            f"{arrivals[f'{mode}_p50_s']:>9}{arrivals[f'{mode}_p95_s']:>9}{arrivals[f'{mode}_peak_in_flight']:>16}"
        )
    shape = f"{figures['requests']} requests = {figures['expert_calls']} expert calls over {figures['experts']} experts"
    print(
        f"({shape} of {figures['expert_gb']} GB on engine {figures['engine']}, budget {figures['budget_gb']} GB; "
        f"Poisson arrivals at {arrivals['rate_per_s']}/s over {arrivals['arrival_span_s']} s; latency from each "
        f"request's arrival; online: {arrivals.get('online_batches')} expert runs, a request's mean wait in the "
        f"dispatcher's queue {arrivals.get('online_queue_wait_s')} s; online answers equal to naive's: "
        f"{arrivals['answers_match']})"
    )
    print(
        f"loads naive/online {arrivals['loads_ratio']}x (target >= {LOADS_TARGET:g}x: "
        f"{'met' if arrivals['loads_target_met'] else 'not met'}); p95 naive/online {arrivals['p95_ratio']}x "
        f"(target: online lower: {'met' if arrivals['p95_target_met'] else 'not met'})"
    )
