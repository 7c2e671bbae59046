"""Residency: the manager's eviction with lookahead and its budget (fake actors), the actor-side lifecycle,
the measured footprint of the embedded model, and the pool file's ``residency`` section."""

from __future__ import annotations

import asyncio
import random

import pytest

from experts.actor.lifecycle import ModelLifecycle, loaded_bytes, weights_gb
from experts.config._pool_spec import ExpertSpec, PoolFileError, parse_pool
from experts.runtime.dispatch._residency import ExpertFootprint, ResidencyError, ResidencyManager


class FakeActors:
    """``ResidencyControl`` that checks the budget on what is *really* in memory at every moment."""

    def __init__(self, memory: dict[str, float], budget: float, seconds: float = 0.0, parks: bool = True) -> None:
        self.memory, self.budget, self.seconds, self.parks = memory, budget, seconds, parks
        self.calls: list[tuple[str, str]] = []
        self.in_memory: set[str] = set()
        self.fail_load: set[str] = set()

    async def load(self, name: str) -> None:
        self.calls.append(("load", name))
        if name in self.fail_load:
            raise RuntimeError(f"cannot load {name}")
        self.in_memory.add(name)
        assert sum(self.memory[n] for n in self.in_memory) <= self.budget + 1e-9, f"over budget: {self.in_memory}"
        await asyncio.sleep(self.seconds)

    async def park(self, name: str) -> str:
        self.calls.append(("park", name))
        await asyncio.sleep(self.seconds)
        self.in_memory.discard(name)
        return "parked" if self.parks else "disk"

    async def unload(self, name: str) -> None:
        self.calls.append(("unload", name))
        await asyncio.sleep(self.seconds)
        self.in_memory.discard(name)


def manager(
    names: str, budget: float, demand: dict[str, int] | None = None, gpu: bool = False, **options: object
) -> tuple[ResidencyManager, FakeActors]:
    memory = {name: 1.0 for name in names}
    actors = FakeActors(memory, budget)
    queued = demand if demand is not None else {}
    footprints = [ExpertFootprint(name, 1.0, gpu=gpu) for name in names]
    return ResidencyManager(footprints, budget, actors, lambda name: queued.get(name, 0), **options), actors  # type: ignore[arg-type]


async def use(residency: ResidencyManager, name: str) -> None:
    await residency.acquire(name)
    residency.release(name)


async def test_an_expert_with_queued_work_is_not_evicted_while_an_idle_one_can_be() -> None:
    demand: dict[str, int] = {}
    residency, actors = manager("abc", budget=2, demand=demand)
    await use(residency, "a")
    await use(residency, "b")  # a is now the least recently used: plain LRU would evict a
    demand["a"] = 3
    await use(residency, "c")
    assert ("unload", "b") in actors.calls and ("unload", "a") not in actors.calls
    assert residency.snapshot() == {"a": "resident", "b": "disk", "c": "resident"}


async def test_when_every_candidate_has_work_the_one_with_least_goes() -> None:
    demand = {"a": 1, "b": 5}
    residency, actors = manager("abc", budget=2, demand=demand)
    await use(residency, "b")
    await use(residency, "a")
    await use(residency, "c")
    assert residency.state("a") == "disk" and residency.state("b") == "resident"


async def test_a_pinned_expert_is_never_evicted_and_a_load_waits_for_room() -> None:
    residency, actors = manager("ab", budget=1)
    await residency.acquire("a")  # a run in progress
    waiting = asyncio.create_task(residency.acquire("b"))
    await asyncio.sleep(0.05)
    assert not waiting.done() and residency.waiting_for_room == {"b"}
    assert residency.state("a") == "resident"
    residency.release("a")
    await asyncio.wait_for(waiting, 1)
    assert residency.snapshot() == {"a": "disk", "b": "resident"} and residency.waiting_for_room == set()


async def test_prefetch_only_evicts_experts_without_queued_work() -> None:
    demand = {"a": 2}
    residency, actors = manager("ab", budget=1, demand=demand)
    await use(residency, "a")
    assert residency.prefetch("b") is False  # a still has work queued
    demand["a"] = 0
    assert residency.prefetch("b") is True
    assert residency.state("b") == "loading" and residency.used_gb("local") == 1.0
    await use(residency, "b")  # waits for the prefetch instead of loading again
    assert actors.calls.count(("load", "b")) == 1 and residency.state("a") == "disk"


async def test_the_budget_holds_at_every_moment_under_concurrent_runs() -> None:
    rng = random.Random(7)
    residency, actors = manager("abcdef", budget=2)
    actors.seconds = 0.002

    async def run(name: str) -> None:
        await residency.acquire(name)
        await asyncio.sleep(rng.random() * 0.01)
        residency.release(name)

    await asyncio.gather(*(run(rng.choice("abcdef")) for _ in range(60)))  # FakeActors asserts on every load
    assert residency.used_gb("local") <= 2


