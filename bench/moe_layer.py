"""MoE layer speed: our expert path against transformers' default (grouped_mm) path, same weights, same run.

For Mixtral-8x7B- and Qwen3-30B-A3B-shaped layers and a range of token counts, times the
routed-expert computation (router output fixed, so both paths do the same work) and reports
the median time, the achieved memory bandwidth (bytes of the distinct experts touched plus
activations) and FLOP rate as fractions of this device's measured copy bandwidth and matmul
rate, and the speed ratio against transformers. "Ours" is the engine the ``moe`` backend picks
on the device (``auto``): the Triton kernels on CUDA (timed with CUDA events), the oneDNN-packed
path on CPU for bf16 (the grouped path for other dtypes). Packing, like loading, happens once
before timing. On CPU (``--scale``, default 4 on CPU, 1 on CUDA) the layer widths are divided so
the run takes minutes, and the row's ``shape`` says so.

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

from experts.moe import cpu_packed  # noqa: E402
from experts.moe.reference import experts_grouped  # noqa: E402

SHAPES = {"mixtral-8x7b": (8, 2, 4096, 14336), "qwen3-30b-a3b": (128, 8, 2048, 768)}  # E, k, H, I
CPU_TOKENS = [1, 8, 32, 128, 512]
GPU_TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1536, 2048, 3072, 4096]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _seconds(fn, device: torch.device) -> float:  # noqa: ANN001
    """Wall time of one call of ``fn``; on CUDA measured with CUDA events around it."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_seconds(fn, repeats: int, device: torch.device) -> float:  # noqa: ANN001
    """Median wall time of ``fn`` alone (the device's copy and matmul yardsticks)."""
    fn()
    return statistics.median(_seconds(fn, device) for _ in range(repeats))


def interleaved_medians(first, second, repeats: int, device: torch.device) -> tuple[float, float]:  # noqa: ANN001
    """Median seconds of two functions timed call by call in turn (a noisy stretch falls on both alike)."""
    first(), second()  # warm-up (and Triton compilation)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times[0].append(_seconds(first, device))
        times[1].append(_seconds(second, device))
    return statistics.median(times[0]), statistics.median(times[1])


def device_rates(dtype: torch.dtype, device: torch.device) -> tuple[float, float]:
    """Measured copy bandwidth (bytes/s, read + write) and matmul rate (FLOP/s) of this device."""
    mib = 2048 if device.type == "cuda" else 256  # far beyond any cache
    source = torch.ones(mib * 2**20 // 2, dtype=torch.bfloat16, device=device)
    target = torch.zeros_like(source)  # preallocated and touched: no page faults in the timing
    copy = median_seconds(lambda: target.copy_(source), 9, device)
    size = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
    matmul = median_seconds(lambda: a @ b, 9, device)
    return 2 * source.numel() * source.element_size() / copy, 2 * size**3 / matmul


def our_engine(dtype: torch.dtype, device: torch.device, w13: torch.Tensor, w2: torch.Tensor):  # noqa: ANN201
    """(name, fn(x, weights, ids)) of the engine ``auto`` picks here; packing happens now, not in the timing."""
    if device.type == "cuda":
        from experts.moe.fused import experts_triton

        return "triton", lambda x, weights, ids: experts_triton(x, w13, w2, weights, ids)
    if cpu_packed.available(dtype) is None:
        packed = cpu_packed.PackedExperts.pack(w13, w2)
        return "packed", lambda x, weights, ids: cpu_packed.experts_packed(x, packed, weights, ids)
    return "grouped", lambda x, weights, ids: experts_grouped(x, w13, w2, weights, ids)


def transformers_experts(experts: int, hidden: int, size: int, dtype: torch.dtype, device: torch.device):  # noqa: ANN201
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    config = MixtralConfig(
        hidden_size=hidden, intermediate_size=size, num_local_experts=experts, experts_implementation="grouped_mm"
    )
    module = MixtralExperts(config).to(device=device, dtype=dtype)
    for weight in (module.gate_up_proj, module.down_proj):
        torch.nn.init.normal_(weight, std=0.02)
    return module


def measure(
    shape: str,
    tokens: int,
    dtype: torch.dtype,
    scale: int,
    repeats: int,
    rates: tuple[float, float],
    device: torch.device,
) -> dict:
    experts, k, hidden, size = SHAPES[shape]
    hidden, size = hidden // scale, size // scale
    theirs = transformers_experts(experts, hidden, size, dtype, device)
    x = torch.randn(tokens, hidden, dtype=dtype, device=device)
    ids = torch.stack([torch.randperm(experts)[:k] for _ in range(tokens)]).to(device)
    weights = torch.softmax(torch.randn(tokens, k), -1).to(device=device, dtype=dtype)
    with torch.no_grad():
        engine, ours = our_engine(dtype, device, theirs.gate_up_proj, theirs.down_proj)
        ours_s, theirs_s = interleaved_medians(
            lambda: ours(x, weights, ids), lambda: theirs(x, ids, weights), repeats, device
        )
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
        "engine": engine,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", nargs="+", type=int, default=None, help="default: 1..512 on CPU, 1..4096 on CUDA")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    parser.add_argument("--scale", type=int, default=None, help="divide H and I by this (default 4 on CPU, 1 on CUDA)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for small GEMMs here)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale = args.scale or (1 if device.type == "cuda" else 4)
    counts = args.tokens or (GPU_TOKENS if device.type == "cuda" else CPU_TOKENS)
    rates = device_rates(dtype, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}: copy {rates[0] / 1e9:.1f} GB/s, {args.dtype} matmul {rates[1] / 1e9:.1f} GFLOP/s")
    print(
        f"{'shape':<18} {'tokens':>6} {'ours ms':>9} {'hf ms':>9} {'bw frac':>8} {'flop frac':>9} {'speedup':>8} engine"
    )
    rows = []
    for shape in args.shapes:
        for tokens in counts:
            row = measure(shape, tokens, dtype, scale, args.repeats, rates, device)
            rows.append(row)
            print(
                f"{row['shape']:<18} {tokens:>6} {row['ms']:>9.3f} {row['transformers_ms']:>9.3f}"
                f" {row['bw_frac']:>8.3f} {row['tflops_frac']:>9.3f} {row['speedup_vs_transformers']:>7.2f}x"
                f" {row['engine']}"
            )
    if args.json:
        figures = {"device": name, "copy_gb_s": round(rates[0] / 1e9, 1), "matmul_gflop_s": round(rates[1] / 1e9, 1)}
        print(json.dumps({**figures, "dtype": args.dtype, "interleaved": True, "rows": rows}))


if __name__ == "__main__":
    main()
