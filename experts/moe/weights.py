"""Checkpoint weights in one canonical layout: ``w13`` (E, 2I, H) = [gate; up], ``w2`` (E, H, I).

The seven families store the same experts under three naming schemes:

- per expert, old style: ``experts.<e>.w1 / w3 / w2`` (Mixtral) or ``experts.<e>.gate_proj / up_proj /
  down_proj`` (Qwen, OLMoE, DeepSeek), one (I, H) or (H, I) matrix per expert;
- fused, new style (transformers 5 ``save`` of the in-memory model, newer uploads):
  ``experts.gate_up_proj`` (E, 2I, H) and ``experts.down_proj`` (E, H, I);
- Granite's ``input_linear`` (E, 2I, H) and ``output_linear`` (E, H, I).

``placements`` reads the safetensors files tensor by tensor (never the whole checkpoint at
once) and says where each tensor goes: a key of the model with ``MoEBlock``\\ s installed,
and the slice of it to fill. One mapping feeds both the model loader (``experts.moe.loader``)
and ``expert_weights``, which returns the canonical stacks per layer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from experts.moe.spec import MoESpec

# "model.layers.3.mlp.<rest>" / "model.layers.3.block_sparse_moe.<rest>"
_BLOCK_KEY = re.compile(r"^(?P<layer_prefix>.*?layers\.(?P<layer>\d+))\.(?:mlp|block_sparse_moe)\.(?P<rest>.+)$")
_PER_EXPERT = re.compile(r"^experts\.(?P<expert>\d+)\.(?P<part>w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
_PART = {"w1": "gate", "gate_proj": "gate", "w3": "up", "up_proj": "up", "w2": "down", "down_proj": "down"}
_FUSED_13 = ("experts.gate_up_proj", "experts.gate_up_proj.weight", "input_linear.weight")
_FUSED_2 = ("experts.down_proj", "experts.down_proj.weight", "output_linear.weight")
_ROUTER = ("gate.weight", "router.layer.weight", "router.weight")
_BIAS = ("gate.e_score_correction_bias", "e_score_correction_bias")
_SHARED = re.compile(r"^(?:shared_expert|shared_experts)\.(?P<rest>.+)$")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the tensor."""


@dataclass(frozen=True)
class Placement:
    """Copy ``tensor`` into ``target`` (a model state key) at ``index`` (``()`` = the whole tensor)."""

    target: str
    tensor: torch.Tensor
    index: tuple = ()
    source: str = ""  # the checkpoint key, for error messages


@dataclass
class ExpertWeights:
    """One layer's routed experts in the canonical layout."""

    w13: torch.Tensor  # (E, 2I, H): rows [0, I) gate, [I, 2I) up
    w2: torch.Tensor  # (E, H, I)


@dataclass
class _Coverage:
    """Which expert slices a checkpoint has filled, so a missing one is an error and not random memory."""

    filled: dict[tuple[int, str], set[int]] = field(default_factory=dict)

    def add(self, layer: int, part: str, experts: range | list[int]) -> None:
        self.filled.setdefault((layer, part), set()).update(experts)

    def check(self, spec: MoESpec, layers: list[int], path: Path) -> None:
        for layer in layers:
            for part in ("gate", "up", "down"):
                missing = set(range(spec.num_experts)) - self.filled.get((layer, part), set())
                if missing:
                    raise CheckpointError(
                        f"{path}: layer {layer} has no {part} projection for experts {sorted(missing)[:8]}"
                        f"{' ...' if len(missing) > 8 else ''}; is this checkpoint complete?"
                    )


