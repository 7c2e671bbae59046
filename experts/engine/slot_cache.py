"""A KV cache of fixed slots, allocated once, that transformers' forward writes into.

Why not ``DynamicCache``: it grows by concatenation every step (a reallocation and a copy
of the whole cache per layer per token) and removes rows by copying the survivors. Here
every layer owns two tensors of shape (slots, kv_heads, max_len, head_dim) for the life of
the engine; a request owns one slot and writes position ``length`` of it each step.

The engine keeps the running requests in slots ``0..n-1`` (when one finishes, the last one
moves into its slot: one copy per finished request, not per step), so a decode step reads a
view ``keys[:n, :, :kv_len]`` with no gather, and attends only up to the longest running
sequence (``kv_len``), not ``max_len``.

transformers calls ``update(key_states, value_states, layer_idx)`` from every attention
layer and nothing else; what the call means (which slots, which positions) is set by the
engine before each forward with ``plan_prefill`` or ``plan_decode``.

Memory is reserved with ``torch.empty`` and zeroed lazily, in chunks, up to the longest
length used so far: positions past a row's length are masked, but they must hold finite
numbers (a masked NaN still poisons ``softmax @ V``), and zeroing only what is used keeps
an idle engine's resident memory small.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

_ZERO_CHUNK = 64  # positions zeroed at a time as the longest sequence grows


class _SlotLayer(CacheLayerMixin):
    """One layer's preallocated K and V; the writing is done by ``SlotCache.update``."""

    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Never needed: the tensors exist from the start."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("slot layers are written through SlotCache.update")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        raise RuntimeError("the continuous engine passes its own 4D attention mask")

    def get_seq_length(self) -> int:
        return 0  # per slot; transformers never needs it because position ids are always given

    def get_max_length(self) -> int:
        return int(self.keys.shape[2])


@dataclass
class _Plan:
    """What the next forward writes: a prefill into fresh slots, or one token per running slot."""

    decode: bool
    first_slot: int
    rows: int
    lengths: list[int]  # prefill: prompt lengths (left-padded to ``width``)
    width: int = 0
    positions: torch.Tensor | None = None  # decode: write position per row
    row_index: torch.Tensor | None = None  # decode: 0..rows-1
    kv_len: int = 0


class SlotCache(Cache):
    """``slots`` sequences of up to ``max_len`` tokens for every attention layer of a model."""

    def __init__(
        self,
        layers: int,
        slots: int,
        kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (slots, kv_heads, max_len, head_dim)
        super().__init__(
            layers=[
                _SlotLayer(
                    torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device)
                )
                for _ in range(layers)
            ]
        )
        self.slots, self.max_len = slots, max_len
        self._zeroed = 0  # positions [0, _zeroed) of every slot hold finite numbers
        self._plan: _Plan | None = None
        self._arange = torch.arange(slots, device=device)

    def data_ptrs(self) -> list[int]:
        """Addresses of every K and V tensor: they never change (tests check it)."""
        return [tensor.data_ptr() for layer in self.layers for tensor in (layer.keys, layer.values)]

    def plan_prefill(self, first_slot: int, lengths: list[int], width: int) -> None:
        """The next forward is a left-padded prefill of ``len(lengths)`` prompts into slots from ``first_slot``."""
        self._ensure_zeroed(width)
        self._plan = _Plan(False, first_slot, len(lengths), lengths, width=width)

    def plan_decode(self, positions: torch.Tensor, kv_len: int) -> None:
        """The next forward feeds one token to each of slots ``0..n-1``, written at ``positions`` (n,)."""
        self._ensure_zeroed(kv_len)
        rows = int(positions.shape[0])
        self._plan = _Plan(True, 0, rows, [], positions=positions, row_index=self._arange[:rows], kv_len=kv_len)

    def move(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``source`` into slot ``target``."""
        for layer in self.layers:
            layer.keys[target, :, :length] = layer.keys[source, :, :length]
            layer.values[target, :, :length] = layer.values[source, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self._plan
        if plan is None:
            raise RuntimeError("SlotCache.update outside a planned forward: call plan_prefill or plan_decode first")
        layer = self.layers[layer_idx]
        if plan.decode:
            layer.keys[plan.row_index, :, plan.positions] = key_states[:, :, 0]
            layer.values[plan.row_index, :, plan.positions] = value_states[:, :, 0]
            return layer.keys[: plan.rows, :, : plan.kv_len], layer.values[: plan.rows, :, : plan.kv_len]
        # Prefill: fresh slots attend only to their own prompt, which is exactly what was passed in.
        for row, length in enumerate(plan.lengths):
            slot, pad = plan.first_slot + row, plan.width - length
            layer.keys[slot, :, :length] = key_states[row, :, pad:]
            layer.values[slot, :, :length] = value_states[row, :, pad:]
        return key_states, value_states

    def _ensure_zeroed(self, length: int) -> None:
        if length <= self._zeroed:
            return
        if length > self.max_len:
            raise ValueError(f"{length} positions do not fit a slot of max_len {self.max_len}")
        end = min(self.max_len, -(-length // _ZERO_CHUNK) * _ZERO_CHUNK)
        for layer in self.layers:
            layer.keys[:, :, self._zeroed : end].zero_()
            layer.values[:, :, self._zeroed : end].zero_()
        self._zeroed = end
