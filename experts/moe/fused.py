"""``experts_triton``: the routed FFN experts on the GPU, in four steps (five Triton launches) and no host sync.

Same inputs, output and meaning as ``experts_grouped`` / ``experts_reference``. The steps:

1. ``align``: the (token, slot) pairs grouped by expert, padded to whole row blocks;
2. ``grouped_gemm`` with w13, fused ``silu(gate) * up`` -> intermediate (T * k, I), weights' dtype;
3. ``grouped_gemm`` with w2, times each pair's routing weight -> slots (T * k, H), fp32;
4. ``sum_slots``: each token's k rows added (dropped slots skipped), in ``hidden``'s dtype.

Every buffer is sized from shapes alone and the GEMM grids cover the worst-case alignment,
so nothing waits for the GPU and the whole call can be captured in a CUDA graph. Only SiLU
is fused (all seven supported families use it); another activation raises ``ValueError``
rather than silently running a slower path — serve such a model with engine ``grouped``.
"""

from __future__ import annotations

import functools

import torch

from experts.moe.align import align
from experts.moe.configs import KernelConfig, device_name, get_config
from experts.moe.kernel import check_device, grouped_gemm, sum_slots

FUSED_ACTIVATIONS = ("silu",)


def experts_triton(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
    act: str = "silu",
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """sum_k weight * down(silu(gate(x)) * up(x)) per token, (T, H) in ``hidden``'s dtype.

    ``config`` fixes the tiles (tests use small ones); by default they come from the tuned
    table for this shape and GPU, or the heuristic (``experts.moe.configs``).
    """
    if act not in FUSED_ACTIVATIONS:
        raise ValueError(
            f"experts_triton fuses only {', '.join(FUSED_ACTIVATIONS)} (silu(gate) * up); activation {act!r} "
            "needs engine 'grouped' or 'reference'"
        )
    tokens, top_k = _check_shapes(hidden, w13, w2, weights, ids)
    check_device(hidden)
    experts, size = w13.shape[0], w2.shape[-1]
    if tokens == 0:
        return hidden.new_zeros(hidden.shape)
    if config is None:
        device = device_name(hidden.device) if hidden.device.type == "cuda" else "cpu"
        config = _config_for(experts, size, w13.dtype, tokens, top_k, device)
    aligned = align(ids, experts, config.block_m)
    intermediate = torch.empty(tokens * top_k, size, dtype=w13.dtype, device=hidden.device)
    grouped_gemm(hidden, w13, intermediate, aligned, config, row_div=top_k, fuse_silu=True)
    slots = torch.empty(tokens * top_k, hidden.shape[1], dtype=torch.float32, device=hidden.device)
    routing = weights.reshape(-1).float().contiguous()
    grouped_gemm(intermediate, w2, slots, aligned, config, row_div=1, routing=routing)
    return sum_slots(slots, ids, experts, hidden.dtype)


@functools.lru_cache(maxsize=8192)
def _config_for(experts: int, size: int, dtype: torch.dtype, tokens: int, top_k: int, device: str) -> KernelConfig:
    """``get_config``, remembered: every layer of every step asks, and the answer needs a file look-up.

    So a table written by the tuner while a model is served applies after a restart.
    """
    return get_config(experts, size, dtype, tokens, top_k, device)


def _check_shapes(
    hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor
) -> tuple[int, int]:
    """(T, k), after checking the shapes agree (a kernel would read out of bounds rather than fail)."""
    if hidden.dim() != 2 or w13.dim() != 3 or w2.dim() != 3:
        raise ValueError("experts_triton wants hidden (T, H), w13 (E, 2I, H), w2 (E, H, I)")
    experts, twice, width = w13.shape
    size = w2.shape[-1]
    if width != hidden.shape[1] or tuple(w2.shape) != (experts, width, size) or twice != 2 * size:
        raise ValueError(
            f"shapes disagree: hidden {tuple(hidden.shape)}, w13 {tuple(w13.shape)}, w2 {tuple(w2.shape)}; "
            "expected w13 (E, 2I, H) and w2 (E, H, I)"
        )
    if ids.dim() != 2 or weights.shape != ids.shape or ids.shape[0] != hidden.shape[0]:
        raise ValueError(f"weights {tuple(weights.shape)} and ids {tuple(ids.shape)} must both be (T, k)")
    devices = {tensor.device for tensor in (hidden, w13, w2, weights, ids)}
    if len(devices) > 1:
        raise ValueError(f"hidden, w13, w2, weights and ids must be on one device; got {sorted(map(str, devices))}")
    if w13.dtype != w2.dtype:
        raise ValueError(f"w13 is {w13.dtype} but w2 is {w2.dtype}; the kernels want one weight dtype")
    return ids.shape[0], ids.shape[1]
