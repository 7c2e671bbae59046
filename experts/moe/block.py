"""``MoEBlock``: a whole sparse MoE block (gate, routed FFN experts, shared FFN experts) on our path.

It is built from a transformers block of any supported family (``MoEBlock.from_hf``),
sharing that block's parameters (no copy), and ``install`` swaps it in for every MoE block
of a loaded model, so attention, KV cache and generation stay transformers' while the MoE
layers run our routing (with per-request ``RoutingOptions``) and our expert path.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from experts.moe import cpu_packed
from experts.moe.reference import experts_grouped, experts_reference
from experts.moe.routing import NO_OPTIONS, RoutingOptions, route
from experts.moe.spec import MoESpec, moe_spec


class MoEBlock(nn.Module):
    """Router + routed experts (+ shared experts) with canonical weights; input (..., H), output (..., H)."""

    def __init__(
        self,
        spec: MoESpec,
        router: nn.Parameter,
        w13: nn.Parameter,
        w2: nn.Parameter,
        correction_bias: torch.Tensor | None = None,
        shared: nn.Module | None = None,
        shared_gate: nn.Module | None = None,
        engine: str = "grouped",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.router = router
        self.w13 = w13
        self.w2 = w2
        self.register_buffer("correction_bias", correction_bias, persistent=False)  # follows .to(device)
        self.shared = shared
        self.shared_gate = shared_gate
        if engine == "packed":
            reason = cpu_packed.available(w13.dtype)
            if reason is not None:
                raise ValueError(reason)
        else:
            _engine(engine)  # fail at build time, not on the first token
        # "packed" (oneDNN-packed CPU GEMMs), "grouped" (torch grouped GEMMs), "triton" (our kernels, CUDA),
        # "reference" (fp32 loop)
        self.engine = engine
        self._packed: cpu_packed.PackedExperts | None = None  # packed at the first forward, after weights load
        self.options: RoutingOptions = NO_OPTIONS  # set per request by the backend

    @classmethod
    def from_hf(cls, block: nn.Module, spec: MoESpec, engine: str = "grouped") -> MoEBlock:
        """Wrap a transformers sparse block of ``spec.family``, sharing its parameters."""
        gate = getattr(block, "gate", None) or getattr(block, "router")
        experts = block.experts
        return cls(
            spec,
            gate.weight,
            experts.gate_up_proj,
            experts.down_proj,
            correction_bias=getattr(gate, "e_score_correction_bias", None),
            shared=getattr(block, "shared_expert", None) or getattr(block, "shared_experts", None),
            shared_gate=getattr(block, "shared_expert_gate", None),
            engine=engine,
        )

    def invalidate_packed(self) -> None:
        """Drop the packed copy of the weights (the ``packed`` engine re-packs at the next forward)."""
        self._packed = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        if self.spec.router_fp32:
            logits = F.linear(x.float(), self.router.float())
        else:
            logits = F.linear(x, self.router)
        weights, ids = route(logits, self.spec, self.correction_bias, self.options)
        if self.engine == "packed":
            if self._packed is None:
                self._packed = cpu_packed.PackedExperts.pack(self.w13, self.w2)
            out = cpu_packed.experts_packed(x, self._packed, weights, ids, self.spec.activation)
        else:
            out = _engine(self.engine)(x, self.w13, self.w2, weights, ids, self.spec.activation)
        if self.shared is not None:
            shared = self.shared(x)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(x)) * shared
            out = out + shared
        return out.reshape(shape)


def _engine(name: str):  # noqa: ANN202 - one of the experts_* functions
    """The expert computation an engine name stands for (Triton is imported only when asked for)."""
    if name == "grouped":
        return experts_grouped
    if name == "reference":
        return experts_reference
    if name == "triton":
        from experts.moe.fused import experts_triton

        return experts_triton
    raise ValueError(f"MoE engine {name!r} is not one of packed, grouped, reference, triton")


def moe_blocks(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, block) for every sparse MoE block of a transformers decoder model."""
    found = []
    for layer in model.model.layers:
        for attribute in ("mlp", "block_sparse_moe"):
            block = getattr(layer, attribute, None)
            if block is not None and hasattr(block, "experts"):
                found.append((layer, attribute, block))
    return found


def install(model: nn.Module, engine: str = "grouped") -> list[MoEBlock]:
    """Replace every MoE block of ``model`` by an ``MoEBlock`` on the same weights; returns them in layer order."""
    spec = moe_spec(model.config)
    blocks = []
    for parent, attribute, block in moe_blocks(model):
        ours = MoEBlock.from_hf(block, spec, engine)
        setattr(parent, attribute, ours)
        blocks.append(ours)
    if not blocks:
        raise ValueError(f"{spec.family} model has no MoE block (check first_k_dense_replace / mlp_only_layers)")
    return blocks


def set_routing(blocks: list[MoEBlock], options: RoutingOptions) -> None:
    """Apply per-request routing controls to every installed block."""
    if options is not NO_OPTIONS:
        options.validate(blocks[0].spec)
    for block in blocks:
        block.options = options


def describe(block: MoEBlock) -> dict[str, Any]:
    spec = block.spec
    return {"family": spec.family, "experts": spec.num_experts, "top_k": spec.top_k, "engine": block.engine}
