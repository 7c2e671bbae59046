"""The review after an escalation's first stage: do its answers settle the question, or is the second stage asked?

One rule for the live graph (``graph.py``'s ``review`` node) and batch mode (``batch.py``), and the same as the
offline replay (``router/_plans.py``): stop only when every first-stage expert answered, their extracted answers are
the same, and their mean estimated competence reaches the decision's threshold. When first-stage experts called tools
(an agent's request), "the same" means the same calls, made canonical (``aggregator.canonical_calls``): experts that
disagree on the calls, or of which some call and some answer in text, escalate.
"""

from __future__ import annotations

from collections.abc import Mapping

from aggregator import Aggregator, Candidate, canonical_calls
from experts.types import Message, ToolCall
from router import RoutingDecision


def review_first_stage(
    aggregator: Aggregator,
    messages: list[Message],
    decision: RoutingDecision,
    answered: list[Candidate],
    calls: Mapping[str, tuple[ToolCall, ...]] | None = None,
) -> RoutingDecision:
    """``decision`` with its escalation decided (and, when escalated, the second stage among its experts).

    ``answered``: the first-stage experts that gave an answer (failed ones left out); ``calls``: the tool calls each
    of them made, if any.
    """
    assert decision.escalation is not None, "only a decision with an escalation is reviewed"
    escalated, reason = _verdict(aggregator, messages, decision, answered, calls or {})
    escalation = decision.escalation.model_copy(update={"escalated": escalated, "reason": reason})
    experts = decision.experts + (escalation.then if escalated else [])
    update: dict[str, object] = {"escalation": escalation, "experts": experts, "k": len(experts)}
    if escalated and decision.aggregator is None:
        update["aggregator"] = aggregator.aggregator
    return decision.model_copy(update=update)


def _verdict(
    aggregator: Aggregator,
    messages: list[Message],
    decision: RoutingDecision,
    answered: list[Candidate],
    calls: Mapping[str, tuple[ToolCall, ...]],
) -> tuple[bool, str]:
    assert decision.escalation is not None
    if len(answered) < len(decision.experts):
        return True, f"{len(decision.experts) - len(answered)} first-stage expert(s) failed"
    ballots = {c.expert: canonical_calls(calls[c.expert]) if calls.get(c.expert) else "" for c in answered}
    if any(ballots.values()):  # an agent's request: the first stage must agree on its calls
        if len(set(ballots.values())) > 1:
            shown = "; ".join(f"{expert}: {ballot or 'answered in text'}" for expert, ballot in ballots.items())
            return True, f"the first stage did not agree on its tool calls ({shown})"
        agreed = f"the first stage agreed on the calls {next(iter(ballots.values()))}"
    else:
        kind, outcome = aggregator.count_votes(messages, answered)
        if outcome.answer is None or outcome.agreement < 1.0 - 1e-9:  # as router._plans.stage_agrees offline
            shown = ", ".join(f"{answer!r}: {weight:.2f}" for answer, weight in outcome.totals.items()) or "none"
            return True, f"the first stage did not agree ({kind} answers and their weights: {shown})"
        agreed = f"the first stage agreed on {outcome.answer!r}"
    confidence = sum(candidate.competence for candidate in answered) / len(answered)
    threshold = decision.escalation.threshold
    if confidence < threshold:
        return True, f"{agreed} but its mean competence {confidence:.2f} < {threshold:.2f}"
    return False, f"{agreed} (mean competence {confidence:.2f} >= {threshold:.2f})"
