"""``Orchestrator``: the one object the API and the CLI call.

It owns the compiled graph and offers three ways in: run the pipeline, stream the
pipeline (routing decision first, then text, then the full result), and call one expert
directly (``model: expert/<name>``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Union

from aggregator.synthesize import Synthesizer
from experts.pool import ExpertPool
from experts.types import Completion, GenerationRequest
from orchestrator.graph import PipelineNodes, build_graph
from orchestrator.state import PipelineRequest, PipelineResult, PipelineState
from router.decision import RoutingDecision
from router.factory import build_router


@dataclass(frozen=True)
class DecisionEvent:
    decision: RoutingDecision


@dataclass(frozen=True)
class TextEvent:
    text: str


@dataclass(frozen=True)
class DoneEvent:
    result: PipelineResult


PipelineEvent = Union[DecisionEvent, TextEvent, DoneEvent]


class Orchestrator:
    """Runs requests through the pipeline graph over one ``ExpertPool``."""

    def __init__(self, pool: ExpertPool) -> None:
        self.pool = pool
        self.router = build_router(pool.spec)
        self.synthesizer = Synthesizer(pool.spec.roles.aggregator)
        self.graph = build_graph(PipelineNodes(pool, self.router, self.synthesizer))

    async def run(self, request: PipelineRequest) -> PipelineResult:
        started = time.perf_counter()
        state = await self.graph.ainvoke({"request": request, "timings_ms": {}})
        return _result(state, started)

    async def stream(self, request: PipelineRequest) -> AsyncIterator[PipelineEvent]:
        """Yield ``DecisionEvent``, then ``TextEvent``s, then one ``DoneEvent``."""
        started = time.perf_counter()
        request = replace(request, stream=True)
        final_state: dict[str, Any] = {}
        async for mode, payload in self.graph.astream(
            {"request": request, "timings_ms": {}}, stream_mode=["custom", "values"]
        ):
            if mode == "values":
                final_state = payload
            elif payload["kind"] == "decision":
                yield DecisionEvent(payload["decision"])
            elif payload["kind"] == "delta" and payload["text"]:
                yield TextEvent(payload["text"])
        yield DoneEvent(_result(final_state, started))

    def route(self, query: str, k: int | None = None, policy: str | None = None) -> RoutingDecision:
        """The routing decision alone, over the currently healthy experts (``POST /v1/route``)."""
        started = time.perf_counter()
        estimate = self.router.understand(query)
        healthy = set(self.pool.healthy_names())
        return self.router.recruit(estimate, healthy=healthy, k=k, policy=policy, started=started)

    async def call_expert(self, name: str, request: GenerationRequest) -> Completion:
        return await self.pool.generate(name, request)

    def stream_expert(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        return self.pool.stream(name, request)


def _result(state: PipelineState | dict[str, Any], started: float) -> PipelineResult:
    final = state["final"]
    timings = dict(state.get("timings_ms", {}))
    timings["total"] = round((time.perf_counter() - started) * 1000, 3)
    return PipelineResult(
        text=final.text,
        finish_reason=final.finish_reason,
        strategy=final.strategy,
        decision=state["decision"],
        answers=list(state.get("answers", [])),
        calls=list(state.get("calls", [])),
        timings_ms=timings,
        note=final.note,
    )
