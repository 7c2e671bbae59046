"""The pipeline's events, defined once: what a streamed request reports as it runs.

The graph's nodes write them to LangGraph's custom stream as they happen (``emit``), ``Orchestrator.stream`` passes
them on and ends with ``DoneEvent``, and each API family renders them to its own chunks
(``orchestrator/server/api/chat_render.py`` for chat completions). Nothing converts them on the way.

Runs in: the driver (the API server, the CLI). May import: ``orchestrator.pipeline.state``, ``router._decision``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from langgraph.config import get_stream_writer

from orchestrator.pipeline.state import CallRecord, ExpertAnswer, PipelineResult
from router import Escalation, RoutingDecision


@dataclass(frozen=True)
class DecisionEvent:
    """The routing decision, first (before any text)."""

    decision: RoutingDecision


@dataclass(frozen=True)
class TextEvent:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True)
class ExpertTextEvent:
    """A piece of one expert's own answer as it writes it (``PipelineRequest.expert_deltas``): progress only."""

    expert: str
    text: str


@dataclass(frozen=True)
class AnswerEvent:
    """One expert's answer (or failure) as it lands, with its call's record."""

    answer: ExpertAnswer
    call: CallRecord


@dataclass(frozen=True)
class EscalationEvent:
    """The review of an escalation's first stage (``decision.escalation`` with ``escalated`` set)."""

    escalation: Escalation


@dataclass(frozen=True)
class DoneEvent:
    """The whole result, last."""

    result: PipelineResult


PipelineEvent = Union[DecisionEvent, TextEvent, ExpertTextEvent, AnswerEvent, EscalationEvent, DoneEvent]


def emit(event: PipelineEvent) -> None:
    """Write ``event`` to the running graph's stream (a node of a streamed request calls this); empty text is not
    an event."""
    if isinstance(event, (TextEvent, ExpertTextEvent)) and not event.text:
        return
    get_stream_writer()(event)
