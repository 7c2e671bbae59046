"""The review after an escalation's first stage: do its answers settle the question, or is the second stage asked?

One rule for the live graph (``graph.py``'s ``review`` node) and batch mode (``batch.py``), and the same as the
offline replay (``router/_plans.py``): stop only when every first-stage expert answered, their extracted answers are
the same, and their mean estimated competence reaches the decision's threshold.
"""

from __future__ import annotations

from aggregator import Aggregator, Candidate
from experts.types import Message
from router import RoutingDecision


def review_first_stage(
    aggregator: Aggregator, messages: list[Message], decision: RoutingDecision, answered: list[Candidate]
) -> RoutingDecision:
    """``decision`` with its escalation decided (and, when escalated, the second stage among its experts).

    ``answered``: the first-stage experts that gave an answer (failed ones left out).
    """
    assert decision.escalation is not None, "only a decision with an escalation is reviewed"
    escalated, reason = _verdict(aggregator, messages, decision, answered)
    escalation = decision.escalation.model_copy(update={"escalated": escalated, "reason": reason})
    experts = decision.experts + (escalation.then if escalated else [])
    update: dict[str, object] = {"escalation": escalation, "experts": experts, "k": len(experts)}
    if escalated and decision.aggregator is None:
        update["aggregator"] = aggregator.aggregator
    return decision.model_copy(update=update)


def _verdict(
    aggregator: Aggregator, messages: list[Message], decision: RoutingDecision, answered: list[Candidate]
) -> tuple[bool, str]:
    assert decision.escalation is not None
    if len(answered) < len(decision.experts):
        return True, f"{len(decision.experts) - len(answered)} first-stage expert(s) failed"
    kind, outcome = aggregator.count_votes(messages, answered)
    if outcome.answer is None or outcome.agreement < 1.0 - 1e-9:  # as router._plans.stage_agrees offline
        shown = ", ".join(f"{answer!r}: {weight:.2f}" for answer, weight in outcome.totals.items()) or "none"
        return True, f"the first stage did not agree ({kind} answers and their weights: {shown})"
    confidence = sum(candidate.competence for candidate in answered) / len(answered)
    threshold = decision.escalation.threshold
    agreed = f"the first stage agreed on {outcome.answer!r}"
    if confidence < threshold:
        return True, f"{agreed} but its mean competence {confidence:.2f} < {threshold:.2f}"
    return False, f"{agreed} (mean competence {confidence:.2f} >= {threshold:.2f})"
