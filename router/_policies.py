"""Recruiting policies: from per-query competence estimates to the experts that answer.

- ``skills`` (Symbolic-MoE): rank by competence x global competence^w; take experts without
  replacement (greedy, or sampled with a temperature); adaptive k adds experts while the
  estimated chance that at least one of them is right is below ``target``, up to ``max_experts``.
- ``category`` (Composition of Experts): the predicted category's best expert.
- ``cost``: an optimiser over plans (``router/_plans.py``): each single expert, each top-k set, an
  escalation; the plan maximising estimated accuracy - lambda x expected cost wins, within a per-query
  ``budget`` when one is set. Without fitted plan estimates only single experts are candidates.
- ``cascade`` (Language Model Cascades): the cheapest expert unless its estimated competence
  is below ``cascade_threshold``, then the strongest.
- ``escalate`` (answer-aware cascade): the two most competent of the cheaper half answer first; a
  second stage (the most competent of the rest) is asked only when they disagree or their mean
  competence is below ``escalate_threshold``. The pipeline decides after the first stage's answers.
Out-of-distribution queries go to the generalist under every policy. Each selection says,
for every expert, why it was or was not chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from router._cost_mix import Mix
from router._plans import PlanEstimate, PlanKey, escalation_key

PolicyName = Literal["skills", "category", "cost", "cascade", "escalate"]
POLICIES: tuple[str, ...] = ("skills", "category", "cost", "cascade", "escalate")


@dataclass(frozen=True)
class PolicySettings:
    max_experts: int = 3
    k: int | None = None  # a fixed k; None means adaptive
    target: float = 0.9  # adaptive k: stop once P(some chosen expert is right) reaches this
    temperature: float = 0.0  # 0: greedy; > 0: sample without replacement
    global_weight: float = 0.0  # exponent of global competence in the skills score
    cost_lambda: float = 0.0
    budget: float | None = None  # per-query cap on expected cost
    cascade_threshold: float = 0.5
    escalate_threshold: float = 0.0  # escalate: the first stage's mean competence needed to stop on agreement
    mix: Mix | None = None  # cost: the random mix of two experts that beat the optimiser at this budget


@dataclass(frozen=True)
class QueryView:
    """What a policy sees of one query."""

    competence: np.ndarray  # (E,)
    global_competence: np.ndarray  # (E,)
    category_probs: np.ndarray  # (C,)
    category_best: np.ndarray  # (C,) index of each category's best expert
    expected_cost: np.ndarray | None  # (E,)
    ood: bool
    generalist: int
    plans: list[PlanEstimate] | None = None  # the cost optimiser's candidates, estimated (router/_plans.py)
    category_names: tuple[str, ...] = ()  # (C,) the categories' names, for the reasons a decision gives


@dataclass
class Selection:
    experts: list[int]
    scores: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)
    fallback: bool = False
    then: list[int] = field(default_factory=list)  # a second stage, asked only if the first does not settle it
    plan: PlanEstimate | None = None  # the cost optimiser's choice
    considered: list[PlanEstimate] = field(default_factory=list)  # every plan it weighed


def select(policy: str, view: QueryView, settings: PolicySettings, rng: np.random.Generator) -> Selection:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if view.ood:
        scores = view.competence
        chosen = Selection([view.generalist], scores, fallback=True)
        chosen.reasons[view.generalist] = "chosen: out-of-distribution query, generalist fallback"
        return _explain_rest(chosen, "not chosen: out-of-distribution query goes to the generalist")
    if policy == "skills":
        return _skills(view, settings, rng)
    if policy == "category":
        category = int(np.argmax(view.category_probs))
        best = int(view.category_best[category])
        chosen = Selection([best], view.competence)
        name = view.category_names[category] if category < len(view.category_names) else f"#{category}"
        chosen.reasons[best] = f"chosen: best measured expert for predicted category {name!r}"
        return _explain_rest(chosen, "not chosen: not the predicted category's best expert")
    if policy == "cost":
        if settings.mix is not None and view.plans is not None:
            return _mixed(view, settings.mix, rng)
        return _cost(view, settings)
    if policy == "escalate":
        return _escalate(view, settings)
    return _cascade(view, settings)


def set_success(competence: np.ndarray) -> float:
    """Estimated chance that at least one of the experts is right (independence assumed)."""
    return float(1.0 - np.prod(1.0 - np.clip(competence, 0.0, 1.0)))


def _order(scores: np.ndarray, temperature: float, rng: np.random.Generator) -> list[int]:
    if temperature <= 0:
        return [int(i) for i in np.argsort(-scores, kind="stable")]
    logits = np.log(np.clip(scores, 1e-9, None)) / temperature
    weights = np.exp(logits - logits.max())
    return [int(i) for i in rng.choice(len(scores), size=len(scores), replace=False, p=weights / weights.sum())]


def _take(order: list[int], view: QueryView, settings: PolicySettings, selection: Selection) -> Selection:
    limit = settings.k or settings.max_experts
    for index in order:
        if len(selection.experts) >= limit:
            selection.reasons.setdefault(index, f"not chosen: the set is full ({limit})")
            continue
        adaptive_done = (
            settings.k is None
            and selection.experts
            and (set_success(view.competence[selection.experts]) >= settings.target)
        )
        if adaptive_done:
            selection.reasons.setdefault(index, f"not chosen: the chosen set already reaches {settings.target:.2f}")
            continue
        selection.experts.append(index)
        selection.reasons[index] = f"chosen: rank {len(selection.experts)}, score {selection.scores[index]:.3f}"
    return selection


def _skills(view: QueryView, settings: PolicySettings, rng: np.random.Generator) -> Selection:
    scores = view.competence * np.power(np.clip(view.global_competence, 1e-9, None), settings.global_weight)
    return _take(_order(scores, settings.temperature, rng), view, settings, Selection([], scores))


def _cost(view: QueryView, settings: PolicySettings) -> Selection:
    """The plan with the most estimated accuracy - lambda x expected cost (within ``budget`` when set)."""
    plans = view.plans if view.plans is not None else _single_plans(view)
    limit = settings.k or settings.max_experts
    plans = [plan for plan in plans if len(plan.key.members) <= limit] or _single_plans(view)
    affordable = [plan for plan in plans if settings.budget is None or plan.cost <= settings.budget]
    over_budget = not affordable
    if over_budget:  # nothing fits the per-query budget: the cheapest plan
        affordable = [min(plans, key=lambda plan: plan.cost)]
    values = np.array([plan.accuracy - settings.cost_lambda * plan.cost for plan in affordable])
    best = affordable[int(np.argmax(values))]
    first = sorted(best.key.first, key=lambda i: (-view.competence[i], i))
    scores = view.competence - settings.cost_lambda * _cost_of(view)
    selection = Selection(first, scores, then=list(best.key.then), plan=best, considered=list(plans))
    why = "nothing fits the budget, cheapest plan" if over_budget else "best estimated accuracy - lambda x cost"
    for index in first:
        selection.reasons[index] = (
            f"chosen: {why} (plan accuracy {best.accuracy:.3f}, cost {best.cost:.0f}, "
            f"lambda {settings.cost_lambda:.3g})"
        )
    for index in best.key.then:
        selection.reasons[index] = f"second stage: asked only if the first disagrees (chance {best.escalation:.2f})"
    return _explain_rest(selection, "not chosen: not in the best plan")


def _mixed(view: QueryView, mix: Mix, rng: np.random.Generator) -> Selection:
    """The budget's random mix: the dearer expert with probability ``mix.share``, else the cheaper one."""
    chosen = mix.dear if rng.random() < mix.share else mix.cheap
    selection = Selection([chosen], view.competence, considered=list(view.plans or []))
    role = "dearer" if chosen == mix.dear else "cheaper"
    selection.reasons[chosen] = (
        f"chosen: this budget is served by a random mix of two experts, this one the {role} "
        f"(the dearer answers {mix.share:.0%} of questions); the optimiser did not clearly beat the mix's "
        f"accuracy on the profiled questions ({mix.accuracy:.3f})"
    )
    other = mix.cheap if chosen == mix.dear else mix.dear
    selection.reasons.setdefault(other, "not chosen this time: the other expert of this budget's random mix")
    return _explain_rest(selection, "not chosen: outside this budget's random mix")


