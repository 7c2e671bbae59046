"""Align the (token, slot) pairs by FFN expert, so a GEMM block of ``block_m`` rows never mixes two experts.

The router gives each token k slots, each an expert id (the sentinel id E marks a dropped
slot). A pair is named by its flat index ``t * k + s``. The grouped GEMM wants the pairs
sorted by expert, each expert's run padded to a multiple of ``block_m`` so every block of
rows has one expert, plus that expert per block:

- ``sorted_pair_ids``: the pairs of expert 0 (in ascending pair order), padding, the pairs
  of expert 1, ... The pad value is ``T * k``, one past the last pair, so a kernel masks it.
- ``block_expert``: the expert of each ``block_m`` block; -1 past the end.
- ``num_padded``: the used length, as a one-element device tensor.

Sentinel pairs appear nowhere: they do no work. Both outputs are allocated at their worst
size, ``T * k + E * (block_m - 1)``, and ``num_padded`` stays on the device, so aligning
never waits for the GPU (no host sync): the GEMM's grid covers the worst case and its blocks
past ``num_padded`` return at once.

Two implementations with identical outputs: a Triton one (two small launches, one program
per expert; it is deterministic because each expert's program places its own pairs in
order) and a pure-torch one, the yardstick in tests and the fallback without Triton.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from experts.moe.kernel import jitted

try:
    import triton.language as tl
except ImportError:  # the torch version works without Triton
    tl = None

PAIR_CHUNK = 256  # pairs a program scans per step


@dataclass(frozen=True)
class Alignment:
    """The pairs of a batch grouped by expert; see the module docstring for each field."""

    sorted_pair_ids: torch.Tensor  # (max_padded,) int32
    block_expert: torch.Tensor  # (max_padded // block_m,) int32
    num_padded: torch.Tensor  # (1,) int32, on the device
    block_m: int
    num_pairs: int  # T * k, also the pad value

    @property
    def max_blocks(self) -> int:
        return self.block_expert.numel()


def max_padded(num_pairs: int, num_experts: int, block_m: int) -> int:
    """The longest aligned length any routing can need: every expert rounds up by at most block_m - 1."""
    return num_pairs + num_experts * (block_m - 1)


def _buffers(ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if ids.dim() != 2:
        raise ValueError(f"expert ids must be (tokens, k); got shape {tuple(ids.shape)}")
    if block_m < 1 or num_experts < 1:
        raise ValueError(f"block_m and num_experts must be positive; got {block_m} and {num_experts}")
    pairs = ids.numel()
    size = max_padded(pairs, num_experts, block_m)
    size = -(-size // block_m) * block_m  # whole blocks
    sorted_ids = torch.full((size,), pairs, dtype=torch.int32, device=ids.device)
    block_expert = torch.full((size // block_m,), -1, dtype=torch.int32, device=ids.device)
    num_padded = torch.zeros(1, dtype=torch.int32, device=ids.device)
    return sorted_ids, block_expert, num_padded


def align_torch(ids: torch.Tensor, num_experts: int, block_m: int) -> Alignment:
    """The alignment in plain torch ops (any device, no host sync): the reference for ``align``."""
    sorted_ids, block_expert, num_padded = _buffers(ids, num_experts, block_m)
    flat = ids.reshape(-1).long()
    pairs = flat.numel()
    # counts per expert without bincount (which reads the max on the host); slot E collects the sentinels
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=ids.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    counts = counts[:num_experts]
    padded = (counts + block_m - 1) // block_m * block_m
    padded_ends = padded.cumsum(0)
    padded_starts = padded_ends - padded
    starts = counts.cumsum(0) - counts
    order = torch.argsort(flat, stable=True)  # ascending pair index within each expert, sentinels last
    expert = flat[order]
    routed = expert < num_experts
    safe = expert.clamp(max=num_experts - 1)
    rank = torch.arange(pairs, device=ids.device) - starts[safe]
    target = torch.where(routed, padded_starts[safe] + rank, sorted_ids.numel())  # sentinels to a spare slot
    spare = torch.cat([sorted_ids, sorted_ids.new_zeros(1)])
    spare.scatter_(0, target, order.to(torch.int32))
    sorted_ids.copy_(spare[:-1])
    total = padded_ends[-1:]
    num_padded.copy_(total)
    first_row = torch.arange(block_expert.numel(), device=ids.device) * block_m
    owner = torch.searchsorted(padded_ends, first_row, right=True)
    block_expert.copy_(torch.where(first_row < total, owner, -1))
    return Alignment(sorted_ids, block_expert, num_padded, block_m, pairs)


def align(ids: torch.Tensor, num_experts: int, block_m: int) -> Alignment:
    """The alignment by two Triton launches (count, then place), one program per expert; same result as torch."""
    sorted_ids, block_expert, num_padded = _buffers(ids, num_experts, block_m)
    flat = ids.reshape(-1).contiguous()
    pairs = flat.numel()
    if pairs == 0:
        return Alignment(sorted_ids, block_expert, num_padded, block_m, pairs)
    counts = torch.empty(num_experts, dtype=torch.int32, device=ids.device)
    jitted(_count_kernel)[(num_experts,)](flat, counts, pairs, CHUNK=PAIR_CHUNK)
    jitted(_place_kernel)[(num_experts,)](
        flat,
        counts,
        sorted_ids,
        block_expert,
        num_padded,
        pairs,
        num_experts,
        BLOCK_M=block_m,
        CHUNK=PAIR_CHUNK,
        EXPERTS=_next_power_of_2(num_experts),
    )
    return Alignment(sorted_ids, block_expert, num_padded, block_m, pairs)


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _count_kernel(ids_ptr, counts_ptr, num_pairs, CHUNK: tl.constexpr):
    """counts[e] = how many pairs chose expert e; program e scans every pair."""
    expert = tl.program_id(0)
    seen = tl.zeros((CHUNK,), dtype=tl.int32)
    for start in range(0, num_pairs, CHUNK):
        offs = start + tl.arange(0, CHUNK)
        ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=-1)
        seen += (ids == expert).to(tl.int32)
    tl.store(counts_ptr + expert, tl.sum(seen, axis=0))


def _place_kernel(
    ids_ptr,
    counts_ptr,
    sorted_ptr,
    block_expert_ptr,
    num_padded_ptr,
    num_pairs,
    num_experts,
    BLOCK_M: tl.constexpr,
    CHUNK: tl.constexpr,
    EXPERTS: tl.constexpr,
):
    """Program e: find its padded segment from all counts, mark its blocks, write its pairs there in order."""
    expert = tl.program_id(0)
    every = tl.arange(0, EXPERTS)
    counts = tl.load(counts_ptr + every, mask=every < num_experts, other=0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    start = tl.sum(tl.where(every < expert, padded, 0), axis=0)
    mine = tl.sum(tl.where(every == expert, padded, 0), axis=0)
    if expert == 0:
        tl.store(num_padded_ptr, tl.sum(padded, axis=0))
    blocks = mine // BLOCK_M
    for first in range(0, blocks, CHUNK):
        offs = first + tl.arange(0, CHUNK)
        tl.store(block_expert_ptr + start // BLOCK_M + offs, tl.zeros((CHUNK,), tl.int32) + expert, mask=offs < blocks)
    written = start
    for first in range(0, num_pairs, CHUNK):
        offs = first + tl.arange(0, CHUNK)
        ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=-1)
        hit = (ids == expert).to(tl.int32)
        rank = tl.cumsum(hit, axis=0) - hit
        tl.store(sorted_ptr + written + rank, offs, mask=hit == 1)
        written += tl.sum(hit, axis=0)
