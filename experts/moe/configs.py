"""Tile sizes of the MoE grouped GEMM: tuned tables per GPU and shape, or a heuristic when none matches.

The best tiles depend on the GPU, the shape (experts E, expert width N = I, dtype) and the
batch: decode batches give each expert a handful of rows, so a small ``block_m`` wastes
less padding; prefill gives it hundreds, and larger tiles reuse each weight tile more.
``bench/tune_moe.py`` times candidates on a GPU and writes one JSON file per (E, N, dtype,
device) to ``experts/moe/configs/``, named like
``E=8,N=14336,dtype=bfloat16,device=NVIDIA_H100_80GB_HBM3.json`` and mapping a token
count to a config; a lookup takes the entry of the nearest token count. No file is
shipped untimed, so with an empty folder every lookup uses ``default_config``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

CONFIG_DIR = Path(__file__).with_name("configs")

_KEYS = {
    "BLOCK_M": "block_m",
    "BLOCK_N": "block_n",
    "BLOCK_K": "block_k",
    "GROUP_M": "group_m",
    "num_warps": "num_warps",
    "num_stages": "num_stages",
}


class ConfigFileError(ValueError):
    """A tuned config file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class KernelConfig:
    """One launch of the grouped GEMM: tile sizes (powers of two, >= 16 for ``tl.dot``) and launch options."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two >= 16; got {value}")
        for name in ("group_m", "num_warps", "num_stages"):
            if getattr(self, name) < 1:
                raise ValueError(f"KernelConfig.{name} must be >= 1; got {getattr(self, name)}")

    def to_json(self) -> dict[str, int]:
        """The file form: ``BLOCK_M``... upper case like the kernel's constants."""
        values = asdict(self)
        return {key: values[field] for key, field in _KEYS.items()}

    @classmethod
    def from_json(cls, data: Any) -> KernelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a config must be an object with {', '.join(_KEYS)}; got {data!r}")
        unknown = sorted(set(data) - set(_KEYS))
        missing = sorted(set(_KEYS) - set(data))
        if unknown or missing:
            raise ValueError(f"config keys must be {', '.join(_KEYS)}; unknown {unknown}, missing {missing}")
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in data.values()):
            raise ValueError(f"config values must be integers; got {data!r}")
        return cls(**{field: data[key] for key, field in _KEYS.items()})


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def device_name(device: torch.device | int | None = None) -> str:
    """The CUDA device's name as file names spell it (spaces to underscores); "cpu" without CUDA."""
    if not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name(device).replace(" ", "_")


def config_file(experts: int, size: int, dtype: torch.dtype, device: str, folder: Path | None = None) -> Path:
    """Where the table of (E experts, expert width N = ``size``, ``dtype``, ``device``) lives."""
    return (folder or CONFIG_DIR) / f"E={experts},N={size},dtype={dtype_name(dtype)},device={device}.json"


_TABLES: dict[tuple[str, int], dict[int, KernelConfig]] = {}


def load_table(path: Path) -> dict[int, KernelConfig]:
    """token count -> config from one JSON file; cached until the file changes."""
    key = (str(path), path.stat().st_mtime_ns)
    if key in _TABLES:
        return _TABLES[key]
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not data:
            raise ValueError("the file must be a non-empty object mapping token counts to configs")
        table = {int(tokens): KernelConfig.from_json(config) for tokens, config in data.items()}
    except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        raise ConfigFileError(
            f"MoE kernel config file {path} is not usable: {error}. Fix it, delete it to use the default "
            "heuristic, or rewrite it with bench/tune_moe.py"
        ) from None
    _TABLES[key] = table
    return table


def save_table(path: Path, table: dict[int, KernelConfig]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {str(tokens): table[tokens].to_json() for tokens in sorted(table)}
    path.write_text(json.dumps(data, indent=2) + "\n")


def nearest(table: dict[int, KernelConfig], tokens: int) -> KernelConfig:
    """The entry of the token count closest to ``tokens`` (the smaller one on a tie)."""
    return table[min(table, key=lambda known: (abs(known - tokens), known))]


def default_config(tokens: int, experts: int, top_k: int, dtype: torch.dtype) -> KernelConfig:
    """Untuned tiles from the rows each expert gets on average (tokens * k / E).

    Few rows (decode): ``block_m`` 16 so little of each block is padding, and deep K steps
    since the work is reading weights. Many rows (prefill): larger tiles so each weight tile
    loaded serves more rows. fp32 halves ``block_k`` to keep the staged tiles in shared memory.
    """
    rows = tokens * top_k / max(experts, 1)
    if rows <= 16:
        config = KernelConfig(block_m=16, block_n=64, block_k=128, group_m=1, num_warps=4, num_stages=3)
    elif rows <= 128:
        config = KernelConfig(block_m=32 if rows <= 48 else 64, block_n=64, block_k=64, group_m=8, num_warps=4)
    else:
        config = KernelConfig(block_m=64, block_n=128, block_k=64, group_m=8, num_warps=8, num_stages=3)
    if dtype == torch.float32:
        config = KernelConfig(**{**asdict(config), "block_k": max(16, config.block_k // 2), "num_stages": 2})
    return config


def get_config(
    experts: int,
    size: int,
    dtype: torch.dtype,
    tokens: int,
    top_k: int,
    device: str | None = None,
    folder: Path | None = None,
) -> KernelConfig:
    """The tuned config of the nearest token count if a table for this shape and GPU exists, else the default."""
    path = config_file(experts, size, dtype, device or device_name(), folder)
    if path.is_file():
        return nearest(load_table(path), tokens)
    return default_config(tokens, experts, top_k, dtype)
