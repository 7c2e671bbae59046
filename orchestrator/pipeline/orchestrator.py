"""``Orchestrator``: the one object the API and the CLI call.

It owns the compiled graph and offers three ways in: run the pipeline, stream the
pipeline (routing decision first, then text, then the full result), and call one expert
directly (``model: expert/<name>``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, AsyncIterator

from aggregator import AggregationSettings, Aggregator, Sampling
from experts.config import PoolSpec
from experts.runtime import ExpertClient, dispatching
from experts.types import Completion, GenerationRequest
from orchestrator.pipeline.events import DoneEvent, PipelineEvent
from orchestrator.pipeline.graph import build_graph
from orchestrator.pipeline.nodes import PipelineNodes
from orchestrator.pipeline.state import PipelineRequest, PipelineResult, PipelineState
from router import RoutingDecision, build_router, load_aggregator_choice


class Orchestrator:
    """Runs requests through the pipeline graph over one ``ExpertPool``."""

    def __init__(self, pool: ExpertClient) -> None:
        self.pool = dispatching(pool)  # a pool file with a residency section: queues and on-demand loading
        self.router = build_router(pool.spec)
        self.aggregator = build_aggregator(pool.spec)
        self.aggregators = load_aggregator_choice(pool.spec)
        self.nodes = PipelineNodes(self.pool, self.router, self.aggregator, self.aggregators)
        self.graph = build_graph(self.nodes)

    async def run(self, request: PipelineRequest) -> PipelineResult:
        started = time.perf_counter()
        state = await self.graph.ainvoke({"request": request, "timings_ms": {}})
        return _result(state, started)

    async def stream(self, request: PipelineRequest) -> AsyncIterator[PipelineEvent]:
        """Yield ``DecisionEvent``, then ``TextEvent``s (and ``AnswerEvent``/``EscalationEvent`` as experts answer and
        escalations are reviewed; ``ExpertTextEvent``s with ``expert_deltas``), then one ``DoneEvent``."""
        started = time.perf_counter()
        request = replace(request, stream=True)
        final_state: dict[str, Any] = {}
        async for mode, payload in self.graph.astream(
            {"request": request, "timings_ms": {}}, stream_mode=["custom", "values"]
        ):
            if mode == "values":
                final_state = payload
            else:  # the nodes write the pipeline's events themselves (events.emit)
                yield payload
        yield DoneEvent(_result(final_state, started))

    def route(
        self, query: str, k: int | None = None, policy: str | None = None, budget: float | None = None
    ) -> RoutingDecision:
        """The routing decision alone, over the currently healthy experts (``POST /v1/route``)."""
        started = time.perf_counter()
        return self.nodes.decide(self.router.understand(query), k=k, policy=policy, budget=budget, started=started)

    async def call_expert(self, name: str, request: GenerationRequest) -> Completion:
        return await self.pool.generate(name, request)

    def stream_expert(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        return self.pool.stream(name, request)


def build_aggregator(spec: PoolSpec) -> Aggregator:
    """The pool's aggregation settings and roles as an ``Aggregator``."""
    section = spec.aggregation
    settings = AggregationSettings(
        strategy=section.strategy,
        consensus=section.consensus,
        answer_kind=section.answer_kind,
        sampling=Sampling(max_tokens=section.max_tokens, temperature=section.temperature),
    )
    return Aggregator(settings, spec.roles.aggregator, spec.roles.judge)


def _result(state: PipelineState | dict[str, Any], started: float) -> PipelineResult:
    timings = dict(state.get("timings_ms", {}))
    timings["total"] = round((time.perf_counter() - started) * 1000, 3)
    return PipelineResult(
        verdict=state["final"],
        decision=state["decision"],
        answers=list(state.get("answers", [])),
        calls=list(state.get("calls", [])),
        timings_ms=timings,
        partial=bool(state.get("partial", False)),
        failed_experts=list(state.get("failed_experts", [])),
        replacements=list(state.get("replacements", [])),
    )
