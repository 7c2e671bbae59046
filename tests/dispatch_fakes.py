"""An in-process stand-in for ``ExpertPool`` (no Ray, no model) that records what the dispatcher asks of it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from experts.config._pool_spec import PoolSpec, parse_pool
from experts.types import Completion, GenerationRequest, Usage


def residency_spec(names: str = "abc", budget_gb: float = 1.0, **residency: Any) -> PoolSpec:
    """A pool of echo experts, residency-managed, each declared at 1 GB."""
    experts = [
        {
            "name": name,
            "backend": "echo",
            "model": "echo",
            "residency": {"memory_gb": 1.0},
            "skills": ["math"],
            "resources": {"num_cpus": 0},
        }
        for name in names
    ]
    return parse_pool(
        {"name": "fake", "residency": {"budget_gb": budget_gb, **residency}, "experts": experts}, "<fake>"
    )


class FakePool:
    """Answers with the request's text; loads and batches take the given seconds; every call is logged."""

    def __init__(self, spec: PoolSpec, load_s: float = 0.0, run_s: float = 0.0) -> None:
        self.spec, self.load_s, self.run_s = spec, load_s, run_s
        self.events: list[tuple[float, str, str, int]] = []  # (time, action, expert, batch size)
        self.in_memory: set[str] = set()
        self.fail_load: set[str] = set()

    @property
    def expert_names(self) -> list[str]:
        return [expert.name for expert in self.spec.experts]

    def is_healthy(self, name: str) -> bool:
        return name in self.expert_names

    def healthy_names(self) -> list[str]:
        return self.expert_names

    async def health(self, timeout_s: float = 5.0) -> dict[str, dict[str, Any]]:
        return {
            name: {"state": "ready", "memory_gb": 1.0, "node": "n1", "residency": "disk", "queue_depth": 0}
            for name in self.expert_names
        }

    async def shutdown(self) -> None:
        return None

    def _log(self, action: str, name: str, size: int = 0) -> None:
        self.events.append((time.monotonic(), action, name, size))

    def actions(self, action: str) -> list[str]:
        return [name for _, kind, name, _ in self.events if kind == action]

    async def control(self, name: str, action: str) -> dict[str, Any]:
        self._log(action, name)
        if action == "load":
            if name in self.fail_load:
                raise RuntimeError(f"no weights for {name}")
            await asyncio.sleep(self.load_s)
            self.in_memory.add(name)
            self._log("loaded", name)
        else:
            self.in_memory.discard(name)
        return {"residency": "resident" if action == "load" else "disk", "seconds": 0.0}

    async def generate_batch(self, name: str, requests: list[GenerationRequest]) -> list[Completion | Exception]:
        assert name in self.in_memory, f"{name} asked to generate while not loaded"
        self._log("batch", name, len(requests))
        await asyncio.sleep(self.run_s)
        self._log("done", name, len(requests))
        return [_answer(name, request, len(requests)) for request in requests]

    async def generate(self, name: str, request: GenerationRequest) -> Completion:
        return _answer(name, request, 1)

    async def stream(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        assert name in self.in_memory
        self._log("stream", name, 1)
        for word in request.messages[-1].content.split():
            yield word + " "
        yield _answer(name, request, 1)


def _answer(name: str, request: GenerationRequest, size: int) -> Completion:
    return Completion(f"{name}: {request.messages[-1].content}", "stop", Usage(1, 1), name, batch_size=size)
