"""Router v1: score experts by declared skills against the query's skill needs, keep the top k.

An expert's score is the sum over skills of (query need for the skill) x (the expert's
declared competence in it). The best k experts with a positive score answer; ties go to
the generalist role, then to pool-file order. An expert that declares none of the needed
skills is never recruited just to fill k. When no healthy expert has a positive score (the
query shows no known skill, or those who have it are down), the generalist answers alone:
Composition of Experts' fallback for out-of-distribution queries.
"""

from __future__ import annotations

import time

from experts.config import PoolSpec
from router._decision import ExpertScore, RoutingDecision
from router._lexical import LexicalSkillScorer, SkillEstimate


class NoExpertAvailable(RuntimeError):
    """Every routable expert is unhealthy."""


class PolicyUnavailable(ValueError):
    """The request asks for a policy (or a budget) this pool's router cannot run; ``param`` names the field."""

    def __init__(self, message: str, param: str = "model") -> None:
        super().__init__(message)
        self.param = param


class SkillRouter:
    """Chooses k experts per query from the pool's routable experts (declared skills, no profiles)."""

    policies: tuple[str, ...] = ("skills",)

    def __init__(self, pool: PoolSpec) -> None:
        self.pool = pool
        skills = [skill for expert in pool.routable_experts for skill in expert.skills]
        self.scorer = LexicalSkillScorer(skills, pool.skill_keywords)

    @property
    def vocabulary(self) -> list[str]:
        return self.scorer.skills

    def understand(self, query: str, hint: dict[str, float] | None = None) -> SkillEstimate:
        """Lexical skills of ``query``, blended with ``hint`` (the keyword expert's skills) when given."""
        estimate = self.scorer.score(query)
        return estimate.blended(hint, "<keyword expert>") if hint else estimate

    def recruit(
        self,
        estimate: SkillEstimate,
        healthy: set[str] | None = None,
        k: int | None = None,
        policy: str | None = None,
        started: float | None = None,
        budget: float | None = None,
    ) -> RoutingDecision:
        """Rank healthy routable experts for ``estimate`` and choose the best ``k``."""
        if policy not in (None, "skills"):
            raise PolicyUnavailable(
                f"policy {policy!r} needs measured expert profiles; add routing.profiles to the pool file "
                "(build them with `moesaic profile`)"
            )
        if budget is not None:
            raise PolicyUnavailable(
                "a cost budget needs measured expert profiles (the cost and escalate policies); add "
                "routing.profiles to the pool file (build them with `moesaic profile`)",
                param="moesaic.budget",
            )
        started = time.perf_counter() if started is None else started
        wanted = k or self.pool.routing.k or self.pool.routing.max_experts
        generalist = self.pool.roles.generalist
        order = {expert.name: position for position, expert in enumerate(self.pool.experts)}
        candidates: list[ExpertScore] = []
        unavailable: list[ExpertScore] = []
        for expert in self.pool.routable_experts:
            contributions = {
                skill: need * expert.skills[skill] for skill, need in estimate.scores.items() if skill in expert.skills
            }
            entry = ExpertScore(
                name=expert.name, score=round(sum(contributions.values()), 4), contributions=contributions
            )
            (candidates if healthy is None or expert.name in healthy else unavailable).append(entry)
        if not candidates:
            raise NoExpertAvailable("no routable expert is healthy; check /healthz and the actors' logs")
        candidates.sort(key=lambda e: (-e.score, e.name != generalist, order[e.name]))
        relevant = [entry for entry in candidates if entry.score > 0]
        fallback = not relevant  # nobody healthy declares the skills needed: one expert, the generalist first
        chosen = candidates[:1] if fallback else relevant[:wanted]
        chosen_names = {entry.name for entry in chosen}
        for rank, entry in enumerate(candidates, start=1):
            entry.rank = rank
            entry.chosen = entry.name in chosen_names
            entry.reason = _reason(entry, wanted, fallback, generalist)
        for entry in unavailable:
            entry.reason = "not chosen: unhealthy"
        return RoutingDecision(
            skills={skill: round(need, 4) for skill, need in estimate.scores.items()},
            evidence=estimate.evidence,
            k=len(chosen),
            experts=[entry.name for entry in chosen],
            scores=candidates + unavailable,
            fallback=fallback,
            aggregator=self.pool.roles.aggregator if len(chosen) > 1 else None,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )


def _reason(entry: ExpertScore, k: int, fallback: bool, generalist: str | None) -> str:
    detail = ", ".join(f"{skill} {value:.2f}" for skill, value in entry.contributions.items()) or "no matching skill"
    if fallback and entry.chosen:
        who = "the generalist" if entry.name == generalist else "no generalist available, first in the pool"
        return f"chosen: fallback ({who}); no healthy expert declares a skill the query needs"
    if entry.chosen:
        return f"chosen: rank {entry.rank}, score {entry.score:.2f} ({detail})"
    if entry.score <= 0:
        return "not chosen: declares none of the skills the query needs"
    return f"not chosen: rank {entry.rank} with score {entry.score:.2f} ({detail}); at most {k} answer"