def checkpoint_files(path: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (sharded checkpoints via ``model.safetensors.index.json``)."""
    from safetensors import safe_open

    root = Path(path)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{index}: not a safetensors index (needs a 'weight_map' object): {err}") from None
        return {name: root / file for name, file in weight_map.items()}
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{root}: no *.safetensors files; convert the checkpoint to safetensors first")
    names: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            names.update({name: file for name in handle.keys()})
    return names


def iter_tensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of a checkpoint, one file open at a time."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name, file in checkpoint_files(path).items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        if not file.is_file():
            raise CheckpointError(f"{file}: named in the checkpoint index but missing")
        with safe_open(str(file), framework="pt") as handle:
            for name in names:
                yield name, handle.get_tensor(name)


def placements(path: str | Path, spec: MoESpec, block_names: dict[int, str]) -> Iterator[Placement]:
    """Where each checkpoint tensor goes in a model whose MoE blocks are ``MoEBlock``\\ s.

    ``block_names``: layer index -> the model's state-key prefix of that layer's MoE block
    (``model.layers.3.mlp``). Keys of other layers and modules pass through unchanged,
    except Mixtral's old ``block_sparse_moe`` prefix, which becomes the model's block name.
    Raises ``CheckpointError`` when a layer's experts are incomplete.
    """
    coverage = _Coverage()
    root = Path(path)
    for name, tensor in iter_tensors(root):
        match = _BLOCK_KEY.match(name)
        layer = int(match["layer"]) if match else -1
        if match is None or layer not in block_names:
            yield Placement(_dense_name(name, match, block_names), tensor, source=name)
            continue
        yield from _block_placements(name, match["rest"], tensor, layer, block_names[layer], spec, coverage, root)
    coverage.check(spec, sorted(block_names), root)


def _dense_name(name: str, match: re.Match | None, block_names: dict[int, str]) -> str:
    if match is not None and ".block_sparse_moe." in name:  # Mixtral's old module name for a dense layer's MLP
        return name.replace(".block_sparse_moe.", ".mlp.")
    return name


def _block_placements(
    name: str,
    rest: str,
    tensor: torch.Tensor,
    layer: int,
    block: str,
    spec: MoESpec,
    coverage: _Coverage,
    root: Path,
) -> Iterator[Placement]:
    size, experts = spec.expert_size, spec.num_experts
    per_expert = _PER_EXPERT.match(rest)
    if per_expert:
        expert, part = int(per_expert["expert"]), _PART[per_expert["part"]]
        if expert >= experts:
            raise CheckpointError(f"{root}: {name} names expert {expert}, but the config has {experts}")
        coverage.add(layer, part, [expert])
        if part == "down":
            yield Placement(f"{block}.w2", _oriented(tensor, (spec.hidden_size, size), name, root), (expert,), name)
        else:
            rows = slice(0, size) if part == "gate" else slice(size, 2 * size)
            yield Placement(
                f"{block}.w13", _oriented(tensor, (size, spec.hidden_size), name, root), (expert, rows), name
            )
    elif rest in _FUSED_13:
        coverage.add(layer, "gate", range(experts))
        coverage.add(layer, "up", range(experts))
        yield Placement(f"{block}.w13", _oriented(tensor, (experts, 2 * size, spec.hidden_size), name, root), (), name)
    elif rest in _FUSED_2:
        coverage.add(layer, "down", range(experts))
        yield Placement(f"{block}.w2", _oriented(tensor, (experts, spec.hidden_size, size), name, root), (), name)
    elif rest in _ROUTER:
        yield Placement(f"{block}.router", tensor, (), name)
    elif rest in _BIAS:
        yield Placement(f"{block}.correction_bias", tensor, (), name)
    elif shared := _SHARED.match(rest):
        yield Placement(f"{block}.shared.{shared['rest']}", tensor, (), name)
    elif rest == "shared_expert_gate.weight":
        yield Placement(f"{block}.shared_gate.weight", tensor, (), name)
    else:
        raise CheckpointError(f"{root}: tensor {name} is in an MoE block but is not a known MoE weight")


def _oriented(tensor: torch.Tensor, shape: tuple[int, ...], name: str, root: Path) -> torch.Tensor:
    """The tensor in the expected shape; a stored transpose of the last two dims is turned back.

    When the two dims are equal the orientation cannot be told from the shape; the stored
    one is taken as canonical (every family we know stores that).
    """
    if tuple(tensor.shape) == shape:
        return tensor
    if tuple(tensor.shape) == (*shape[:-2], shape[-1], shape[-2]):
        return tensor.transpose(-1, -2)
    raise CheckpointError(f"{root}: {name} has shape {tuple(tensor.shape)}, expected {shape} from the config")


def expert_weights(
    path: str | Path, spec: MoESpec, dtype: torch.dtype | None = None, num_layers: int | None = None
) -> dict[int, ExpertWeights]:
    """The routed experts of every MoE layer of a checkpoint, stacked canonically (layer index -> weights).

    Reads only the expert tensors' files as it goes; ``num_layers`` defaults to the highest
    layer index found. ``dtype`` defaults to the checkpoint's.
    """
    layers = _moe_layers(path, spec, num_layers)
    names = {layer: f"layers.{layer}.moe" for layer in layers}
    stacks: dict[int, ExpertWeights] = {}
    for place in placements(path, spec, names):
        if not place.target.endswith((".w13", ".w2")):
            continue
        layer = int(place.target.split(".")[1])
        held = stacks.get(layer)
        if held is None:
            kind = dtype or place.tensor.dtype
            held = stacks[layer] = ExpertWeights(
                torch.empty(spec.num_experts, 2 * spec.expert_size, spec.hidden_size, dtype=kind),
                torch.empty(spec.num_experts, spec.hidden_size, spec.expert_size, dtype=kind),
            )
        target = held.w13 if place.target.endswith(".w13") else held.w2
        target[place.index].copy_(place.tensor)
    return stacks


def _moe_layers(path: str | Path, spec: MoESpec, num_layers: int | None) -> list[int]:
    if num_layers is None:
        found = [int(m["layer"]) for name in checkpoint_files(path) if (m := _BLOCK_KEY.match(name))]
        num_layers = max(found, default=-1) + 1
    return [layer for layer in range(num_layers) if spec.is_moe_layer(layer)]
