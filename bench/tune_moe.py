"""Tune the MoE grouped-GEMM tiles on this GPU and write the best ones to ``experts/moe/configs/``.

For each layer shape (Mixtral-8x7B: E=8, H=4096, I=14336, k=2; Qwen3-30B-A3B: E=128,
H=2048, I=768, k=8) and token count, times every candidate ``KernelConfig`` on the whole
``experts_triton`` call (align, both GEMMs, slot sum; replayed from a CUDA graph so launch
overhead does not hide the kernels, CUDA events, median of repeats), drops candidates that
fail to compile or disagree with the fp32 reference, and writes the fastest per token count
to the table of (E, N = I, dtype, this device), keeping entries already there for other
token counts. ``--space quick`` times a small grid (minutes); ``full`` a wide one (an hour or
more per shape, mostly compiling). ``--budget-s S`` caps the whole run at about S seconds, shared
evenly by every (shape, token count): the default heuristic's config is timed first, so each
entry is at least as fast as the untuned kernels, and candidates left when its share is spent
are skipped (and counted). Needs CUDA: without it the script says so and exits 2.

    .venv/bin/python bench/tune_moe.py [--model mixtral-8x7b qwen3-30b-a3b] [--tokens 1 2 4 ...]
        [--dtype bf16] [--space quick|full] [--budget-s S] [--out DIR] [--dry-run] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experts.moe.configs import (  # noqa: E402
    CONFIG_DIR,
    KernelConfig,
    config_file,
    default_config,
    device_name,
    load_table,
    save_table,
)

SHAPES = {"mixtral-8x7b": (8, 2, 4096, 14336), "qwen3-30b-a3b": (128, 8, 2048, 768)}  # E, k, H, I
TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SPACES = {
    "quick": {"m": (16, 32, 64, 128), "n": (64, 128), "k": (64, 128), "g": (1, 8), "w": (4, 8), "s": (3, 4)},
    "full": {
        "m": (16, 32, 64, 128),
        "n": (32, 64, 128, 256),
        "k": (32, 64, 128, 256),
        "g": (1, 8, 16, 32),
        "w": (4, 8),
        "s": (2, 3, 4, 5),
    },
}
SHARED_MEMORY = 200 * 1024  # bytes of staged tiles we allow (H100: 227 KiB per block)


def candidates(space: str, rows: float, element: int) -> list[KernelConfig]:
    """The grid, less tiles that cannot fit shared memory or whose row blocks are mostly padding."""
    grid = SPACES[space]
    largest_m = max(16, 1 << max(int(rows) - 1, 0).bit_length()) * 2  # up to twice the rows per expert
    found = []
    for m, n, k, g, w, s in itertools.product(grid["m"], grid["n"], grid["k"], grid["g"], grid["w"], grid["s"]):
        staged = s * (m * k + 2 * k * n) * element  # the fused first GEMM stages a gate and an up tile
        if m <= largest_m and staged <= SHARED_MEMORY:
            found.append(KernelConfig(block_m=m, block_n=n, block_k=k, group_m=g, num_warps=w, num_stages=s))
    return found


def in_trial_order(found: list[KernelConfig], heuristic: KernelConfig) -> list[KernelConfig]:
    """The heuristic's config first (it is what runs untuned), then the grid in its own order."""
    return [heuristic, *(config for config in found if config != heuristic)]


def weights_of(experts: int, width: int, size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (w13, w2) at the scale of a trained layer, made once per shape."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    w13 = (torch.randn(experts, 2 * size, width, device="cuda", generator=generator) / width**0.5).to(dtype)
    w2 = (torch.randn(experts, width, size, device="cuda", generator=generator) / size**0.5).to(dtype)
    return w13, w2


def batch(tokens: int, experts: int, top_k: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Hidden states and a router-like routing (top-k of random logits, renormalised softmax)."""
    generator = torch.Generator(device="cuda").manual_seed(tokens)
    hidden = torch.randn(tokens, width, device="cuda", generator=generator).to(dtype)
    values, ids = torch.randn(tokens, experts, device="cuda", generator=generator).topk(top_k, dim=-1)
    return hidden, torch.softmax(values, dim=-1), ids


def time_call(fn: Any, repeats: int, calls: int) -> float:
    """Median seconds of one call: ``calls`` calls replayed from a CUDA graph (eager if capture fails)."""
    fn()
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        run = graph.replay
    except RuntimeError:

        def run() -> None:
            for _ in range(calls):
                fn()

    run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000 / calls)
    return statistics.median(times)


def tune_shape(
    name: str, dtype: torch.dtype, tokens_list: list[int], space: str, log: Any, seconds_each: float | None = None
) -> dict[int, dict]:
    """token count -> {"config": KernelConfig, "us": time, "tried": n, "skipped": n} for one shape.

    ``seconds_each``: the time share of one token count; candidates left when it is spent are skipped.
    """
    from experts.moe.fused import experts_triton
    from experts.moe.reference import experts_reference

    experts, top_k, width, size = SHAPES[name]
    w13, w2 = weights_of(experts, width, size, dtype)
    chosen = {}
    for tokens in tokens_list:
        hidden, weights, ids = batch(tokens, experts, top_k, width, dtype)
        reference = experts_reference(hidden, w13, w2, weights, ids).float()
        tolerance = 2e-2 * reference.abs().max().item() + 1e-6
        timed = []
        grid = candidates(space, tokens * top_k / experts, w13.element_size())
        trials = in_trial_order(grid, default_config(tokens, experts, top_k, dtype))
        deadline = None if seconds_each is None else time.monotonic() + seconds_each
        skipped = 0
        for position, config in enumerate(trials):
            if deadline is not None and timed and time.monotonic() > deadline:
                skipped = len(trials) - position
                break
            try:
                out = experts_triton(hidden, w13, w2, weights, ids, config=config)
                if (out.float() - reference).abs().max().item() > tolerance:
                    log(f"  {name} T={tokens}: {config} gives a wrong result; skipped")
                    continue
                seconds = time_call(lambda c=config: experts_triton(hidden, w13, w2, weights, ids, config=c), 5, 10)
            except Exception as error:  # noqa: BLE001 - out of resources, compile failures: not a candidate
                log(f"  {name} T={tokens}: {config} failed ({type(error).__name__}); skipped")
                continue
            timed.append((seconds, config))
        if not timed:
            raise SystemExit(f"no candidate config ran for {name} at {tokens} tokens; see the messages above")
        seconds, best = min(timed, key=lambda entry: entry[0])
        chosen[tokens] = {"config": best, "us": seconds * 1e6, "tried": len(timed), "skipped": skipped}
        note = f", {skipped} skipped for time" if skipped else ""
        log(f"{name} T={tokens:5d}: {seconds * 1e6:9.1f} us  {best}  ({len(timed)} candidates{note})")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=list(TOKENS))
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--space", choices=sorted(SPACES), default="full")
    parser.add_argument("--budget-s", type=float, default=None, help="about this many seconds for the whole run")
    parser.add_argument("--out", type=Path, default=CONFIG_DIR, help="folder of the JSON tables")
    parser.add_argument("--dry-run", action="store_true", help="time and report, write no file")
    parser.add_argument("--json", action="store_true", help="print the chosen configs as one JSON object, last line")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "tune_moe.py times the Triton MoE kernels on a CUDA GPU; this machine has none "
            f"(torch {torch.__version__}). Run it on the GPU that will serve the model; until then the kernels "
            "use the default heuristic.",
            file=sys.stderr,
        )
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("tune_moe.py needs triton: pip install 'moesaic[gpu]'", file=sys.stderr)
        return 2
    dtype, device = DTYPES[args.dtype], device_name()
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    report: dict[str, Any] = {"device": device, "dtype": args.dtype, "space": args.space, "files": {}}
    tokens_list = sorted(set(args.tokens))
    seconds_each = None if args.budget_s is None else args.budget_s / (len(args.model) * len(tokens_list))
    for name in args.model:
        experts, _, _, size = SHAPES[name]
        chosen = tune_shape(name, dtype, tokens_list, args.space, log, seconds_each)
        path = config_file(experts, size, dtype, device, args.out)
        table = load_table(path) if path.is_file() else {}
        table.update({tokens: entry["config"] for tokens, entry in chosen.items()})
        if not args.dry_run:
            save_table(path, table)
            log(f"wrote {path}")
        report["files"][path.name] = {
            str(tokens): {
                **entry["config"].to_json(),
                "us": round(entry["us"], 2),
                "tried": entry["tried"],
                "skipped": entry["skipped"],
            }
            for tokens, entry in chosen.items()
        }
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
