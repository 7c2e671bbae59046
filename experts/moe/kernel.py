"""The Triton grouped GEMM of the FFN experts, used for both projections, and the sum over slots.

One kernel, one program per (block of ``block_m`` aligned rows, block of ``block_n`` output
columns). Its rows come from ``experts.moe.align``: each names a (token, slot) pair, and all
rows of a block share one expert, so the program multiplies the gathered rows by that one
expert's weight. Gathering and scattering inside the kernel means no permuted copy of the
activations is ever made:

- first projection: row = ``hidden[pair // k]`` times ``w13[e]``; the epilogue computes the
  gate columns n and the up columns n + I in the same program and writes only
  ``silu(gate) * up`` (I wide) to row ``pair`` of the intermediate buffer;
- second projection: row = ``intermediate[pair]`` times ``w2[e]``, times the pair's routing
  weight, written to row ``pair`` of a (T * k, H) fp32 buffer.

``sum_slots`` then adds each token's k rows (dropped slots masked, so the buffer needs no
zeroing). Accumulation is fp32 throughout; fp32 weights use exact ("ieee") dot products,
not TF32, because fp32 is the checking dtype. Kernels are made on first use (``jitted``):
Triton decides when a kernel is made whether to interpret it (``TRITON_INTERPRET=1``, the
CPU test mode), so a test can set that after this module was imported. The interpreter
multiplies bf16 wrongly in ``tl.dot``, so interpreted kernels cast both operands to fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from experts.moe.configs import KernelConfig

try:
    import triton.language as tl
except ImportError:  # importable without Triton; launching then says what to install
    tl = None

_JITTED: dict[Callable[..., Any], Any] = {}


def jitted(fn: Callable[..., Any]) -> Any:
    """``triton.jit(fn)``, made once, on first use (see the module docstring for why late)."""
    kernel = _JITTED.get(fn)
    if kernel is None:
        try:
            import triton
        except ImportError:
            raise RuntimeError("the Triton MoE kernels need the triton package: pip install 'moesaic[gpu]'") from None
        kernel = _JITTED[fn] = triton.jit(fn)
    return kernel


def interpreted(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s kernel runs on Triton's CPU interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(jitted(fn), InterpretedFunction)


def check_device(tensor: torch.Tensor) -> None:
    """Compiled kernels need CUDA tensors; the interpreter needs CPU ones."""
    if interpreted(_gemm_kernel):
        if tensor.device.type != "cpu":
            raise ValueError("TRITON_INTERPRET=1 runs the kernels on CPU tensors; move the inputs to the CPU")
    elif tensor.device.type != "cuda":
        raise ValueError(
            f"the Triton MoE kernels need CUDA tensors, got {tensor.device}; use experts_grouped on CPU "
            "(or set TRITON_INTERPRET=1 before the first call to test the kernels on CPU)"
        )


def grouped_gemm(
    rows: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    alignment: Any,
    config: KernelConfig,
    row_div: int,
    fuse_silu: bool = False,
    routing: torch.Tensor | None = None,
) -> None:
    """out[pair] = epilogue(rows[pair // row_div] @ weight[expert(pair)].T) for every aligned pair.

    ``weight`` is (E, N_w, K); ``out`` is (T * k, N) with N = N_w / 2 under ``fuse_silu``
    (gate rows first, then up rows) and N = N_w otherwise. ``routing`` (T * k,) fp32, when
    given, scales each pair's row. Rows of dropped pairs are left untouched.
    """
    width = out.shape[1]
    if weight.shape[1] != (2 * width if fuse_silu else width) or weight.shape[2] != rows.shape[1]:
        raise ValueError(
            f"grouped_gemm: weight {tuple(weight.shape)} does not fit rows {tuple(rows.shape)}, width {width}"
        )
    blocks_n = -(-width // config.block_n)
    grid = (alignment.max_blocks * blocks_n,)
    exact = interpreted(_gemm_kernel)
    jitted(_gemm_kernel)[grid](
        rows,
        weight,
        out,
        routing if routing is not None else out,  # never read unless WEIGHTED
        alignment.sorted_pair_ids,
        alignment.block_expert,
        alignment.num_padded,
        width,
        rows.shape[1],
        alignment.num_pairs,
        alignment.max_blocks,
        row_div,
        rows.stride(0),
        rows.stride(1),
        weight.stride(0),
        weight.stride(1),
        weight.stride(2),
        out.stride(0),
        out.stride(1),
        BLOCK_M=config.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=config.block_k,
        GROUP_M=config.group_m,
        FUSE_SILU=fuse_silu,
        WEIGHTED=routing is not None,
        DOT_FP32=exact,
        PRECISION="ieee" if exact or weight.dtype == torch.float32 else None,  # None: Triton's default
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


def sum_slots(slots: torch.Tensor, ids: torch.Tensor, num_experts: int, dtype: torch.dtype) -> torch.Tensor:
    """(T, H) in ``dtype``: the sum over k of ``slots`` (T * k, H) fp32, skipping dropped (sentinel) slots."""
    tokens, top_k = ids.shape
    width = slots.shape[1]
    out = torch.empty(tokens, width, dtype=dtype, device=slots.device)
    block = min(1024, 1 << max(width - 1, 0).bit_length())
    grid = (tokens, -(-width // block))
    jitted(_sum_slots_kernel)[grid](slots, ids.contiguous(), out, width, num_experts, TOP_K=top_k, BLOCK_H=block)
    return out


def _gemm_kernel(
    rows_ptr,
    weight_ptr,
    out_ptr,
    routing_ptr,
    sorted_ptr,
    block_expert_ptr,
    num_padded_ptr,
    N,
    K,
    num_pairs,
    blocks_m,
    row_div,
    stride_rm,
    stride_rk,
    stride_we,
    stride_wn,
    stride_wk,
    stride_om,
    stride_on,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    FUSE_SILU: tl.constexpr,
    WEIGHTED: tl.constexpr,
    DOT_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # GROUP_M row blocks walk the column blocks together, so a weight tile stays in L2 for all of them
    pid = tl.program_id(0)
    blocks_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * blocks_n
    first_m = (pid // per_group) * GROUP_M
    group_size = tl.minimum(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_size
    pid_n = (pid % per_group) // group_size
    if pid_m * BLOCK_M >= tl.load(num_padded_ptr):
        return  # past the aligned rows: the grid is sized for the worst case

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + offs_m)
    live = pair < num_pairs
    pair = tl.where(live, pair, 0).to(tl.int64)
    expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = rows_ptr + (pair // row_div)[:, None] * stride_rm + offs_k[None, :] * stride_rk
    w_ptrs = weight_ptr + expert * stride_we + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        k_ok = offs_k < K - start
        a = tl.load(a_ptrs, mask=live[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if DOT_FP32:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        else:
            a = a.to(w.dtype)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
        if FUSE_SILU:
            w_up = tl.load(w_ptrs + N * stride_wn, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            if DOT_FP32:
                w_up = w_up.to(tl.float32)
            acc_up = tl.dot(a, w_up, acc_up, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_rk
        w_ptrs += BLOCK_K * stride_wk

    if FUSE_SILU:
        acc = acc / (1.0 + tl.exp(-acc)) * acc_up
    if WEIGHTED:
        acc = acc * tl.load(routing_ptr + pair, mask=live, other=0.0).to(tl.float32)[:, None]
    out_ptrs = out_ptr + pair[:, None] * stride_om + offs_n[None, :] * stride_on
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=live[:, None] & col_ok[None, :])


def _sum_slots_kernel(slots_ptr, ids_ptr, out_ptr, H, num_experts, TOP_K: tl.constexpr, BLOCK_H: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ok = offs < H
    total = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for slot in tl.static_range(TOP_K):
        routed = tl.load(ids_ptr + token * TOP_K + slot) < num_experts
        total += tl.load(slots_ptr + (token * TOP_K + slot) * H + offs, mask=ok & routed, other=0.0)
    tl.store(out_ptr + token * H + offs, total.to(out_ptr.dtype.element_ty), mask=ok)
