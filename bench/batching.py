"""Does batching by expert pay? Decode throughput of the local backend, batched vs one at a time.

Runs the embedded model in this process (one torch thread, as in an actor) on the same
prompts three ways, in one run:
  serial   - one request per backend call (the baseline: what an unbatched server does)
  batched  - all requests in one backend call
  queued   - requests submitted concurrently to the expert's RequestBatcher, which forms
             the batches itself (what the Ray actor does)
and prints tokens/s and the speed-up over serial.

    .venv/bin/python bench/batching.py [--requests 8] [--max-tokens 32] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.prompts import PROMPTS as ALL_PROMPTS  # noqa: E402
from experts.actor.batcher import RequestBatcher  # noqa: E402
from experts.backends.local import LocalBackend  # noqa: E402
from experts.config._pool_spec import ExpertSpec  # noqa: E402
from experts.types import Completion, GenerationRequest, Message  # noqa: E402

PROMPTS = ALL_PROMPTS[:8]  # the first eight: the figures in bench/RESULTS.md were measured on these


def requests(count: int, max_tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest([Message("user", PROMPTS[i % len(PROMPTS)])], max_tokens=max_tokens, temperature=0.0)
        for i in range(count)
    ]


def tokens(completions: list[Completion]) -> int:
    return sum(c.usage.completion_tokens for c in completions)


async def measure(count: int, max_tokens: int) -> dict[str, object]:
    backend = LocalBackend(ExpertSpec(name="bench", backend="local", model="embedded:smollm2-135m-instruct"))
    await backend.load()
    await backend.generate(requests(2, 4))  # warm-up

    started = time.perf_counter()
    serial = [(await backend.generate([request]))[0] for request in requests(count, max_tokens)]
    serial_s = time.perf_counter() - started

    started = time.perf_counter()
    batched = await backend.generate(requests(count, max_tokens))
    batched_s = time.perf_counter() - started

    batcher = RequestBatcher(backend.generate, max_batch_size=count, max_wait_s=0.01)
    started = time.perf_counter()
    queued = await asyncio.gather(*(batcher.submit(request) for request in requests(count, max_tokens)))
    queued_s = time.perf_counter() - started
    await batcher.close()

    return {
        "engine": str(backend.describe()["engine"]),  # the local backend's default (continuous since 2026-12-02)
        "requests": count,
        "max_tokens": max_tokens,
        "serial_s": round(serial_s, 3),
        "batched_s": round(batched_s, 3),
        "queued_s": round(queued_s, 3),
        "serial_tokens_per_s": round(tokens(serial) / serial_s, 1),
        "batched_tokens_per_s": round(tokens(batched) / batched_s, 1),
        "queued_tokens_per_s": round(tokens(queued) / queued_s, 1),
        "batched_speedup": round((tokens(batched) / batched_s) / (tokens(serial) / serial_s), 2),
        "queued_speedup": round((tokens(queued) / queued_s) / (tokens(serial) / serial_s), 2),
        "queued_batches": batcher.stats.batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.requests, args.max_tokens))
    print(f"{'mode':<10}{'seconds':>10}{'tokens/s':>12}{'vs serial':>12}")
    print(f"{'serial':<10}{figures['serial_s']:>10}{figures['serial_tokens_per_s']:>12}{1.0:>12}")
    print(
        f"{'batched':<10}{figures['batched_s']:>10}{figures['batched_tokens_per_s']:>12}{figures['batched_speedup']:>12}"
    )
    print(f"{'queued':<10}{figures['queued_s']:>10}{figures['queued_tokens_per_s']:>12}{figures['queued_speedup']:>12}")
    shape = f"{figures['requests']} requests, max_tokens {figures['max_tokens']}"
    print(f"({shape}; engine {figures['engine']}; queued ran as {figures['queued_batches']} batch(es))")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
