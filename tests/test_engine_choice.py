"""Which engine a local expert runs on (``experts/config/_engine_choice.py``) and how experts are grouped onto shared
vLLM engines (``experts/runtime/_engines.py``): pure decisions, no Ray, no vLLM."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from experts.config._engine_choice import (
    Engine,
    EngineEnvironment,
    EngineUnavailable,
    choose_engine,
    cpu_flags,
    find_engine_environment,
)
from experts.config._pool_spec import ExpertSpec, load_pool, parse_pool
from experts.runtime._engines import SharedEngines, engine_actor_options

THERE = EngineEnvironment("/opt/engine/bin/python", "test")
NOWHERE = EngineEnvironment(None, "none here")
AVX2 = frozenset({"avx", "avx2", "fma"})
BF16 = AVX2 | {"avx512f", "avx512_bf16"}


def local(engine: str | None = None, **resources: object) -> ExpertSpec:
    options = {"engine": engine} if engine else {}
    return ExpertSpec(name="e", backend="local", model="embedded:x", options=options, resources=resources)


def test_the_engine_environment_is_found_by_variable_then_beside_this_venv_then_here(tmp_path: Path) -> None:
    python = tmp_path / "engine" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    named = find_engine_environment({"MOESAIC_VLLM_PYTHON": str(python)}, prefix="/nowhere")
    assert named.python == str(python) and "MOESAIC_VLLM_PYTHON" in named.source
    missing = find_engine_environment({"MOESAIC_VLLM_PYTHON": "/no/such/python"}, prefix="/nowhere")
    assert missing.python is None and "does not exist" in missing.source
    beside_prefix = str(tmp_path / "venv")
    (tmp_path / "venv-vllm" / "bin").mkdir(parents=True)
    (tmp_path / "venv-vllm" / "bin" / "python").write_text("")
    beside = find_engine_environment({}, prefix=beside_prefix)
    assert beside.python == str(tmp_path / "venv-vllm" / "bin" / "python")
    here = find_engine_environment({}, prefix="/nowhere", here_has_vllm=True)
    assert here.python == sys.executable and here.same_python
    none = find_engine_environment({}, prefix="/nowhere", here_has_vllm=False)
    assert none.python is None and "vLLM is not installed here" in none.source


def test_auto_picks_vllm_on_cuda_native_bf16_cpus_and_shared_models_and_ours_elsewhere() -> None:
    assert choose_engine(local(), THERE, AVX2).engine is Engine.NATIVE
    assert "no faster than ours" in choose_engine(local(), THERE, AVX2).reason
    shared = choose_engine(local(), THERE, AVX2, sharing=5)
    assert shared.engine is Engine.VLLM and "5 experts name this model" in shared.reason
    assert choose_engine(local(), THERE, BF16).engine is Engine.VLLM
    assert choose_engine(local(num_gpus=1), THERE, AVX2).engine is Engine.VLLM
    assert choose_engine(local(), NOWHERE, BF16).engine is Engine.NATIVE  # nothing to run vLLM in
    cpu_managed = choose_engine(local(), THERE, BF16, residency_managed=True)
    assert cpu_managed.engine is Engine.NATIVE and "no sleep mode" in cpu_managed.reason
    gpu_managed = choose_engine(local(num_gpus=1), THERE, AVX2, residency_managed=True)
    assert gpu_managed.engine is Engine.VLLM and "sleep mode" in gpu_managed.reason
    for name in ("native", "continuous", "static"):
        assert choose_engine(local(name), THERE, BF16).engine is Engine.NATIVE
    echo = ExpertSpec(name="e", backend="echo", model="echo")
    assert choose_engine(echo, THERE, BF16).engine is Engine.NATIVE


def test_asking_for_vllm_without_an_environment_or_for_an_unknown_engine_says_what_to_do() -> None:
    assert choose_engine(local("vllm"), THERE, AVX2).engine is Engine.VLLM  # asked for: whatever the CPU
    with pytest.raises(EngineUnavailable, match="make engine-env"):
        choose_engine(local("vllm"), NOWHERE, AVX2)
    with pytest.raises(EngineUnavailable, match="'turbo' is not one of auto, vllm, native, continuous, static"):
        choose_engine(local("turbo"), THERE, AVX2)


def test_cpu_flags_are_read_from_proc_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"} and cpu_flags(tmp_path / "missing") == frozenset()


def test_the_default_pools_personas_share_one_engine_and_ask_the_cluster_for_nothing() -> None:
    document = load_pool("default").document()
    for expert in document["experts"]:
        expert["options"] = {"engine": "vllm"}
    document["experts"][1]["resources"] = {"num_cpus": 1.0}  # coder asks for other resources: an engine of its own
    engines = SharedEngines(parse_pool(document, "<test>"), THERE, AVX2)
    assert len(engines.groups) == 2
    shared = next(group for group in engines.groups if len(group.experts) > 1)
    assert set(shared.experts) == {"math", "writer", "generalist", "conductor"}
    assert shared.settings.dtype == "float32" and shared.settings.enable_prefix_caching
    assert engines.engine_of["math"] == engines.engine_of["writer"] != engines.engine_of["coder"]
    options = engines.persona_options("math", {"num_cpus": 0.25, "memory": 2**30, "max_concurrency": 1000})
    assert options == {"num_cpus": 0, "num_gpus": 0, "max_concurrency": 1000}
    engine_options = engine_actor_options(shared, THERE)
    runtime_env = engine_options["runtime_env"]
    assert runtime_env["py_executable"] == THERE.python and runtime_env["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert engine_options["num_cpus"] == 0.25 and "resources" not in engine_options  # no custom resources asked
    on_bf16 = SharedEngines(parse_pool(document, "<test>"), THERE, BF16)
    assert {group.settings.dtype for group in on_bf16.groups} == {"bfloat16"}


def test_the_default_pool_as_shipped_goes_to_one_shared_vllm_engine_where_there_is_one() -> None:
    default = load_pool("default")
    engines = SharedEngines(default, THERE, AVX2)
    assert len(engines.groups) == 1 and set(engines.groups[0].experts) == {e.name for e in default.experts}
    assert "5 experts name this model" in engines.describe()["math"]["reason"]
    assert SharedEngines(default, NOWHERE, AVX2).groups == []  # no engine environment: ours, as before
    alone = parse_pool({"name": "alone", "experts": [{"name": "x", "backend": "local", "model": "m"}]}, "<test>")
    assert SharedEngines(alone, THERE, AVX2).groups == []  # one expert on the model: ours


def test_residency_managed_experts_on_vllm_get_an_engine_each_whose_footprint_counts_its_kv_cache() -> None:
    document = load_pool("default").document()
    for expert in document["experts"]:
        expert["options"] = {"engine": "vllm", "kv_cache_gb": 0.5}
    document["residency"] = {"budget_gb": 2.0}
    engines = SharedEngines(parse_pool(document, "<test>"), THERE, AVX2)
    assert len(engines.groups) == len(document["experts"])  # evicting one moves exactly its model
    assert not any(group.settings.sleep_mode for group in engines.groups)  # vLLM's CPU build has none: it stops
    from experts.vllm.client import VllmBackend

    spec = parse_pool(document, "<test>")
    assert VllmBackend(spec.experts[0], "engine").runtime_memory_gb == 1.0  # whole GiB on CPU, beside the weights
    assert {group.settings.kv_cache_gb for group in engines.groups} == {1.0}
    gpu = {
        "name": "g",
        "residency": {"budget_gb": 20.0},
        "experts": [{**document["experts"][0], "resources": {"num_gpus": 1}}],
    }
    (on_gpu,) = SharedEngines(parse_pool(gpu, "<test>"), THERE, AVX2).groups
    args = on_gpu.settings.engine_args("/models/x")
    assert args["enable_sleep_mode"] is True and args["kv_cache_memory_bytes"] == 2**29  # a budget can count on it


def test_an_expert_that_cannot_have_vllm_is_left_to_fail_at_load_with_the_reason() -> None:
    document = load_pool("default").document()
    document["experts"][0]["options"] = {"engine": "vllm"}
    engines = SharedEngines(parse_pool(document, "<test>"), NOWHERE, AVX2)
    assert engines.groups == [] and "make engine-env" in engines.describe()["math"]["reason"]


async def test_a_local_expert_asking_for_vllm_that_got_none_fails_its_load_saying_how() -> None:
    from experts.backends.local import LocalBackend
    from experts.errors import BackendError

    backend = LocalBackend(local("vllm"))
    with pytest.raises(BackendError, match=r"asks for engine vllm.*make engine-env"):
        await backend.load()
    with pytest.raises(BackendError, match="options.engine 'turbo' is not one of"):
        LocalBackend(local("turbo"))
    assert LocalBackend(local("auto")).joins_running_batch and LocalBackend(local("native")).joins_running_batch
