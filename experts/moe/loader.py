"""Load a whole Hugging Face MoE checkpoint onto our MoE path.

transformers builds the model skeleton (attention, norms, KV cache, generation stay theirs)
with weight initialisation switched off, ``install`` swaps every sparse block for an
``MoEBlock``, and the checkpoint's tensors are copied in place, one at a time, through the
mapping of ``experts.moe.weights``: per-expert, fused and Granite names all land in the
canonical ``w13`` / ``w2`` stacks. Nothing is downloaded: ``path`` is a local directory.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from experts.moe.block import MoEBlock, install
from experts.moe.spec import MoESpec, moe_spec
from experts.moe.weights import CheckpointError, placements

_LAYER = re.compile(r"layers\.(\d+)\.")


@dataclass
class LoadedMoEModel:
    """A causal LM with ``MoEBlock``\\ s installed and the checkpoint's weights in them."""

    model: nn.Module
    blocks: list[MoEBlock]
    spec: MoESpec
    seconds: float
    skipped: list[str] = field(default_factory=list)  # checkpoint tensors the model has no place for (MTP layers...)


def load_moe_model(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    engine: str = "grouped",
) -> LoadedMoEModel:
    """Build the model of ``path``'s config on ``device`` and fill it from its safetensors files."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    started = time.perf_counter()
    root = Path(path)
    if not (root / "config.json").is_file():
        raise CheckpointError(f"{root}: no config.json; point the moe backend at a Hugging Face model directory")
    config = AutoConfig.from_pretrained(root)
    spec = moe_spec(config)
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    blocks = install(model, engine)
    prefixes = _block_prefixes(model)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    filled: set[str] = set()
    skipped: list[str] = []
    with torch.no_grad():
        for place in placements(root, spec, prefixes):
            target = tensors.get(place.target)
            if target is None:
                if _ignorable(place.target, config.num_hidden_layers):
                    skipped.append(place.source)
                    continue
                raise CheckpointError(f"{root}: tensor {place.source} has no place in the {spec.family} model")
            view = target[place.index]
            if view.shape != place.tensor.shape:
                shapes = f"{tuple(place.tensor.shape)}, the model expects {tuple(view.shape)}"
                raise CheckpointError(f"{root}: {place.source} has shape {shapes}")
            view.copy_(place.tensor)
            filled.add(place.target)
    _check_filled(model, tensors, filled, root)
    model.eval()
    return LoadedMoEModel(model, blocks, spec, time.perf_counter() - started, skipped)


def _block_prefixes(model: nn.Module) -> dict[int, str]:
    """Layer index -> state-key prefix of its MoE block (``model.layers.3.mlp``)."""
    prefixes = {}
    for index, layer in enumerate(model.model.layers):
        for attribute in ("mlp", "block_sparse_moe"):
            if isinstance(getattr(layer, attribute, None), MoEBlock):
                prefixes[index] = f"model.layers.{index}.{attribute}"
    return prefixes


def _ignorable(target: str, num_layers: int) -> bool:
    """Tensors inference does not use: extra (multi-token prediction) layers, rope caches."""
    layer = _LAYER.search(target)
    return (layer is not None and int(layer.group(1)) >= num_layers) or target.endswith("rotary_emb.inv_freq")


def _check_filled(model: nn.Module, tensors: dict[str, torch.Tensor], filled: set[str], root: Path) -> None:
    # every persistent tensor, plus DeepSeek-V3's score-correction bias (a non-persistent buffer of MoEBlock)
    required = set(model.state_dict(keep_vars=True)) | {name for name in tensors if name.endswith(".correction_bias")}
    tied = {name for name in required if _is_tied(model, name)}
    missing = sorted(name for name in required - filled - tied if name in tensors)
    if missing:
        raise CheckpointError(
            f"{root}: the checkpoint has no tensor for {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )


def _is_tied(model: nn.Module, name: str) -> bool:
    """The output head shares the input embedding's storage when the config ties them."""
    if name != "lm_head.weight" or not getattr(model.config, "tie_word_embeddings", False):
        return False
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight
