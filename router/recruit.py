"""Router v1: score experts by declared skills against the query's skill needs, keep the top k.

An expert's score is the sum over skills of (query need for the skill) x (the expert's
declared competence in it). Ties go to the generalist role, then to pool-file order. When
the query shows no skill evidence at all, the generalist leads (Composition of Experts'
fallback for out-of-distribution queries).
"""

from __future__ import annotations

import time

from experts.spec import PoolSpec
from router.decision import ExpertScore, RoutingDecision
from router.lexical import LexicalSkillScorer, SkillEstimate


class NoExpertAvailable(RuntimeError):
    """Every routable expert is unhealthy."""


class SkillRouter:
    """Chooses k experts per query from the pool's routable experts."""

    def __init__(self, pool: PoolSpec) -> None:
        self.pool = pool
        skills = [skill for expert in pool.routable_experts for skill in expert.skills]
        self.scorer = LexicalSkillScorer(skills, pool.skill_keywords)

    def understand(self, query: str) -> SkillEstimate:
        return self.scorer.score(query)

    def recruit(
        self,
        estimate: SkillEstimate,
        healthy: set[str] | None = None,
        k: int | None = None,
        started: float | None = None,
    ) -> RoutingDecision:
        """Rank healthy routable experts for ``estimate`` and choose the best ``k``."""
        started = time.perf_counter() if started is None else started
        wanted = k or self.pool.routing.k
        generalist = self.pool.roles.generalist
        order = {expert.name: position for position, expert in enumerate(self.pool.experts)}
        candidates: list[ExpertScore] = []
        unavailable: list[ExpertScore] = []
        for expert in self.pool.routable_experts:
            contributions = {
                skill: need * expert.skills[skill] for skill, need in estimate.scores.items() if skill in expert.skills
            }
            entry = ExpertScore(name=expert.name, score=round(sum(contributions.values()), 4), contributions=contributions)
            (candidates if healthy is None or expert.name in healthy else unavailable).append(entry)
        if not candidates:
            raise NoExpertAvailable("no routable expert is healthy; check /healthz and the actors' logs")
        candidates.sort(key=lambda e: (-e.score, e.name != generalist, order[e.name]))
        chosen_count = min(wanted, len(candidates))
        for rank, entry in enumerate(candidates, start=1):
            entry.rank = rank
            entry.chosen = rank <= chosen_count
            entry.reason = _reason(entry, chosen_count, estimate.found_any, generalist)
        for entry in unavailable:
            entry.reason = "not chosen: unhealthy"
        return RoutingDecision(
            skills={skill: round(need, 4) for skill, need in estimate.scores.items()},
            evidence=estimate.evidence,
            k=chosen_count,
            experts=[entry.name for entry in candidates[:chosen_count]],
            scores=candidates + unavailable,
            fallback=not estimate.found_any,
            aggregator=self.pool.roles.aggregator if chosen_count > 1 else None,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )


def _reason(entry: ExpertScore, k: int, evidence: bool, generalist: str | None) -> str:
    detail = ", ".join(f"{skill} {value:.2f}" for skill, value in entry.contributions.items()) or "no matching skill"
    if not evidence and entry.name == generalist:
        return f"chosen: generalist fallback (rank {entry.rank}, no skill evidence in the query)"
    if entry.chosen:
        return f"chosen: rank {entry.rank}, score {entry.score:.2f} ({detail})"
    return f"not chosen: rank {entry.rank} with score {entry.score:.2f} ({detail}); only the top {k} answer"
