"""Our checkpoint loader: every family and naming scheme lands in the canonical layout and runs like transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from experts.moe.block import moe_blocks
from experts.moe.loader import load_moe_model
from experts.moe.spec import moe_spec
from experts.moe.weights import CheckpointError, expert_weights
from tests.moe_models import FAMILIES, tiny_config, tiny_model


def _same_outputs(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    prompt = torch.randint(2, 128, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(prompt).logits, theirs(prompt).logits, atol=1e-5, rtol=1e-5)
        settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
        assert torch.equal(ours.generate(prompt, **settings), theirs.generate(prompt, **settings))


def _save_fused(model: torch.nn.Module, folder: Path, transpose: bool = False) -> None:
    """The in-memory (new-style, fused ``gate_up_proj``) names, as a single safetensors file."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        if transpose and name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            tensor = tensor.transpose(1, 2)
        state[name] = tensor.contiguous().clone()
    model.config.save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"))


@pytest.mark.parametrize("family", FAMILIES)
def test_per_expert_checkpoint_in_shards_loads_and_runs_like_transformers(family: str, tmp_path: Path) -> None:
    model = tiny_model(family)
    model.save_pretrained(tmp_path, max_shard_size="100KB")  # old per-expert names, several shards + index
    assert (tmp_path / "model.safetensors.index.json").is_file()
    loaded = load_moe_model(tmp_path, dtype=torch.float32)
    spec = moe_spec(model.config)
    assert len(loaded.blocks) == sum(spec.is_moe_layer(i) for i in range(model.config.num_hidden_layers))
    _same_outputs(loaded.model, model)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "deepseek_v3", "granitemoe"])
def test_fused_names_load_like_per_expert_names(family: str, tmp_path: Path) -> None:
    model = tiny_model(family, seed=3)
    _save_fused(model, tmp_path)
    assert any(".experts.gate_up_proj" in name for name in load_file(str(tmp_path / "model.safetensors")))
    _same_outputs(load_moe_model(tmp_path, dtype=torch.float32).model, model)


def test_a_stored_transpose_of_the_fused_stacks_is_turned_back(tmp_path: Path) -> None:
    import transformers as t

    config = t.MixtralConfig(
        vocab_size=128, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = t.AutoModelForCausalLM.from_config(config).eval()
    _save_fused(model, tmp_path, transpose=True)
    _same_outputs(load_moe_model(tmp_path, dtype=torch.float32).model, model)


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "deepseek_v2", "granitemoe"])
def test_expert_weights_are_the_canonical_stacks(family: str, tmp_path: Path) -> None:
    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    stacks = expert_weights(tmp_path, moe_spec(model.config), dtype=torch.float32)
    blocks = {index: getattr(layer, "mlp", None) for index, layer in enumerate(model.model.layers)}
    expected = {i: b for i, b in blocks.items() if b is not None and hasattr(b, "experts")}
    expected = expected or {i: layer.block_sparse_moe for i, layer in enumerate(model.model.layers)}
    assert sorted(stacks) == sorted(expected) and len(stacks) == len(moe_blocks(model))
    for layer, block in expected.items():
        assert torch.equal(stacks[layer].w13, block.experts.gate_up_proj)
        assert torch.equal(stacks[layer].w2, block.experts.down_proj)


def test_bf16_load_casts_every_tensor(tmp_path: Path) -> None:
    model = tiny_model("qwen3_moe")
    model.save_pretrained(tmp_path)
    loaded = load_moe_model(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert loaded.blocks[0].w13.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(loaded.model(torch.randint(2, 128, (1, 5))).logits.float()).all()


def test_a_missing_expert_is_named(tmp_path: Path) -> None:
    model = tiny_model("mixtral")
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["model.layers.1.block_sparse_moe.experts.2.w3.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"layer 1 has no up projection for experts \[2\]"):
        load_moe_model(tmp_path, dtype=torch.float32)


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    model = tiny_model("qwen3_moe")
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["model.layers.0.mlp.experts.1.down_proj.weight"] = torch.zeros(64, 31)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"experts\.1\.down_proj\.weight has shape \(64, 31\), expected \(64, 32\)"
    ):
        load_moe_model(tmp_path, dtype=torch.float32)


def test_unknown_and_extra_tensors(tmp_path: Path) -> None:
    model = tiny_model("deepseek_v3")
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["model.layers.2.mlp.gate.weight"] = torch.zeros(8, 64)  # a multi-token-prediction layer past the last
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_moe_model(tmp_path, dtype=torch.float32)
    assert loaded.skipped == ["model.layers.2.mlp.gate.weight"]
    state["model.layers.1.mlp.experts.extra_scale"] = torch.zeros(8)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="experts.extra_scale is in an MoE block but is not a known MoE weight"):
        load_moe_model(tmp_path, dtype=torch.float32)


def test_folders_without_a_checkpoint_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        load_moe_model(tmp_path)
    tiny_config("olmoe").save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors files"):
        load_moe_model(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="needs a 'weight_map' object"):
        load_moe_model(tmp_path)
