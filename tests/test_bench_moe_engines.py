"""bench/moe_engines.py: our ``moe`` backend against vLLM's CPU build on the ``moe`` tests' checkpoint.

The smallest run of the script (one round, 1 and 2 requests at once, 4 tokens) must give figures for both engines
and the ratio of their rates; a worker that cannot start is reported by its root cause, not raised. The full run
needs the engine environment (``make engine-env``): without it that test skips, unless ``MOESAIC_REQUIRE_VLLM=1``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import BENCH, load_bench

from experts.config._engine_choice import find_engine_environment
from tests.engine_env import engine_environment

moe_engines = load_bench("moe_engines")
ENVIRONMENT = find_engine_environment()

VLLM_DEATH = """\
(Worker pid=1) ERROR [multiproc_executor.py:1063] Traceback (most recent call last):
(Worker pid=1) ERROR [multiproc_executor.py:1063] RuntimeError: Unsupported CPU attention configuration: head_dim=16 \
isa=2 kv_cache_idx=0
(MainProcess pid=2) ERROR [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.
"""


def test_the_root_cause_is_vllms_first_error_record_not_its_clean_up_noise() -> None:
    noise = "Exception ignored in: <function AsyncLLM.__del__>\nTypeError: 'NoneType' object is not callable\n"
    expected = "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2 kv_cache_idx=0"
    assert moe_engines.root_cause(noise + VLLM_DEATH) == expected
    assert moe_engines.root_cause(noise) == "TypeError: 'NoneType' object is not callable"
    assert moe_engines.root_cause("no error here") == "no error here"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="needs a Python without vLLM")
def test_a_worker_that_cannot_start_is_kept_with_its_error(tmp_path: Path) -> None:
    """The vllm worker under a Python without vLLM: it dies importing it, and says so."""
    engine = moe_engines.Engine("vllm", sys.executable, str(tmp_path), "float32")
    assert engine.error == "ModuleNotFoundError: No module named 'vllm'" and engine.ready == {"load_s": None}


@pytest.mark.model
def test_both_engines_side_by_side_smallest_run() -> None:
    engine_environment(module_level=False)
    arguments = ["--rounds", "1", "--max-tokens", "4", "--concurrency", "1,2", "--json"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "moe_engines.py"), *arguments], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["vllm_error"] is None and figures["checkpoint"]["head_dim"] == 32
    assert [row["concurrency"] for row in figures["rows"]] == [1, 2]
    for row in figures["rows"]:
        ours, theirs = row["moe"]["tokens_per_s"], row["vllm"]["tokens_per_s"]
        assert ours > 0 and theirs > 0
        assert row["vllm_over_moe"] == pytest.approx(theirs / ours, abs=0.01)
    assert set(figures["rss_mb"]) == {"moe", "vllm"} and all(figures["load_s"].values())
    assert "vLLM/ours" in done.stdout
