"""The fast CPU path: the FFN experts' weights pre-packed once for oneDNN, one packed GEMM per touched expert.

On CPU a bf16 matmul through ``torch.mm`` / ``torch._grouped_mm`` re-lays-out the weight
for oneDNN on every call, so a decode step reads each touched expert's weights twice and
writes them once. Packing every expert's ``w13`` and ``w2`` once, at the first forward, into
oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, the same op torch's
inductor uses for CPU linear layers) removes that: measured 1.3-2.4x faster than the
grouped path on this project's CPUs (``bench/moe_layer.py``). The price is a second copy of
the expert weights in memory while the packed engine is in use.

Only bf16 on a CPU with oneDNN (``torch.backends.mkldnn``); ``available`` says why not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from experts.moe.reference import activation


def available(dtype: torch.dtype) -> str | None:
    """None when the packed path can run weights of ``dtype`` here; otherwise the reason it cannot."""
    if dtype != torch.bfloat16:
        return f"the packed CPU engine runs bf16 weights only, not {dtype}; use engine grouped"
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        return "this torch build has no oneDNN (mkldnn) linear packing; use engine grouped"
    if not _cpu_packs_bf16():
        return (
            "this CPU cannot pack bf16 weights for oneDNN (it needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT; "
            f"torch sees {torch.backends.cpu.get_cpu_capability()}); use engine grouped"
        )
    return None


@functools.cache
def _cpu_packs_bf16() -> bool:
    """Whether oneDNN packs bf16 linear weights on this CPU: asked once, by packing a tiny weight (the CPU flags it
    needs vary by oneDNN version; the packing itself is the test)."""
    try:
        with torch.no_grad():
            torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 1)
    except RuntimeError:
        return False
    return True


@dataclass
class PackedExperts:
    """Each expert's [gate; up] and down projections in oneDNN's layout (opaque tensors)."""

    w13: list[torch.Tensor]
    w2: list[torch.Tensor]
    expert_size: int
    hidden_size: int

    @classmethod
    def pack(cls, w13: torch.Tensor, w2: torch.Tensor) -> PackedExperts:
        """Pack canonical stacks ``w13`` (E, 2I, H) and ``w2`` (E, H, I); raises if ``available`` says no."""
        reason = available(w13.dtype)
        if reason is not None:
            raise ValueError(reason)
        if w13.device.type != "cpu":
            raise ValueError(f"the packed engine runs on CPU; the weights are on {w13.device}")
        reorder = torch.ops.mkldnn._reorder_linear_weight
        with torch.no_grad():
            return cls(
                [reorder(w13[e].detach().contiguous(), 1) for e in range(w13.shape[0])],
                [reorder(w2[e].detach().contiguous(), 1) for e in range(w2.shape[0])],
                expert_size=w2.shape[-1],
                hidden_size=w2.shape[1],
            )


def experts_packed(
    hidden: torch.Tensor, packed: PackedExperts, weights: torch.Tensor, ids: torch.Tensor, act: str = "silu"
) -> torch.Tensor:
    """sum_k weight * down(act(gate(x)) * up(x)) per token, like ``experts_grouped``; in ``hidden``'s dtype."""
    linear = torch.ops.mkldnn._linear_pointwise
    tokens, slots = ids.shape
    experts, size = len(packed.w13), packed.expert_size
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    order = order[flat[order] < experts]  # sentinel slots do no work
    token_of = order // slots
    counts = torch.bincount(flat[order], minlength=experts).tolist()  # one host sync; CPU only anyway
    x = hidden[token_of].to(torch.bfloat16)
    fn = activation(act)
    pieces, start = [], 0
    for expert, count in enumerate(counts):
        if count == 0:
            continue
        rows = x[start : start + count]
        gate_up = linear(rows, packed.w13[expert], None, "none", [], "")
        pieces.append(linear(fn(gate_up[:, :size]) * gate_up[:, size:], packed.w2[expert], None, "none", [], ""))
        start += count
    out = torch.zeros(tokens, packed.hidden_size, dtype=torch.float32, device=hidden.device)
    if pieces:
        y = torch.cat(pieces).float() * weights.reshape(-1)[order].float().unsqueeze(-1)
        out.index_add_(0, token_of, y)
    return out.to(hidden.dtype)
