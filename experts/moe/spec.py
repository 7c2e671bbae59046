"""``MoESpec``: one description of a Mixture-of-Experts layer, normalised from Hugging Face configs.

Seven families name the same ideas differently (``num_local_experts`` / ``num_experts`` /
``n_routed_experts``; ``intermediate_size`` is the expert width in Mixtral but the dense
width in Qwen2-MoE...). Everything downstream — routing, weights, kernels — reads only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Scoring = Literal["softmax", "sigmoid"]

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "granitemoe")


class UnsupportedMoEConfig(ValueError):
    """A config this path does not know how to serve; the message names the model type and the field."""


@dataclass(frozen=True)
class MoESpec:
    """The shape and routing rules of one model's MoE layers.

    ``topk_before_softmax``: Granite takes the top-k logits, then a softmax over those k
    (equal to softmax, top-k, renormalise). ``group_score``: how DeepSeek scores an expert
    group for group-limited routing (V2: the group's best expert; V3: its best two, summed).
    ``correction_bias``: V3 adds a learnt per-expert bias to the scores for *choosing*
    experts only; the weights come from the unbiased scores.
    """

    family: str
    num_experts: int
    top_k: int
    hidden_size: int
    expert_size: int
    scoring: Scoring = "softmax"
    topk_before_softmax: bool = False
    renormalize: bool = False
    num_groups: int = 1
    top_groups: int = 1
    group_score: Literal["max", "top2_sum"] = "max"
    correction_bias: bool = False
    routed_scaling: float = 1.0
    shared_size: int = 0  # total width of the shared expert(s); 0 = none
    shared_gate: bool = False  # Qwen2-MoE: shared output times sigmoid(gate(x))
    activation: str = "silu"
    first_dense_layers: int = 0  # DeepSeek's first_k_dense_replace
    sparse_step: int = 1  # Qwen's decoder_sparse_step
    dense_layers: tuple[int, ...] = ()  # Qwen's mlp_only_layers
    router_fp32: bool = False  # DeepSeek computes the router logits in fp32

    def is_moe_layer(self, index: int) -> bool:
        """Whether decoder layer ``index`` has an MoE block (the others have a dense MLP)."""
        if index < self.first_dense_layers or index in self.dense_layers:
            return False
        return (index + 1) % self.sparse_step == 0

    @property
    def grouped(self) -> bool:
        return self.num_groups > 1 and self.top_groups < self.num_groups


def moe_spec(config: Any) -> MoESpec:
    """The ``MoESpec`` of a transformers config (or its ``to_dict()``), for the seven supported families."""
    data = config if isinstance(config, dict) else config.to_dict()
    family = data.get("model_type")
    if family not in FAMILIES:
        raise UnsupportedMoEConfig(
            f"model_type {family!r} is not a supported MoE family; supported: {', '.join(FAMILIES)}"
        )

    def need(*names: str) -> Any:
        for name in names:
            if data.get(name) is not None:
                return data[name]
        raise UnsupportedMoEConfig(f"{family} config has no {' / '.join(names)}")

    common = {
        "family": family,
        "num_experts": int(need("num_local_experts", "num_experts", "n_routed_experts")),
        "top_k": int(need("num_experts_per_tok")),
        "hidden_size": int(need("hidden_size")),
        "activation": str(data.get("hidden_act", "silu")),
    }
    if family in ("mixtral", "granitemoe"):
        spec = MoESpec(
            **common,
            expert_size=int(need("intermediate_size")),
            renormalize=True,
            topk_before_softmax=family == "granitemoe",
        )
    elif family == "olmoe":
        spec = MoESpec(**common, expert_size=int(need("intermediate_size")), renormalize=bool(data["norm_topk_prob"]))
    elif family in ("qwen2_moe", "qwen3_moe"):
        shared = int(data.get("shared_expert_intermediate_size") or 0) if family == "qwen2_moe" else 0
        spec = MoESpec(
            **common,
            expert_size=int(need("moe_intermediate_size")),
            renormalize=bool(data.get("norm_topk_prob", False)),
            shared_size=shared,
            shared_gate=shared > 0,
            sparse_step=int(data.get("decoder_sparse_step") or 1),
            dense_layers=tuple(data.get("mlp_only_layers") or ()),
        )
    else:
        spec = _deepseek(family, data, common, need)
    _check(spec)
    return spec


def _deepseek(family: str, data: dict[str, Any], common: dict[str, Any], need: Any) -> MoESpec:
    v3 = family == "deepseek_v3"
    method = data.get("topk_method", "noaux_tc" if v3 else "greedy")
    if not v3 and method not in ("greedy", "group_limited_greedy"):
        raise UnsupportedMoEConfig(f"deepseek_v2 topk_method {method!r}: only greedy and group_limited_greedy")
    grouped = v3 or method == "group_limited_greedy"
    return MoESpec(
        **common,
        expert_size=int(need("moe_intermediate_size")),
        scoring="sigmoid" if v3 else "softmax",
        renormalize=bool(data.get("norm_topk_prob", False)) if v3 else False,  # V2's router ignores the flag
        num_groups=int(data.get("n_group") or 1) if grouped else 1,
        top_groups=int(data.get("topk_group") or 1) if grouped else 1,
        group_score="top2_sum" if v3 else "max",
        correction_bias=v3,
        routed_scaling=float(data.get("routed_scaling_factor") or 1.0),
        shared_size=int(data.get("n_shared_experts") or 0) * int(need("moe_intermediate_size")),
        first_dense_layers=int(data.get("first_k_dense_replace") or 0),
        router_fp32=True,
    )


def _check(spec: MoESpec) -> None:
    if not 1 <= spec.top_k <= spec.num_experts:
        raise UnsupportedMoEConfig(f"{spec.family}: top-k {spec.top_k} must be between 1 and {spec.num_experts}")
    if spec.num_groups > 1:
        if spec.num_experts % spec.num_groups:
            raise UnsupportedMoEConfig(f"{spec.family}: {spec.num_experts} experts do not split into {spec.num_groups}")
        if spec.group_score == "top2_sum" and spec.num_experts // spec.num_groups < 2:
            raise UnsupportedMoEConfig(f"{spec.family}: group scoring by the top two needs >= 2 experts per group")