async def test_gpu_experts_park_in_host_ram_within_its_budget_and_cpu_experts_go_to_disk() -> None:
    residency, actors = manager("abc", budget=1, gpu=True, host_budget_gb=1.0)
    await use(residency, "a")
    await use(residency, "b")  # a parks (host RAM has room for one)
    await use(residency, "c")  # host RAM is full: b goes to disk
    assert ("park", "a") in actors.calls and ("unload", "b") in actors.calls
    assert residency.snapshot() == {"a": "parked", "b": "disk", "c": "resident"}
    cpu, cpu_actors = manager("ab", budget=1)
    await use(cpu, "a")
    await use(cpu, "b")
    assert cpu_actors.calls == [("load", "a"), ("unload", "a"), ("load", "b")]


async def test_an_expert_larger_than_the_budget_is_refused_with_advice() -> None:
    residency, _ = manager("a", budget=0.5)
    with pytest.raises(ResidencyError, match="raise the budget.*residency.memory_gb"):
        await residency.acquire("a")


async def test_a_failed_load_leaves_the_expert_on_disk_and_unpinned() -> None:
    residency, actors = manager("ab", budget=1)
    actors.fail_load.add("b")
    with pytest.raises(RuntimeError, match="cannot load b"):
        await residency.acquire("b")
    assert residency.state("b") == "disk" and residency.used_gb("local") == 0
    await use(residency, "a")
    await residency.release_all()
    assert set(residency.snapshot().values()) == {"disk"}


# -- the actor side ----------------------------------------------------------------------------
class FakeBackend:
    def __init__(self, can_park: bool) -> None:
        self.can_park, self.events = can_park, []

    async def load(self) -> None:
        self.events.append("load")

    async def park(self) -> bool:
        self.events.append("park")
        return self.can_park

    async def unload(self) -> None:
        self.events.append("unload")


SPEC = ExpertSpec(name="x", backend="local", model="embedded:smollm2-135m-instruct")


async def test_on_a_cpu_parking_unloads_and_everything_is_counted() -> None:
    backend = FakeBackend(can_park=False)
    lifecycle = ModelLifecycle(backend, SPEC)
    assert (await lifecycle.load())["residency"] == "resident"
    assert (await lifecycle.load())["loads"] == 1  # already resident: no second load
    report = await lifecycle.park()
    assert report["residency"] == "disk" and report["unloads"] == 1 and report["parks"] == 0
    assert backend.events == ["load", "park", "unload"]


async def test_on_a_gpu_parking_keeps_the_weights_in_host_ram() -> None:
    lifecycle = ModelLifecycle(FakeBackend(can_park=True), SPEC)
    await lifecycle.load()
    assert (await lifecycle.park())["residency"] == "parked"
    report = await lifecycle.load()
    assert report["loads"] == 2 and report["parks"] == 1 and report["residency"] == "resident"


@pytest.mark.model
def test_the_footprint_is_measured_from_the_weights_in_the_dtype_they_load_in() -> None:
    from experts.engine.embedded import prepare_model, resolve_model

    cpu = weights_gb(SPEC)  # fp32 on CPU: 135M parameters x 4 bytes
    assert 0.45 < cpu < 0.56
    gpu = weights_gb(SPEC.model_copy(update={"resources": SPEC.resources.model_copy(update={"num_gpus": 1})}))
    assert abs(gpu - cpu / 2) < 0.01  # bf16 on a GPU
    directory = prepare_model(resolve_model(SPEC.model))
    assert loaded_bytes(directory, None) == sum(p.stat().st_size for p in directory.glob("*.safetensors")) - sum(
        8 + int.from_bytes(p.open("rb").read(8), "little") for p in directory.glob("*.safetensors")
    )
    declared = SPEC.model_copy(update={"residency": SPEC.residency.model_copy(update={"memory_gb": 3.0})})
    assert weights_gb(declared) == 3.0


# -- the pool file -----------------------------------------------------------------------------
def test_the_residency_section_is_validated_with_file_and_field() -> None:
    base = {
        "experts": [{"name": "a", "backend": "local", "model": "m"}, {"name": "b", "backend": "litellm", "model": "m"}]
    }
    spec = parse_pool({**base, "residency": {"budget_gb": 8}}, "pool.yaml")
    assert spec.residency is not None and spec.residency.latency_bound_s == 30.0
    assert spec.residency_managed("a") and not spec.residency_managed("b")
    assert not parse_pool(base, "pool.yaml").residency_managed("a")
    with pytest.raises(PoolFileError, match=r"pool.yaml: invalid pool file\n  residency.budget_gb: .*greater than 0"):
        parse_pool({**base, "residency": {"budget_gb": 0}}, "pool.yaml")
    with pytest.raises(PoolFileError, match=r"experts\[0\] \(name: 'a'\).residency.memory_gb"):
        parse_pool({**base, "experts": [{**base["experts"][0], "residency": {"memory_gb": -1}}]}, "pool.yaml")
