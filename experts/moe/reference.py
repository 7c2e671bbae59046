"""The FFN experts' computation on CPU: an fp32 per-expert reference, and a fast grouped-GEMM path.

Both take the canonical weights — ``w13`` (E, 2I, H) = [gate; up], ``w2`` (E, H, I) — and
the router's (T, k) weights and expert ids (the sentinel id E marks a dropped slot), and
return sum_k weight * down(act(gate(x)) * up(x)) per token.

The reference loops over experts in fp32: slow, obviously right, the yardstick for every
other path. The fast path sorts the (token, slot) pairs by expert once and runs each
projection as one ``torch._grouped_mm`` over all experts (it runs on CPU in torch >= 2.9),
so its cost does not grow with the number of experts a batch touches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


def activation(name: str):  # noqa: ANN201 - a torch function
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation {name!r} is not supported; known: {', '.join(ACTIVATIONS)}") from None


def experts_reference(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
    act: str = "silu",
) -> torch.Tensor:
    """fp32, one expert at a time; the result is in ``hidden``'s dtype."""
    x = hidden.float()
    out = torch.zeros_like(x)
    size = w2.shape[-1]
    fn = activation(act)
    for expert in range(w13.shape[0]):
        token, slot = torch.nonzero(ids == expert, as_tuple=True)
        if token.numel() == 0:
            continue
        gate_up = x[token] @ w13[expert].float().t()
        y = (fn(gate_up[:, :size]) * gate_up[:, size:]) @ w2[expert].float().t()
        out.index_add_(0, token, y * weights[token, slot].float().unsqueeze(-1))
    return out.to(hidden.dtype)


def experts_grouped(
    hidden: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
    act: str = "silu",
) -> torch.Tensor:
    """Sort (token, slot) pairs by expert, two grouped GEMMs, weight, scatter-add; in ``hidden``'s dtype."""
    tokens, slots = ids.shape
    experts, size = w13.shape[0], w2.shape[-1]
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    order = order[flat[order] < experts]  # sentinel slots (dropped by top-p or a weight floor) do no work
    token_of = order // slots
    ends = torch.bincount(flat[order], minlength=experts).cumsum(0).to(torch.int32)
    x = hidden[token_of].to(w13.dtype)
    gate_up = torch._grouped_mm(x, w13.transpose(1, 2), offs=ends)
    y = torch._grouped_mm(activation(act)(gate_up[:, :size]) * gate_up[:, size:], w2.transpose(1, 2), offs=ends)
    y = y.float() * weights.reshape(-1)[order].float().unsqueeze(-1)
    out = torch.zeros(tokens, hidden.shape[-1], dtype=torch.float32, device=hidden.device)
    out.index_add_(0, token_of, y)
    return out.to(hidden.dtype)
