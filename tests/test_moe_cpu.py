"""The MoE path on CPU against transformers, for all seven families: spec, routing, block, whole model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experts.moe import cpu_packed
from experts.moe.block import MoEBlock, install, moe_blocks, set_routing
from experts.moe.reference import experts_grouped, experts_reference
from experts.moe.routing import RoutingOptions, route
from experts.moe.spec import UnsupportedMoEConfig, moe_spec
from tests.moe_models import FAMILIES, tiny_config, tiny_model


def test_spec_reads_each_familys_names() -> None:
    mixtral = moe_spec(tiny_config("mixtral"))
    assert (mixtral.num_experts, mixtral.top_k, mixtral.expert_size, mixtral.renormalize) == (4, 2, 32, True)
    qwen2 = moe_spec(tiny_config("qwen2_moe"))
    assert qwen2.expert_size == 32 and qwen2.shared_size == 48 and qwen2.shared_gate and not qwen2.renormalize
    v2 = moe_spec(tiny_config("deepseek_v2"))
    assert (v2.num_groups, v2.top_groups, v2.group_score, v2.routed_scaling) == (4, 2, "max", 1.5)
    assert not v2.is_moe_layer(0) and v2.is_moe_layer(1) and not v2.renormalize
    v3 = moe_spec(tiny_config("deepseek_v3"))
    assert v3.scoring == "sigmoid" and v3.correction_bias and v3.group_score == "top2_sum" and v3.shared_size == 32
    assert moe_spec(tiny_config("granitemoe")).topk_before_softmax
    with pytest.raises(UnsupportedMoEConfig, match="'llama' is not a supported MoE family"):
        moe_spec({"model_type": "llama"})
    with pytest.raises(UnsupportedMoEConfig, match="deepseek_v2 config has no num_experts_per_tok"):
        moe_spec({"model_type": "deepseek_v2", "n_routed_experts": 8, "hidden_size": 8, "moe_intermediate_size": 4})


@pytest.mark.parametrize("family", FAMILIES)
def test_routing_equals_transformers_router(family: str) -> None:
    model = tiny_model(family)
    spec = moe_spec(model.config)
    _, _, block = moe_blocks(model)[0]
    gate = getattr(block, "gate", None) or block.router
    hidden = torch.randn(33, spec.hidden_size)
    logits, their_weights, their_ids = gate(hidden)
    weights, ids = route(logits, spec, getattr(gate, "e_score_correction_bias", None))
    their_order, our_order = their_ids.sort(dim=-1), ids.sort(dim=-1)
    assert torch.equal(their_order.values, our_order.values)
    their = their_weights.float().gather(1, their_order.indices)
    ours = weights.gather(1, our_order.indices)
    torch.testing.assert_close(ours, their, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("engine", ["grouped", "reference"])
def test_block_equals_transformers_block(family: str, engine: str) -> None:
    model = tiny_model(family)
    for _, _, block in moe_blocks(model):
        hidden = torch.randn(2, 5, model.config.hidden_size)
        with torch.no_grad():
            theirs = block(hidden)
            theirs = theirs[0] if isinstance(theirs, tuple) else theirs
            ours = MoEBlock.from_hf(block, moe_spec(model.config), engine)(hidden)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_reloaded_through_our_path_gives_the_same_logits_and_tokens(family: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    blocks = install(reloaded)
    assert len(blocks) == sum(moe_spec(model.config).is_moe_layer(i) for i in range(model.config.num_hidden_layers))
    prompt = torch.randint(2, 128, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(prompt).logits, model(prompt).logits, atol=1e-5, rtol=1e-5)
        settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(reloaded.generate(prompt, **settings), model.generate(prompt, **settings))


def test_expert_masks_steer_the_choice() -> None:
    spec = moe_spec(tiny_config("qwen3_moe"))  # 8 experts, top-3, renormalised
    logits = torch.randn(50, 8)
    off = route(logits, spec, options=RoutingOptions(disabled=(0, 1)))[1]
    assert not torch.isin(off, torch.tensor([0, 1])).any()
    forced_weights, forced = route(logits, spec, options=RoutingOptions(forced=(5,)))
    assert (forced == 5).any(dim=-1).all() and torch.allclose(forced_weights.sum(-1), torch.ones(50))
    for bad, message in (
        (RoutingOptions(disabled=(9,)), "out of range"),
        (RoutingOptions(disabled=(1,), forced=(1,)), "both disabled and forced"),
        (RoutingOptions(forced=(0, 1, 2, 3)), "do not fit in 3 slots"),
        (RoutingOptions(disabled=tuple(range(6))), "only 2 experts left"),
        (RoutingOptions(top_p=1.5), "top_p"),
    ):
        with pytest.raises(ValueError, match=message):
            route(logits, spec, options=bad)


def test_top_p_and_null_experts_drop_slots_to_the_sentinel() -> None:
    spec = moe_spec(tiny_config("mixtral"))  # 4 experts, top-2
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.05, 0.05], [0.4, 0.35, 0.2, 0.05]]))
    weights, ids = route(logits, spec, options=RoutingOptions(top_p=0.6))
    assert ids.tolist() == [[0, 4], [0, 1]]  # 0.7 covers p = 0.6 alone; 0.4 does not
    assert weights[0].tolist() == pytest.approx([0.7 / 0.9, 0.0])
    wide = route(logits, spec, options=RoutingOptions(top_p=0.9, max_experts=4))[1]
    assert wide.tolist() == [[0, 1, 4, 4], [0, 1, 2, 4]]
    floored = route(logits, spec, options=RoutingOptions(min_weight=0.3))[1]
    assert floored.tolist() == [[0, 4], [0, 1]]  # 0.2/0.9 = 0.22 < 0.3 is dropped; 0.35/0.75 = 0.47 stays
    hidden, w13, w2 = torch.randn(2, 64), torch.randn(4, 64, 64), torch.randn(4, 64, 32)
    weights, ids = route(logits, spec, options=RoutingOptions(top_p=0.6))
    torch.testing.assert_close(
        experts_grouped(hidden, w13, w2, weights, ids), experts_reference(hidden, w13, w2, weights, ids)
    )


def test_installed_blocks_take_per_request_routing(tmp_path: Path) -> None:
    model = tiny_model("mixtral")
    blocks = install(model)
    prompt = torch.randint(2, 128, (1, 6))
    with torch.no_grad():
        default = model(prompt).logits
        set_routing(blocks, RoutingOptions(disabled=(0, 1)))
        steered = model(prompt).logits
        set_routing(blocks, RoutingOptions())
        again = model(prompt).logits
    assert not torch.allclose(default, steered) and torch.equal(default, again)
    with pytest.raises(ValueError, match="out of range"):
        set_routing(blocks, RoutingOptions(forced=(7,)))


def test_edge_shapes_of_the_grouped_path() -> None:
    torch.manual_seed(1)
    hidden, w13, w2 = torch.randn(5, 16), torch.randn(6, 16, 16), torch.randn(6, 16, 8)
    cases = {
        "an expert with no tokens, k = 1": (torch.tensor([[0], [0], [2], [2], [5]]), torch.rand(5, 1)),
        "all tokens on one expert": (torch.full((5, 2), 3), torch.rand(5, 2)),
        "one token": (torch.tensor([[1, 4]]), torch.rand(1, 2)),
    }
    for name, (ids, weights) in cases.items():
        x = hidden[: len(ids)]
        torch.testing.assert_close(
            experts_grouped(x, w13, w2, weights, ids), experts_reference(x, w13, w2, weights, ids), msg=name
        )
    bf16 = experts_grouped(
        hidden.bfloat16(), w13.bfloat16(), w2.bfloat16(), torch.rand(5, 2), torch.randint(0, 6, (5, 2))
    )
    assert bf16.dtype == torch.bfloat16


@pytest.mark.skipif(cpu_packed.available(torch.bfloat16) is not None, reason="no oneDNN bf16 packing in this torch")
def test_packed_cpu_engine_matches_the_reference_in_bf16() -> None:
    torch.manual_seed(2)
    hidden = torch.randn(7, 32).bfloat16()
    w13, w2 = (torch.randn(6, 32, 32) * 0.1).bfloat16(), (torch.randn(6, 32, 16) * 0.1).bfloat16()
    packed = cpu_packed.PackedExperts.pack(w13, w2)
    cases = {
        "an expert with no tokens, k = 1": torch.tensor([[0], [0], [2], [2], [5], [0], [2]]),
        "all tokens on one expert": torch.full((7, 2), 3),
        "dropped slots point at the sentinel": torch.tensor([[1, 6]] * 3 + [[4, 2]] * 4),
        "spread": torch.stack([torch.randperm(6)[:3] for _ in range(7)]),
    }
    for name, ids in cases.items():
        weights = torch.rand(ids.shape).masked_fill(ids == 6, 0.0)
        ours = cpu_packed.experts_packed(hidden, packed, weights, ids)
        expected = experts_reference(hidden, w13, w2, weights, ids)
        assert ours.dtype == torch.bfloat16
        torch.testing.assert_close(ours.float(), expected.float(), atol=2e-2, rtol=2e-2, msg=name)


@pytest.mark.skipif(cpu_packed.available(torch.bfloat16) is not None, reason="no oneDNN bf16 packing in this torch")
def test_packed_engine_runs_a_whole_bf16_model_like_the_grouped_engine() -> None:
    model = tiny_model("qwen3_moe").to(torch.bfloat16)
    prompt = torch.randint(2, 128, (2, 7))
    blocks = install(model, engine="grouped")
    with torch.no_grad():
        grouped = model(prompt).logits.float()
        for block in blocks:
            block.engine = "packed"
        packed = model(prompt).logits.float()
    torch.testing.assert_close(packed, grouped, atol=3e-2, rtol=3e-2)
    with pytest.raises(ValueError, match="runs bf16 weights only"):
        MoEBlock(
            blocks[0].spec, blocks[0].router, torch.nn.Parameter(blocks[0].w13.float()), blocks[0].w2, engine="packed"
        )
