"""Tools in the pipeline: who is shown the caller's tools, and what happens when an expert calls one.

A request's ``tools``, ``tool_choice`` and ``response_format`` reach every recruited expert; experts on a
tool-capable backend (``ExpertSpec.supports``: ``litellm``, and ``local``/``moe`` on either engine, whose calls a
grammar holds well-formed: ``experts/engine/tool_calls.py``, ``experts/vllm/tools.py``) pass tools to their model,
the others (``echo``) answer in text;
``response_format`` is followed by ``litellm`` experts and enforced by ``local`` ones. When recruited experts
answer with tool calls, the pool votes (``aggregator``'s ``vote_on_calls``): first whether to call or to answer in
text, weighted by each expert's competence, then, if calling won, on the calls themselves, made canonical so that
calls differing only in form count as one. The winning calls go back to the caller as the answer
(``finish_reason: tool_calls``), and the caller runs the tools and asks again with their results, as with any
OpenAI model; if answering won, the text answers are aggregated as usual, the calls left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aggregator import Ballot, CallVote, Verdict, vote_on_calls
from orchestrator.pipeline.state import ExpertAnswer
from router import RoutingDecision

TOOL_CALLS_STRATEGY = "tool_calls"
UNKNOWN_COMPETENCE = 0.5


def call_vote(decision: RoutingDecision, usable: list[ExpertAnswer]) -> CallVote | None:
    """The vote over the usable answers' calls (``usable`` in the decision's order); None when nobody called."""
    ballots = [Ballot(a.expert, decision.competence.get(a.expert, UNKNOWN_COMPETENCE), a.tool_calls) for a in usable]
    return vote_on_calls(ballots)


def tool_call_verdict(vote: CallVote, usable: list[ExpertAnswer]) -> Verdict:
    """The winning calls, returned to the caller as their expert made them (its text, if any, with them)."""
    answer = next(a for a in usable if a.expert == vote.expert)
    agreeing = round(vote.agreement * len(vote.callers))
    weights = f"call {vote.call_or_answer.get('call', 0.0):.2f}, answer {vote.call_or_answer.get('answer', 0.0):.2f}"
    return Verdict(
        text=answer.text,
        finish_reason="tool_calls",
        strategy=TOOL_CALLS_STRATEGY,
        expert=answer.expert,
        shortcut=len(vote.callers) > 1 and vote.agreement == 1.0,
        votes=vote.totals,
        agreement=vote.agreement,
        tool_calls=answer.tool_calls,
        note=f"{len(vote.callers)} of {len(usable)} experts called tools; {agreeing} made the winning calls "
        f"(weights: {weights})",
    )


def with_passthrough(
    metadata: dict[str, Any], honours: Callable[[str, str], bool], experts: list[str], passed: dict[str, Any]
) -> dict[str, Any]:
    """``metadata`` plus ``passthrough``: which of ``experts`` were shown the request's tools / response_format.

    ``passed`` is the request's ``tools``, ``tool_choice`` and ``response_format`` (None when absent);
    without any of them ``metadata`` is returned as it is. ``honours(expert, field)`` says who acts on a field
    (``ExpertClient.honours``); experts that cannot are listed, so a caller sees that an answer came from a model
    that never saw its tools.
    """
    fields = [name for name, value in passed.items() if value is not None]
    if not fields:
        return metadata
    report = {
        "fields": fields,
        "sent_to": [name for name in experts if all(honours(name, f) for f in fields)],
        "not_supported_by": [name for name in experts if not all(honours(name, f) for f in fields)],
    }
    return {**metadata, "passthrough": report}
