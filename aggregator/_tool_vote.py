"""The ensemble over tool calls: canonical calls, then a competence-weighted vote on whether to call and on what.

When several experts answer an agent's request, some may call tools and some answer in text, and the callers may
differ only in form (key order, ``1`` against ``1.0``, whitespace). Each expert's calls are made canonical (the
function's name, its arguments parsed and written back with sorted keys, whole floats as integers, no spaces; a
set of parallel calls in a fixed order), then the same weighted vote as for text answers (``_vote``) decides twice:

1. call or answer: the callers' competence against the text answerers';
2. if calling wins, which calls: each caller's canonical set is its ballot.

The winning calls are those of the most competent expert that made them (their ids are its own). A synthesising
aggregator never rewrites a call: it is only asked when answering in text won.

Runs in: the driver. May import: ``experts.types``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator._vote import weighted_vote
from experts.types import ToolCall

CALL, ANSWER = "call", "answer"


def canonical_arguments(arguments: str) -> str:
    """A call's JSON arguments in one form: keys sorted, whole floats as integers, no spaces (text that is not JSON
    is kept, stripped: it still matches itself)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return arguments.strip()
    return json.dumps(_normalised(parsed), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _normalised(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def canonical_calls(calls: Sequence[ToolCall]) -> str:
    """One expert's calls as a ballot: each (name, canonical arguments), in a fixed order (parallel calls are a set)."""
    return json.dumps(sorted([call.name, canonical_arguments(call.arguments)] for call in calls), separators=(",", ":"))


@dataclass(frozen=True)
class Ballot:
    """One expert's answer as the vote sees it: its competence, and its calls (empty: it answered in text)."""

    expert: str
    competence: float
    calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class CallVote:
    """How the experts voted: whether calling won, the winning calls and whose they are, and the tallies."""

    call_wins: bool
    calls: tuple[ToolCall, ...] = ()
    expert: str | None = None  # whose calls are returned
    call_or_answer: dict[str, float] = field(default_factory=dict)  # summed weight of calling and of answering
    totals: dict[str, float] = field(default_factory=dict)  # each canonical set of calls and its summed weight
    agreement: float = 0.0  # share of the callers that made the winning calls
    callers: tuple[str, ...] = ()


def vote_on_calls(ballots: Sequence[Ballot]) -> CallVote | None:
    """The two votes over the experts' answers; None when nobody called a tool (the text vote is all there is)."""
    callers = [ballot for ballot in ballots if ballot.calls]
    if not callers:
        return None
    competences = [ballot.competence for ballot in ballots]
    first = weighted_vote([CALL if ballot.calls else ANSWER for ballot in ballots], competences)
    names = tuple(ballot.expert for ballot in callers)
    if first.answer != CALL:
        return CallVote(False, call_or_answer=first.totals, callers=names)
    second = weighted_vote([canonical_calls(ballot.calls) for ballot in callers], [b.competence for b in callers])
    winner = callers[second.winner]
    return CallVote(True, winner.calls, winner.expert, first.totals, second.totals, second.agreement, names)