def _single_plans(view: QueryView) -> list[PlanEstimate]:
    """Without fitted plan estimates: each expert alone, its competence as its accuracy."""
    cost = _cost_of(view)
    return [PlanEstimate(PlanKey((e,)), float(view.competence[e]), float(cost[e])) for e in range(len(cost))]


def _cost_of(view: QueryView) -> np.ndarray:
    return view.expected_cost if view.expected_cost is not None else np.zeros_like(view.competence)


def _escalate(view: QueryView, settings: PolicySettings) -> Selection:
    """Two cheaper experts first; the strongest of the rest only if they disagree (or are not competent enough)."""
    key = escalation_key(view.competence, _cost_of(view))
    if key is None:  # fewer than three experts: the most competent answers
        best = int(np.argmax(view.competence))
        selection = Selection([best], view.competence)
        selection.reasons[best] = "chosen: too few experts to escalate, the most competent"
        return _explain_rest(selection, "not chosen: less competent")
    first = sorted(key.first, key=lambda i: (-view.competence[i], i))
    selection = Selection(first, view.competence, then=list(key.then))
    for index in first:
        selection.reasons[index] = (
            f"first stage: among the two most competent of the cheaper half ({view.competence[index]:.3f})"
        )
    strong = key.then[0]
    selection.reasons[strong] = (
        f"second stage: asked if the first stage disagrees or its mean competence is below "
        f"{settings.escalate_threshold:.2f} (own {view.competence[strong]:.3f})"
    )
    return _explain_rest(selection, "not chosen: not among the cheaper half's best two nor the strongest of the rest")


def _cascade(view: QueryView, settings: PolicySettings) -> Selection:
    cost = view.expected_cost if view.expected_cost is not None else -view.global_competence
    weak, strong = int(np.argmin(cost)), int(np.argmax(view.global_competence))
    scores = view.competence[strong] - view.competence  # expected gain of deferring to the strong expert
    chosen_index = weak if view.competence[weak] >= settings.cascade_threshold else strong
    selection = Selection([chosen_index], scores)
    if chosen_index == weak:
        selection.reasons[weak] = (
            f"chosen: weak expert confident ({view.competence[weak]:.2f} >= {settings.cascade_threshold})"
        )
    else:
        selection.reasons[strong] = (
            f"chosen: weak expert unsure ({view.competence[weak]:.2f}), deferred to the strong one"
        )
    return _explain_rest(selection, "not chosen: the cascade uses only its weak and strong experts")


def _explain_rest(selection: Selection, reason: str) -> Selection:
    for index in range(len(selection.scores)):
        selection.reasons.setdefault(index, reason)
    return selection
