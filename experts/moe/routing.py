"""Routing (the layer's gate): which FFN experts each token goes to, and with what weight. Pure torch, CPU and GPU.

One function covers the seven families' rules (``MoESpec``) and adds inference-time controls
(``RoutingOptions``): top-p (keep the best experts until their probability reaches p), null
experts (drop slots whose weight is below a floor) and expert masks (switch experts off, or
force them on, to steer a model). A dropped slot points at the sentinel expert index
``num_experts`` with weight 0, so every later stage keeps fixed (T, k) shapes and skips it.
"""

from __future__ import annotations

import torch

from experts.moe.options import NO_OPTIONS, RoutingOptions
from experts.moe.spec import MoESpec

__all__ = ["NO_OPTIONS", "RoutingOptions", "route"]


def route(
    logits: torch.Tensor,
    spec: MoESpec,
    correction_bias: torch.Tensor | None = None,
    options: RoutingOptions = NO_OPTIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (T, k) fp32, expert ids (T, k) int64) from router logits (T, E), best expert first."""
    if options is not NO_OPTIONS:
        options.validate(spec)
    slots = options.max_experts or spec.top_k
    logits = logits.float()
    if options.disabled:
        logits = logits.clone()
        logits[:, list(options.disabled)] = float("-inf")
    scores = torch.sigmoid(logits) if spec.scoring == "sigmoid" else torch.softmax(logits, dim=-1)
    choosing = scores if correction_bias is None else scores + correction_bias.float()
    if spec.grouped:
        choosing = _limit_to_top_groups(choosing, spec)
    if options.forced:
        choosing = choosing.clone()
        choosing[:, list(options.forced)] = float("inf")
    ids = torch.topk(choosing, slots, dim=-1).indices
    weights = scores.gather(1, ids)
    if spec.renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    weights = weights * spec.routed_scaling
    if options.top_p is not None or options.min_weight is not None:
        weights, ids = _drop_slots(weights, ids, scores, spec.num_experts, options)
    return weights, ids


def _limit_to_top_groups(choosing: torch.Tensor, spec: MoESpec) -> torch.Tensor:
    """Keep only the experts of each token's best ``top_groups`` groups (DeepSeek's group-limited routing)."""
    tokens = choosing.shape[0]
    grouped = choosing.view(tokens, spec.num_groups, -1)
    if spec.group_score == "top2_sum":
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
    else:
        group_scores = grouped.max(dim=-1).values
    keep_groups = torch.topk(group_scores, spec.top_groups, dim=-1).indices
    keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep_groups, True)
    keep = keep.unsqueeze(-1).expand_as(grouped).reshape(tokens, -1)
    # V2 zeroes the other experts, V3 sets them to -inf; the choice differs only when fewer than k are positive
    fill = float("-inf") if spec.group_score == "top2_sum" else 0.0
    return choosing.masked_fill(~keep, fill)


def _drop_slots(
    weights: torch.Tensor, ids: torch.Tensor, scores: torch.Tensor, sentinel: int, options: RoutingOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-p and null experts: point dropped slots at the sentinel with weight 0 (the first slot always stays).

    Top-p reads each slot's share of the token's whole score distribution (all experts),
    so p = 0.5 keeps experts until half of the router's belief is covered.
    """
    keep = torch.ones_like(weights, dtype=torch.bool)
    if options.top_p is not None:
        mass = scores.gather(1, ids) / scores.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        before = mass.cumsum(dim=-1) - mass  # probability of the better slots alone
        keep &= before < options.top_p
    if options.min_weight is not None:
        keep &= weights >= options.min_weight
    if options.forced:
        keep |= torch.isin(ids, torch.tensor(options.forced, device=ids.device))
    keep[:, 0] = True
    return weights.masked_fill(~keep, 0.0), ids.masked_fill(~keep, sentinel)
