"""Re-recruiting: when a recruited expert fails mid-request, the next best healthy expert answers instead.

The router already ranked every expert for the query (``RoutingDecision.scores``: the lexical
router by declared skill, the profiled router by estimated competence), so a replacement
needs no second routing pass: it is the best-ranked expert that was not chosen, has not been
asked in this request, and is healthy *now* (its circuit closed, its actor not restarting).

One ``Reserve`` per request is shared by its concurrent expert calls, so two experts failing
at once get two different replacements. ``replacement_rounds`` (pool file
``resilience.replacement_rounds``) bounds how often one slot is re-filled: with 1, a failed
expert is replaced once and a failed replacement is not replaced again.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.pipeline.state import Replacement
from router import RoutingDecision


class Reserve:
    """The router's unchosen experts for one request, best first; each is handed out once."""

    def __init__(self, decision: RoutingDecision, rounds: int) -> None:
        self.rounds = rounds
        self._ranked = [score.name for score in decision.scores if not score.chosen]
        self._asked = set(decision.experts)

    def take(self, is_healthy: Callable[[str], bool]) -> str | None:
        """The next best expert not asked yet and healthy now, or None when there is none."""
        for name in self._ranked:
            if name not in self._asked and is_healthy(name):
                self._asked.add(name)
                return name
        return None


def with_replacements(decision: RoutingDecision, replacements: list[Replacement]) -> RoutingDecision:
    """The decision as it was carried out: each replacement joins the experts, marked chosen with the reason."""
    if not replacements:
        return decision
    instead = {r.replacement: r for r in replacements}
    scores = []
    for score in decision.scores:
        replacement = instead.get(score.name)
        if replacement is not None:
            score = score.model_copy(
                update={
                    "chosen": True,
                    "reason": f"chosen: replacement for {replacement.failed!r}, which failed ({replacement.reason})",
                }
            )
        scores.append(score)
    competence = dict(decision.competence)
    if competence:  # measured profiles: the replacement's estimate is its score
        by_name = {score.name: score for score in decision.scores}
        for name in instead:
            competence[name] = by_name[name].contributions.get("competence", by_name[name].score)
    return decision.model_copy(
        update={
            "experts": decision.experts + [r.replacement for r in replacements],
            "scores": scores,
            "competence": competence,
        }
    )


def unfilled(decision: RoutingDecision, replacements: list[Replacement], answered: set[str]) -> list[str]:
    """The recruited experts whose place got no answer: neither they nor their replacements answered."""
    instead = {r.failed: r.replacement for r in replacements}
    missing = []
    for name in decision.experts:
        current: str | None = name
        while current is not None and current not in answered:
            current = instead.get(current)
        if current is None:
            missing.append(name)
    return missing
