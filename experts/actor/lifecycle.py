"""One expert's model going in and out of memory inside its actor: load, park, unload, timed and counted.

The residency manager (driver side, ``experts/runtime/dispatch/_residency.py``) decides *when* an expert loads
or leaves; this object decides *how* for one backend, and keeps the counts that ``/healthz``
and ``/metrics`` report. Parking means "weights to host RAM, back to the GPU quickly"; it only
exists for models on a GPU. On a CPU the weights already live in host RAM, so parking would
free nothing: there a park is an unload (the weights go back to disk). Backends without
``park``/``unload`` (hosted APIs, echo) only have their state and counters tracked.

``weights_gb`` measures what a loaded expert occupies from its weights on disk (the
safetensors headers give every tensor's shape, so the figure is for the dtype the model will
load in, not the dtype it is stored in), unless the pool file declares ``residency.memory_gb``.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from experts.backends.base import Backend
from experts.config import ExpertSpec

Residency = Literal["disk", "parked", "resident"]

_DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}
_SAFETENSORS_FLOATS = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass
class LifecycleCounters:
    """How often and for how long this expert loaded, parked, unloaded and generated."""

    loads: int = 0
    load_seconds_total: float = 0.0
    parks: int = 0
    park_seconds_total: float = 0.0
    unloads: int = 0
    unload_seconds_total: float = 0.0
    generate_seconds_total: float = 0.0  # summed over batches (overlapping batches count twice)


class ModelLifecycle:
    """Moves one backend between disk, host RAM (parked) and resident; never raises for a no-op."""

    def __init__(self, backend: Backend, spec: ExpertSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.state: Residency = "disk"
        self.counters = LifecycleCounters()

    async def load(self) -> dict[str, Any]:
        """Make the model resident (from disk, or back from host RAM); a resident model stays as it is."""
        if self.state == "resident":
            return self.report(0.0)
        started = time.perf_counter()
        await self.backend.load()
        elapsed = time.perf_counter() - started
        self.state = "resident"
        self.counters.loads += 1
        self.counters.load_seconds_total += elapsed
        return self.report(elapsed)

    async def park(self) -> dict[str, Any]:
        """Move the weights to host RAM; where that frees nothing (CPU) or is not possible, unload instead."""
        if self.state != "resident":
            return self.report(0.0)
        started = time.perf_counter()
        if not await self.backend.park():
            return await self.unload()
        elapsed = time.perf_counter() - started
        self.state = "parked"
        self.counters.parks += 1
        self.counters.park_seconds_total += elapsed
        return self.report(elapsed)

    async def unload(self) -> dict[str, Any]:
        """Free the model's memory; the next load reads the weights from disk again."""
        if self.state == "disk":
            return self.report(0.0)
        started = time.perf_counter()
        await self.backend.unload()
        elapsed = time.perf_counter() - started
        self.state = "disk"
        self.counters.unloads += 1
        self.counters.unload_seconds_total += elapsed
        return self.report(elapsed)

    def add_generate_time(self, seconds: float) -> None:
        self.counters.generate_seconds_total += seconds

    def facts(self) -> dict[str, Any]:
        """The state and every counter, for health reports."""
        return {"residency": self.state, **asdict(self.counters)}

    def report(self, seconds: float) -> dict[str, Any]:
        """What one load/park/unload call returns: how long it took, then the facts."""
        return {"seconds": round(seconds, 6), **self.facts()}


def weights_gb(spec: ExpertSpec) -> float:
    """What the loaded expert occupies: ``residency.memory_gb`` if declared, else measured from its weights."""
    if spec.residency.memory_gb is not None:
        return spec.residency.memory_gb
    if spec.backend not in ("local", "moe"):
        return 0.0
    dtype = str(spec.options.get("dtype", "bfloat16" if spec.on_gpu else "float32"))
    return loaded_bytes(_model_directory(spec), _DTYPE_BYTES.get(dtype)) / 1024**3


def _model_directory(spec: ExpertSpec) -> Path:
    if spec.backend == "moe":
        return Path(spec.model).expanduser()
    from experts.engine.embedded import prepare_model, resolve_model

    return prepare_model(resolve_model(spec.model))  # GGUF: dequantised once (and cached) for the measure


def loaded_bytes(directory: Path, float_bytes: int | None) -> int:
    """Bytes of the checkpoint in ``directory`` once loaded with floats of ``float_bytes`` (None: as stored).

    Reads only the safetensors headers; other formats count their file sizes.
    """
    total = 0
    shards = sorted(directory.glob("*.safetensors"))
    for shard in shards:
        with open(shard, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            stored = tensor["data_offsets"][1] - tensor["data_offsets"][0]
            width = _SAFETENSORS_FLOATS.get(tensor["dtype"])
            if width is None or float_bytes is None:
                total += stored
            else:
                total += stored // width * float_bytes
    if not shards:
        total = sum(path.stat().st_size for pattern in ("*.bin", "*.pt", "*.gguf") for path in directory.glob(pattern))
    return total
