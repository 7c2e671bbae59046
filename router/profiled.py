"""The live router over measured profiles: competence per query, then a recruiting policy.

It serves one pool: each pool expert is matched to its profile (``profile_name`` in the pool
file, default its name), competence is estimated for the query, and the chosen policy picks
from the healthy experts. The decision lists, for every expert, its estimated competence
and why it was or was not chosen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from experts.spec import PoolSpec
from router.competence import CompetenceEstimates, CompetenceEstimator
from router.decision import ExpertScore, RoutingDecision
from router.policies import POLICIES, PolicySettings, QueryView, select
from router.profiles import ProfileSet
from router.recruit import NoExpertAvailable


class ProfileMismatch(ValueError):
    """The pool names experts that the profiles do not cover."""


@dataclass(frozen=True)
class QueryEstimate:
    """What ``understand`` learnt about one query."""

    estimates: CompetenceEstimates
    skills: dict[str, float]  # top categories and their probabilities


class ProfiledRouter:
    """Routes a pool's queries with a ``ProfileSet`` measured for (a superset of) its experts."""

    policies: tuple[str, ...] = POLICIES

    def __init__(self, pool: PoolSpec, profiles: ProfileSet) -> None:
        self.pool = pool
        self.profiles = profiles
        self.estimator = CompetenceEstimator(profiles)
        self.names = [expert.name for expert in pool.routable_experts]
        wanted = [expert.profile_name or expert.name for expert in pool.routable_experts]
        missing = [name for name in wanted if name not in profiles.experts]
        if missing:
            raise ProfileMismatch(
                f"profiles (pool {profiles.pool!r}) have no expert(s) {', '.join(missing)}; they cover "
                f"{', '.join(profiles.experts)}. Set profile_name on the pool's experts or rebuild the profiles."
            )
        self.columns = np.array([profiles.experts.index(name) for name in wanted])
        self.global_accuracy = profiles.global_accuracy[self.columns]
        self.category_best = np.argmax(profiles.accuracy[:, self.columns], axis=1)
        generalist = pool.roles.generalist
        self.generalist = (
            self.names.index(generalist) if generalist in self.names else int(np.argmax(self.global_accuracy))
        )
        self.mean_cost = profiles.mean_cost[:, self.columns] if profiles.mean_cost is not None else None
        routing = pool.routing
        self.settings = PolicySettings(
            max_experts=routing.max_experts,
            k=routing.k,
            target=routing.target,
            temperature=routing.temperature,
            cost_lambda=routing.cost_lambda,
            budget=routing.budget_per_query,
            cascade_threshold=routing.cascade_threshold,
        )
        self._rng = np.random.default_rng()

    @property
    def vocabulary(self) -> list[str]:
        return list(self.profiles.categories)

    def understand(self, query: str, hint: dict[str, float] | None = None) -> QueryEstimate:
        """Competence for ``query``; ``hint`` (the keyword expert's categories) is blended into the classifier's."""
        category_hint = None
        if hint:
            category_hint = np.array([hint.get(category, 0.0) for category in self.profiles.categories])
        estimates = self.estimator.estimate([query], category_hint=category_hint)
        probabilities = estimates.category_probs[0]
        top = np.argsort(-probabilities)[:3]
        skills = {
            self.profiles.categories[i]: round(float(probabilities[i]), 4) for i in top if probabilities[i] > 0.01
        }
        return QueryEstimate(estimates, skills)

    def recruit(
        self,
        estimate: QueryEstimate,
        healthy: set[str] | None = None,
        k: int | None = None,
        policy: str | None = None,
        started: float | None = None,
    ) -> RoutingDecision:
        started = time.perf_counter() if started is None else started
        policy = policy or self.pool.routing.policy
        if policy not in POLICIES:
            raise ValueError(f"unknown routing policy {policy!r}; choose one of {', '.join(POLICIES)}")
        usable = [i for i, name in enumerate(self.names) if healthy is None or name in healthy]
        if not usable:
            raise NoExpertAvailable("no routable expert is healthy; check /healthz and the actors' logs")
        est = estimate.estimates
        competence = est.competence[0, self.columns]
        settings = self.settings if k is None else replace(self.settings, k=k)
        generalist = self.generalist if self.generalist in usable else usable[int(np.argmax(competence[usable]))]
        view = QueryView(
            competence=competence[usable],
            global_competence=self.global_accuracy[usable],
            category_probs=est.category_probs[0],
            category_best=np.array([_nearest_usable(best, usable, competence) for best in self.category_best]),
            expected_cost=None if self.mean_cost is None else (est.category_probs[0] @ self.mean_cost)[usable],
            ood=bool(est.ood[0]),
            generalist=usable.index(generalist),
        )
        selection = select(policy, view, settings, self._rng)
        chosen = [usable[i] for i in selection.experts]
        scores = []
        for position, index in enumerate(usable):
            scores.append(
                ExpertScore(
                    name=self.names[index],
                    score=round(float(competence[index]), 4),
                    contributions={
                        "competence": round(float(competence[index]), 4),
                        "global_accuracy": round(float(self.global_accuracy[index]), 4),
                    },
                    chosen=index in chosen,
                    rank=chosen.index(index) + 1 if index in chosen else 0,
                    reason=selection.reasons.get(position, ""),
                )
            )
        scores.sort(key=lambda entry: (not entry.chosen, entry.rank, -entry.score))
        scores += [
            ExpertScore(name=self.names[i], score=0.0, reason="not chosen: unhealthy")
            for i in range(len(self.names))
            if i not in usable
        ]
        return RoutingDecision(
            policy=policy,
            skills=estimate.skills,
            evidence={"nearest_profiled_similarity": [f"{float(est.best_similarity[0]):.3f}"]},
            k=len(chosen),
            experts=[self.names[i] for i in chosen],
            scores=scores,
            fallback=selection.fallback,
            aggregator=self.pool.roles.aggregator if len(chosen) > 1 else None,
            competence={self.names[i]: round(float(competence[i]), 4) for i in chosen},
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )


def _nearest_usable(best: int, usable: list[int], competence: np.ndarray) -> int:
    """A category's best expert, as a position among the usable ones (the most competent if it is down)."""
    if best in usable:
        return usable.index(best)
    return int(np.argmax(competence[usable]))
