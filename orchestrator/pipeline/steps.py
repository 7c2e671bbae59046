"""The pipeline's steps that the graph (``nodes.py``) and batch mode (``batch.py``) share: a decision for named
experts, answers as the aggregator's candidates, the aggregator's or judge's call and its verdict, the error when
every expert failed.

Runs in: the driver. May import: ``aggregator``, ``router._decision``, ``experts.types``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from aggregator import AggregatorChoice, Candidate, ModelStep, Verdict, for_caller
from experts.types import Completion, GenerationRequest
from router import ExpertScore, NoExpertAvailable, RoutingDecision

UNKNOWN_COMPETENCE = 0.5  # the lexical router measures nothing: equal weights, so the vote is a majority vote


class AllExpertsFailed(RuntimeError):
    """Every recruited expert failed; the message lists each failure, ``codes`` their kinds."""

    def __init__(self, message: str, codes: list[str | None]) -> None:
        super().__init__(message)
        self.codes = codes


def forced_decision(names: list[str], healthy: set[str], aggregator: str | None) -> RoutingDecision:
    """A decision for experts the caller named explicitly (``moesaic.experts``, a batch item's ``experts``)."""
    missing = [name for name in names if name not in healthy]
    if missing:
        raise NoExpertAvailable(f"requested experts not available: {', '.join(missing)}")
    scores = [
        ExpertScore(name=name, score=0.0, chosen=True, rank=rank, reason="chosen: named in the request")
        for rank, name in enumerate(names, start=1)
    ]
    return RoutingDecision(
        policy="forced",
        k=len(names),
        experts=list(names),
        scores=scores,
        aggregator=aggregator if len(names) > 1 else None,
    )


class Answered(Protocol):
    """An expert's usable answer, as the graph (``ExpertAnswer``) and batch mode (``BatchAnswer``) hold it."""

    @property
    def expert(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def finish_reason(self) -> str: ...


def candidates(decision: RoutingDecision, answers: Sequence[Answered]) -> list[Candidate]:
    """The answers as the aggregator's candidates, weighted by each expert's estimated competence."""
    return [
        Candidate(a.expert, a.text, decision.competence.get(a.expert, UNKNOWN_COMPETENCE), a.finish_reason)
        for a in answers
    ]


def model_step_call(step: ModelStep, caller: GenerationRequest, max_tokens: int | None = None) -> GenerationRequest:
    """The aggregator's or judge's call for one request: its own budget (``max_tokens`` overrides it), the caller's
    seed and request id, and for the synthesiser the caller's ``stop`` and ``response_format``."""
    asked = step.request
    if step.role == "aggregator":
        asked = for_caller(asked, caller)
    return replace(asked, max_tokens=max_tokens or asked.max_tokens, seed=caller.seed, request_id=caller.request_id)


def wants_json(call: GenerationRequest) -> bool:
    """Whether the call asks for JSON (``response_format`` json_object or json_schema)."""
    return (call.response_format or {}).get("type") in ("json_object", "json_schema")


def step_verdict(step: ModelStep, completion: Completion, call: GenerationRequest | None = None) -> Verdict:
    """The verdict once the aggregator's or judge's call (``call``) came back.

    The vote's answer stands when the call failed, and when a synthesis that had to be JSON was cut at max_tokens
    (incomplete JSON; the experts' answers are whole).
    """
    if completion.error is not None:
        return step_fallback(step, f"could not answer: {completion.error}")
    if call is not None and wants_json(call) and completion.finish_reason == "length" and step.role == "aggregator":
        return step_fallback(step, f"its JSON was cut at max_tokens ({call.max_tokens})")
    verdict = step.finish(completion.text, completion.finish_reason)
    return replace(verdict, expert=None) if step.role == "aggregator" else verdict


def step_fallback(step: ModelStep, error: str) -> Verdict:
    """The vote's answer, noted, when the aggregator's or judge's call failed."""
    return replace(step.fallback, note=f"{step.role} {step.expert!r} failed, the vote decided: {error}")


def with_measured_aggregator(decision: RoutingDecision, aggregators: AggregatorChoice | None) -> RoutingDecision:
    """The decision with the aggregator measured best for the query's category, when one was measured."""
    if aggregators is None or len(decision.experts) < 2:
        return decision
    return decision.model_copy(update={"aggregator": aggregators.pick(decision.skills)})
