"""Recruiting policies: from per-query competence estimates to the experts that answer.

- ``skills`` (Symbolic-MoE): rank by competence x global competence^w; take experts without
  replacement (greedy, or sampled with a temperature); adaptive k adds experts while the
  estimated chance that at least one of them is right is below ``target``, up to ``max_experts``.
- ``category`` (Composition of Experts): the predicted category's best expert.
- ``cost``: most competence per cost: maximise competence - lambda x cost, or add experts by
  competence while the expected cost stays under a per-query ``budget``.
- ``cascade`` (Language Model Cascades): the cheapest expert unless its estimated competence
  is below ``cascade_threshold``, then the strongest.
Out-of-distribution queries go to the generalist under every policy. Each selection says,
for every expert, why it was or was not chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

PolicyName = Literal["skills", "category", "cost", "cascade"]
POLICIES: tuple[str, ...] = ("skills", "category", "cost", "cascade")


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


@dataclass
class Selection:
    experts: list[int]
    scores: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)
    fallback: bool = False


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
        chosen.reasons[best] = f"chosen: best measured expert for predicted category #{category}"
        return _explain_rest(chosen, "not chosen: not the predicted category's best expert")
    if policy == "cost":
        return _cost(view, settings)
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
    cost = view.expected_cost if view.expected_cost is not None else np.zeros_like(view.competence)
    scores = view.competence - settings.cost_lambda * cost
    selection = Selection([], scores)
    if settings.budget is None:
        return _take([int(i) for i in np.argsort(-scores, kind="stable")], view, settings, selection)
    spent = 0.0
    limit = settings.k or settings.max_experts
    for index in [int(i) for i in np.argsort(-view.competence, kind="stable")]:
        if spent + cost[index] > settings.budget:
            selection.reasons[index] = (
                f"not chosen: would exceed the budget ({spent + cost[index]:.0f} > {settings.budget:.0f})"
            )
        elif len(selection.experts) >= limit or (
            settings.k is None
            and selection.experts
            and set_success(view.competence[selection.experts]) >= settings.target
        ):
            selection.reasons[index] = "not chosen: the set is complete"
        else:
            selection.experts.append(index)
            spent += cost[index]
            selection.reasons[index] = f"chosen: competence {view.competence[index]:.3f} at cost {cost[index]:.0f}"
    if not selection.experts:  # nothing fits: the cheapest expert answers
        cheapest = int(np.argmin(cost))
        selection.experts.append(cheapest)
        selection.reasons[cheapest] = "chosen: nothing fits the budget, cheapest expert"
    return selection


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
