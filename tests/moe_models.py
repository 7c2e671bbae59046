"""Tiny random configs and models of the seven MoE families, shared by the MoE tests."""

from __future__ import annotations

from typing import Any

import torch

from experts.moe.block import moe_blocks

BASE = dict(
    vocab_size=128,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)
MLA = dict(kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, num_key_value_heads=4)


def tiny_config(family: str) -> Any:
    import transformers as t

    if family == "mixtral":
        return t.MixtralConfig(**BASE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2)
    if family == "qwen2_moe":
        return t.Qwen2MoeConfig(
            **BASE,
            intermediate_size=96,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=48,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=False,
        )
    if family == "qwen3_moe":
        return t.Qwen3MoeConfig(
            **BASE,
            intermediate_size=96,
            moe_intermediate_size=32,
            num_experts=8,
            num_experts_per_tok=3,
            norm_topk_prob=True,
        )
    if family == "olmoe":
        return t.OlmoeConfig(
            **BASE, intermediate_size=32, num_experts=4, num_experts_per_tok=2, pad_token_id=0, eos_token_id=1
        )
    if family == "deepseek_v2":
        return t.DeepseekV2Config(
            **{**BASE, **MLA},
            intermediate_size=96,
            moe_intermediate_size=32,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_shared_experts=1,
            first_k_dense_replace=1,
            q_lora_rank=None,
            topk_method="group_limited_greedy",
            n_group=4,
            topk_group=2,
            routed_scaling_factor=1.5,
        )
    if family == "deepseek_v3":
        return t.DeepseekV3Config(
            **{**BASE, **MLA},
            intermediate_size=96,
            moe_intermediate_size=32,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_shared_experts=1,
            first_k_dense_replace=1,
            q_lora_rank=32,
            n_group=2,
            topk_group=1,
        )
    return t.GraniteMoeConfig(**BASE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2)


FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "granitemoe"]


def tiny_model(family: str, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family)).eval()
    for _, _, block in moe_blocks(model):  # random bias, so V3's selection-only bias is exercised
        bias = getattr(getattr(block, "gate", None), "e_score_correction_bias", None)
        if bias is not None:
            bias.data.normal_(0, 0.05)
    return model
