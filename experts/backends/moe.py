"""``moe`` backend: a Hugging Face Mixture-of-Experts checkpoint served on our MoE layer path.

Everything but the MoE blocks is the ``local`` backend: the same batched decoding loop,
streaming, stop strings and context checks. The model is built by ``experts.moe.loader``
(our safetensors loader, our ``MoEBlock``\\ s) and its expert computation runs on the
engine the pool file names in ``options.engine``:

- ``auto`` (default): the Triton kernels on a CUDA device; on CPU the oneDNN-packed path for
  bf16 weights where the CPU can pack them (AVX-512 or AVX-NE-CONVERT), the grouped-GEMM path otherwise;
- ``triton`` / ``packed`` / ``grouped`` / ``reference`` (fp32 per-expert loop, for checking).

Requests may steer the model's routing (``moe_routing``: top-p, weight floor, experts
switched off or forced on). The routing controls apply to a whole forward pass, so a batch
is split into groups with equal controls, run one group after another.
"""

from __future__ import annotations

from typing import Any

from experts.backends.local import LocalBackend, TextSinkFn
from experts.config import ExpertSpec
from experts.errors import BackendError, ErrorCode
from experts.moe.options import NO_OPTIONS, RoutingOptions
from experts.types import Completion, GenerationRequest

ENGINES = ("auto", "triton", "packed", "grouped", "reference")


class MoEBackend(LocalBackend):
    """A local MoE model with our routing and expert kernels; batched like ``local``."""

    def __init__(self, spec: ExpertSpec) -> None:
        super().__init__(spec)
        self._blocks: list[Any] = []
        self._engine = str(spec.options.get("engine", "auto"))
        if self._engine not in ENGINES:
            raise BackendError(f"expert {spec.name!r}: options.engine {self._engine!r} is not one of {ENGINES}")
        self._load_seconds = 0.0

    def _load_model(self, device: Any, dtype: Any) -> tuple[Any, Any, Any]:
        from pathlib import Path

        from transformers import AutoTokenizer

        from experts.moe.loader import load_moe_model
        from experts.moe.spec import UnsupportedMoEConfig
        from experts.moe.weights import CheckpointError

        directory = Path(self.spec.model).expanduser()
        if not directory.is_dir():
            raise BackendError(
                f"expert {self.spec.name!r}: moe model {self.spec.model!r} is not a directory; give a local Hugging "
                "Face checkpoint (config.json, tokenizer, *.safetensors); nothing is downloaded at run time"
            )
        engine = self._resolve_engine(device, dtype)
        try:
            loaded = load_moe_model(directory, dtype=dtype, device=device, engine=engine)
        except (CheckpointError, UnsupportedMoEConfig) as error:
            raise BackendError(f"expert {self.spec.name!r}: {error}") from None
        self._blocks, self._engine, self._load_seconds = loaded.blocks, engine, loaded.seconds
        return loaded.model, AutoTokenizer.from_pretrained(directory), directory

    def _resolve_engine(self, device: Any, dtype: Any) -> str:
        from experts.moe import cpu_packed

        if self._engine == "auto":
            if device.type == "cuda":
                return "triton" if _triton_available() else "grouped"
            return "packed" if cpu_packed.available(dtype) is None else "grouped"
        if self._engine == "packed" and (reason := cpu_packed.available(dtype)) is not None:
            raise BackendError(f"expert {self.spec.name!r}: {reason}")
        if self._engine == "triton" and (device.type != "cuda" or not _triton_available()):
            raise BackendError(
                f"expert {self.spec.name!r}: options.engine triton needs a CUDA device and the triton package "
                "(pip install moesaic[gpu]); use engine auto or grouped on CPU"
            )
        return self._engine

    async def unload(self) -> None:
        self._blocks = []  # they hold the expert weights too
        await super().unload()

    def describe(self) -> dict[str, object]:
        facts = {**super().describe(), "backend": "moe", "engine": self._engine}
        if self._blocks:
            spec = self._blocks[0].spec
            facts.update(
                family=spec.family,
                experts=spec.num_experts,
                top_k=spec.top_k,
                moe_layers=len(self._blocks),
                load_s=round(self._load_seconds, 3),
            )
        return facts

    def _generate_blocking(self, batch: list[GenerationRequest], sink: TextSinkFn | None) -> list[Completion]:
        from experts.moe.block import set_routing

        results: list[Completion | None] = [None] * len(batch)
        groups: dict[RoutingOptions, list[int]] = {}
        for position, request in enumerate(batch):
            options = request.moe_routing or NO_OPTIONS
            try:
                options.validate(self._blocks[0].spec)
            except ValueError as error:
                results[position] = Completion.failed(
                    f"moe_routing does not fit {self.spec.name!r}: {error}",
                    self.spec.model,
                    code=ErrorCode.INVALID_MOE_ROUTING,
                )
                continue
            groups.setdefault(options, []).append(position)
        try:
            for options, positions in groups.items():
                set_routing(self._blocks, options)
                group_sink = (lambda row, text, positions=positions: sink(positions[row], text)) if sink else None
                done = super()._generate_blocking([batch[p] for p in positions], group_sink)
                for position, completion in zip(positions, done):
                    results[position] = completion
        finally:
            set_routing(self._blocks, NO_OPTIONS)
        return [result for result in results if result is not None]


def _triton_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None
