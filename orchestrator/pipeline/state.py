"""What flows through the pipeline graph: the request, the routing, the answers, the bill.

Plain dataclasses inside the graph; the HTTP layer converts to and from its pydantic
schemas at the edge.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from aggregator import Verdict
from experts.types import Completion, GenerationRequest, Message, ToolCall, Usage
from router import RoutingDecision

if TYPE_CHECKING:  # the ledger holds CallRecords, defined below
    from orchestrator.pipeline.ledger import CallLedger


@dataclass
class PipelineRequest:
    """A chat request to the whole pipeline (``model: moesaic``): one generation, routed."""

    generation: GenerationRequest  # what every expert is asked, with the caller's sampling parameters
    k: int | None = None
    experts: list[str] | None = None  # forced choice, bypasses routing
    policy: str | None = None  # None: the pool file's policy
    stream: bool = False
    strategy: str | None = None  # None: the pool file's aggregation strategy
    consensus: float | None | Literal["pool"] = "pool"  # short-cut share; None: never; "pool": the pool's
    aggregator_max_tokens: int | None = None  # None: the pool's aggregation.max_tokens
    budget: float | None = None  # cost/escalate policies: mean cost <= budget x the best single expert's
    expert_deltas: bool = False  # when streaming: also each expert's own tokens, as "expert_delta" events (consoles)
    ledger: CallLedger | None = None  # every call written as it ends, so a request stopped early is still billed

    @property
    def messages(self) -> list[Message]:
        return self.generation.messages

    @property
    def query(self) -> str:
        """The text routed on: the last user turn."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


@dataclass(frozen=True)
class CallRecord:
    """One model call, for the usage bill and the ``moesaic.calls`` breakdown."""

    expert: str
    role: str  # "expert" | "aggregator" | "judge" | "keywords" | "direct"
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_s: float
    batch_size: int = 1
    finish_reason: str = "stop"
    error: str | None = None
    stage: int = 1  # an escalation's second stage is 2

    @classmethod
    def of(cls, expert: str, role: str, completion: Completion) -> CallRecord:
        usage = completion.usage
        return cls(
            expert,
            role,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cost,
            round(completion.latency_s, 4),
            completion.batch_size,
            completion.finish_reason,
            completion.error,
        )

    @classmethod
    def failure(cls, expert: str, role: str, error: str, latency_s: float) -> CallRecord:
        return cls(expert, role, 0, 0, 0.0, round(latency_s, 4), 0, "error", error)


@dataclass(frozen=True)
class ExpertAnswer:
    """What one recruited expert said (or why it said nothing)."""

    expert: str
    text: str
    finish_reason: str
    error: str | None = None
    error_code: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # the tools it asked the caller to run (tool-capable experts only)


@dataclass(frozen=True)
class Replacement:
    """A recruited expert that failed mid-request, and the next best healthy one asked instead."""

    failed: str
    replacement: str
    reason: str


@dataclass
class PipelineResult:
    """Everything a caller may show: the answer, the routing, each call and the timings.

    ``partial``: at least one recruited expert's place got no answer (it failed, and so did its
    replacement or there was none), yet others answered; the answer stands on fewer experts.
    ``failed_experts``: every expert that failed in this request, replaced or not.
    """

    verdict: Verdict
    decision: RoutingDecision
    answers: list[ExpertAnswer]
    calls: list[CallRecord]
    timings_ms: dict[str, float]
    partial: bool = False
    failed_experts: list[str] = field(default_factory=list)
    replacements: list[Replacement] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.verdict.text

    @property
    def finish_reason(self) -> str:
        return self.verdict.finish_reason

    @property
    def strategy(self) -> str:
        return self.verdict.strategy

    @property
    def note(self) -> str | None:
        return self.verdict.note

    def metadata(self) -> dict[str, Any]:
        """The ``moesaic`` field: routing, how the answer was reached, every call, timings and total cost."""
        verdict = self.verdict
        return {
            "decision": self.decision.model_dump(),
            "strategy": verdict.strategy,
            "shortcut": verdict.shortcut,
            "aggregation": {
                "answer": verdict.answer,
                "answer_kind": verdict.answer_kind,
                "votes": verdict.votes,
                "agreement": verdict.agreement,
                "chosen_expert": verdict.expert,
            },
            "answers": [asdict(answer) for answer in self.answers],
            "calls": [asdict(call) for call in self.calls],
            "cost": self.usage.cost,
            "timings_ms": self.timings_ms,
            "note": verdict.note,
            # failure handling: a recruited expert's place left without an answer, who failed, who stood in
            "partial": self.partial,
            "failed_experts": self.failed_experts,
            "replacements": [asdict(replacement) for replacement in self.replacements],
        }

    @property
    def usage(self) -> Usage:
        total = Usage()
        for call in self.calls:
            total = total + Usage(call.prompt_tokens, call.completion_tokens, call.cost)
        return total


def merge_timings(left: dict[str, float], right: dict[str, float]) -> dict[str, float]:
    return {**left, **right}


class PipelineState(TypedDict, total=False):
    """The LangGraph state. Lists with ``operator.add`` gather results of parallel expert nodes."""

    request: PipelineRequest
    estimate: Any  # what the pool's router understood of the query (router-specific)
    decision: RoutingDecision  # the router's; once aggregated, as carried out (replacements joined)
    reserve: Any  # orchestrator.pipeline.replacements.Reserve: who may replace a failed expert
    answers: Annotated[list[ExpertAnswer], operator.add]
    calls: Annotated[list[CallRecord], operator.add]
    replacements: Annotated[list[Replacement], operator.add]
    timings_ms: Annotated[dict[str, float], merge_timings]
    final: Verdict
    partial: bool
    failed_experts: list[str]


class ExpertTask(TypedDict):
    """The payload ``Send`` hands to one ``ask_expert`` node."""

    request: PipelineRequest
    expert: str
    stream: bool
    reserve: Any  # the request's Reserve, shared by its expert calls
    stage: int  # 1, or 2 for an escalation's second stage
