"""The live router over measured profiles: competence per query, then a recruiting policy.

It serves one pool: each pool expert is matched to its profile (``profile_name`` in the pool
file, default its name), competence is estimated for the query, and the chosen policy picks
from the healthy experts. The decision lists, for every expert, its estimated competence
and why it was or was not chosen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from experts.config import PoolSpec
from router._competence import CompetenceEstimates, CompetenceEstimator
from router._decision import Escalation, ExpertScore, PlanScore, RoutingDecision
from router._plans import PlanData, PlanEstimate, PlanModel, fit_escalate_threshold
from router._policies import POLICIES, PolicySettings, QueryView, Selection, select
from router._profiles import ProfileSet
from router._recruit import NoExpertAvailable, PolicyUnavailable

logger = logging.getLogger("moesaic.router")
PLAN_POLICIES = ("cost", "escalate")  # policies whose choices depend on plans fitted on the profiled questions


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
            escalate_threshold=routing.escalate_threshold,
        )
        self._rng = np.random.default_rng()
        self._plan_data: PlanData | None = None
        self._plan_model: PlanModel | None = None
        self._thresholds: dict[float, float] = {}
        if routing.policy == "cost":
            self.plan_model()  # fitted at start-up, not on the first request

    def plan_model(self) -> PlanModel:
        """The cost optimiser's plan model over this pool's experts, fitted once on the profiled questions."""
        if self._plan_model is None:
            started = time.perf_counter()
            self._plan_model = PlanModel.fit(self._plans_data(), self.settings.max_experts)
            logger.info(
                "fitted the plan model on %d profiled questions in %.1f s",
                len(self.profiles.query_ids),
                time.perf_counter() - started,
            )
        return self._plan_model

    def _plans_data(self) -> PlanData:
        if self._plan_data is None:
            full = PlanData.from_profiles(self.profiles, self.estimator.settings)
            columns = self.columns
            self._plan_data = PlanData(
                full.competence[:, columns],
                full.expected_cost[:, columns],
                full.actual_cost[:, columns],
                full.correct[:, columns],
                None if full.preds is None else full.preds[:, columns],
            )
        return self._plan_data

    def best_single_cost(self) -> float | None:
        """Mean cost of the pool's best single expert on the profiled questions (the unit of a budget F)."""
        if self.mean_cost is None:
            return None
        global_cost = self.profiles.global_cost
        assert global_cost is not None
        return float(global_cost[self.columns][int(np.argmax(self.global_accuracy))])

    def _budgeted(self, policy: str, settings: PolicySettings, budget: float | None) -> PolicySettings:
        """Settings with lambda (``cost``) or the threshold (``escalate``) fitted for a mean-cost budget of F."""
        budget = budget if budget is not None else self.pool.routing.budget
        if budget is None or policy not in PLAN_POLICIES:
            return settings
        unit = self.best_single_cost()
        if unit is None:
            raise PolicyUnavailable(
                "a budget needs each expert's cost, and these profiles have none; "
                "profile with an outcome table that has <expert>|chars columns",
                param="moesaic.budget",
            )
        cap = budget * unit
        if policy == "cost":
            choice = self.plan_model().budget_choice(cap)
            return replace(settings, cost_lambda=choice.penalty, mix=choice.mix)
        key = round(cap, 9)
        if key not in self._thresholds:
            self._thresholds[key] = fit_escalate_threshold(self._plans_data(), cap)
        return replace(settings, escalate_threshold=self._thresholds[key])

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
        budget: float | None = None,
    ) -> RoutingDecision:
        """Choose experts for ``estimate``; ``budget`` (F x the best single expert's mean cost) for cost/escalate."""
        started = time.perf_counter() if started is None else started
        policy = policy or self.pool.routing.policy
        if policy not in POLICIES:
            raise ValueError(f"unknown routing policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if budget is not None and policy not in PLAN_POLICIES:
            raise PolicyUnavailable(
                f"a budget applies to the cost and escalate policies (model moesaic/cost or moesaic/escalate); "
                f"this request's policy is {policy!r}",
                param="moesaic.budget",
            )
        usable = [i for i, name in enumerate(self.names) if healthy is None or name in healthy]
        if not usable:
            raise NoExpertAvailable("no routable expert is healthy; check /healthz and the actors' logs")
        est = estimate.estimates
        competence = est.competence[0, self.columns]
        settings = self.settings if k is None else replace(self.settings, k=k)
        settings = self._budgeted(policy, settings, budget)
        generalist = self.generalist if self.generalist in usable else usable[int(np.argmax(competence[usable]))]
        expected_cost = np.zeros(len(self.names)) if self.mean_cost is None else est.category_probs[0] @ self.mean_cost
        view = QueryView(
            competence=competence[usable],
            global_competence=self.global_accuracy[usable],
            category_probs=est.category_probs[0],
            category_best=np.array([_nearest_usable(best, usable, competence) for best in self.category_best]),
            expected_cost=None if self.mean_cost is None else expected_cost[usable],
            ood=bool(est.ood[0]),
            generalist=usable.index(generalist),
            plans=self._plans(policy, competence, expected_cost, usable, settings),
            category_names=tuple(self.profiles.categories),
        )
        selection = select(policy, view, settings, self._rng)
        chosen = [usable[i] for i in selection.experts]
        then = [usable[i] for i in selection.then]
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
        plans = self._plan_scores(selection, usable, settings) if policy == "cost" else []
        return RoutingDecision(
            policy=policy,
            skills=estimate.skills,
            evidence={"nearest_profiled_similarity": [f"{float(est.best_similarity[0]):.3f}"]},
            k=len(chosen),
            experts=[self.names[i] for i in chosen],
            scores=scores,
            fallback=selection.fallback,
            aggregator=self.pool.roles.aggregator if len(chosen) > 1 else None,
            competence={self.names[i]: round(float(competence[i]), 4) for i in chosen + then},
            plans=plans,
            cost_lambda=settings.cost_lambda if policy == "cost" else None,
            budget=(budget if budget is not None else self.pool.routing.budget) if policy in PLAN_POLICIES else None,
            escalation=self._escalation(selection, usable, policy, settings) if then else None,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _plans(
        self,
        policy: str,
        competence: np.ndarray,
        expected_cost: np.ndarray,
        usable: list[int],
        settings: PolicySettings,
    ) -> list[PlanEstimate] | None:
        """The cost optimiser's candidates over the usable experts (all healthy: the fitted plans; else singles)."""
        if policy != "cost":
            return None
        if len(usable) != len(self.names):  # plans are fitted over the whole pool: singles of the healthy ones
            return None
        return self.plan_model().estimate(competence, expected_cost, settings.k)

    def _plan_scores(self, selection: Selection, usable: list[int], settings: PolicySettings) -> list[PlanScore]:
        names = [self.names[i] for i in usable]
        chosen = selection.plan
        scores = []
        for plan in sorted(selection.considered, key=lambda p: -(p.accuracy - settings.cost_lambda * p.cost)):
            value = plan.accuracy - settings.cost_lambda * plan.cost
            won = chosen is not None and plan.key == chosen.key
            if chosen is None:
                reason = "not chosen: at this budget a random mix of two experts serves (see the chosen expert)"
            elif won:
                reason = "chosen: the highest estimated accuracy - lambda x cost"
            elif settings.budget is not None and plan.cost > settings.budget:
                reason = f"not chosen: expected cost over the per-query budget {settings.budget:.0f}"
            else:
                reason = f"not chosen: value {value:.4f} below the chosen plan's"
            scores.append(
                PlanScore(
                    experts=[names[i] for i in plan.key.first],
                    then=[names[i] for i in plan.key.then],
                    kind=plan.key.kind.value,
                    estimated_accuracy=round(plan.accuracy, 4),
                    expected_cost=round(plan.cost, 2),
                    escalation_chance=round(plan.escalation, 4),
                    value=round(value, 6),
                    chosen=won,
                    reason=reason,
                )
            )
        return scores

    def _escalation(self, selection: Selection, usable: list[int], policy: str, settings: PolicySettings) -> Escalation:
        threshold = settings.escalate_threshold if policy == "escalate" else 0.0
        return Escalation(
            then=[self.names[usable[i]] for i in selection.then],
            threshold=round(threshold, 4),
        )


def _nearest_usable(best: int, usable: list[int], competence: np.ndarray) -> int:
    """A category's best expert, as a position among the usable ones (the most competent if it is down)."""
    if best in usable:
        return usable.index(best)
    return int(np.argmax(competence[usable]))
