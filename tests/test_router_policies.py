"""Every recruiting policy on hand-made competence estimates."""

from __future__ import annotations

import numpy as np
import pytest

from router._cost_mix import Mix
from router._plans import PlanEstimate, PlanKey
from router._policies import PolicySettings, QueryView, select, set_success

RNG = np.random.default_rng(0)


def view(**changes: object) -> QueryView:
    values: dict[str, object] = {
        "competence": np.array([0.3, 0.6, 0.5, 0.2]),
        "global_competence": np.array([0.4, 0.5, 0.45, 0.3]),
        "category_probs": np.array([0.8, 0.2]),
        "category_best": np.array([2, 0]),
        "expected_cost": np.array([10.0, 100.0, 40.0, 5.0]),
        "ood": False,
        "generalist": 1,
    }
    values.update(changes)
    return QueryView(**values)  # type: ignore[arg-type]


def test_skills_fixed_k_takes_the_most_competent_without_replacement() -> None:
    chosen = select("skills", view(), PolicySettings(k=3), RNG)
    assert chosen.experts == [1, 2, 0]
    assert chosen.reasons[3].startswith("not chosen")


def test_skills_adaptive_k_stops_at_the_target() -> None:
    assert set_success(np.array([0.6, 0.5])) == pytest.approx(0.8)
    chosen = select("skills", view(), PolicySettings(max_experts=4, target=0.75), RNG)
    assert chosen.experts == [1, 2]  # 0.6 alone < 0.75; with 0.5: 0.8 >= 0.75
    easy = select("skills", view(competence=np.array([0.1, 0.95, 0.2, 0.1])), PolicySettings(), RNG)
    assert easy.experts == [1]


def test_skills_global_weight_and_sampling() -> None:
    scored = select(
        "skills", view(competence=np.array([0.5, 0.5, 0.5, 0.5])), PolicySettings(k=1, global_weight=1.0), RNG
    )
    assert scored.experts == [1]  # equal locally: global competence decides
    draws = {
        tuple(select("skills", view(), PolicySettings(k=2, temperature=1.0), np.random.default_rng(seed)).experts)
        for seed in range(30)
    }
    assert len(draws) > 1 and all(len(set(d)) == 2 for d in draws)  # sampled, never the same expert twice


def test_category_policy_uses_the_predicted_categorys_best() -> None:
    assert select("category", view(), PolicySettings(), RNG).experts == [2]
    assert select("category", view(category_probs=np.array([0.1, 0.9])), PolicySettings(), RNG).experts == [0]
    named = select("category", view(category_names=("math", "writing")), PolicySettings(), RNG)
    assert named.reasons[2] == "chosen: best measured expert for predicted category 'math'"  # by name, not index


def test_cost_policy_without_plan_estimates_weighs_single_experts() -> None:
    assert select("cost", view(), PolicySettings(cost_lambda=0.0), RNG).experts == [1]
    # competence - 0.01 x cost: 0.3-0.1=0.2, 0.6-1.0=-0.4, 0.5-0.4=0.1, 0.2-0.05=0.15
    chosen = select("cost", view(), PolicySettings(cost_lambda=0.01), RNG)
    assert chosen.experts == [0] and chosen.then == [] and chosen.plan is not None
    assert select("cost", view(), PolicySettings(budget=1.0), RNG).experts == [3]  # nothing fits: cheapest


PLANS = [
    PlanEstimate(PlanKey((1,)), 0.60, 100.0),
    PlanEstimate(PlanKey((0, 2, 3)), 0.65, 55.0),
    PlanEstimate(PlanKey((0, 3), (1,)), 0.62, 45.0, escalation=0.3),  # 15 + 0.3 x 100
    PlanEstimate(PlanKey((3,)), 0.20, 5.0),
]


@pytest.mark.parametrize(
    ("settings", "first", "then"),
    [
        # lambda 0: the most accurate plan, its experts most competent first
        (PolicySettings(cost_lambda=0.0), [2, 0, 3], []),
        # 0.001: 0.60-0.1=0.5, 0.65-0.055=0.595, 0.62-0.045=0.575, 0.2-0.005=0.195
        (PolicySettings(cost_lambda=0.001), [2, 0, 3], []),
        # 0.005: 0.1, 0.375, 0.395, 0.175: the escalation wins
        (PolicySettings(cost_lambda=0.005), [0, 3], [1]),
        # a per-query budget of 50 leaves the escalation and the cheap single: the escalation is more accurate
        (PolicySettings(budget=50.0), [0, 3], [1]),
        # nothing within 1: the cheapest plan
        (PolicySettings(budget=1.0), [3], []),
        # at most one expert: only single plans
        (PolicySettings(k=1), [1], []),
    ],
)
def test_cost_policy_picks_the_plan_with_the_best_accuracy_minus_lambda_cost(
    settings: PolicySettings, first: list[int], then: list[int]
) -> None:
    chosen = select("cost", view(plans=PLANS), settings, RNG)
    assert (chosen.experts, chosen.then) == (first, then)
    assert chosen.plan is not None and list(chosen.plan.key.then) == then
    assert len(chosen.considered) == (2 if settings.k == 1 else 4)
    assert all(chosen.reasons[i].startswith("chosen") for i in first)


def test_cost_policy_serves_its_budgets_random_mix_when_it_has_one() -> None:
    settings = PolicySettings(mix=Mix(cheap=3, dear=1, share=0.25, accuracy=0.4))
    draws = [select("cost", view(plans=PLANS), settings, np.random.default_rng(seed)).experts for seed in range(400)]
    assert {tuple(d) for d in draws} == {(1,), (3,)}
    assert 0.18 < sum(d == [1] for d in draws) / 400 < 0.32  # the dearer expert a quarter of the time
    chosen = select("cost", view(plans=PLANS), settings, RNG)
    assert "random mix" in chosen.reasons[chosen.experts[0]]


def test_escalate_policy_asks_the_cheaper_halfs_best_two_first() -> None:
    # expected cost [10, 100, 40, 5]: the cheaper half is experts 0 and 3; the strongest of the rest is 1 (0.6)
    chosen = select("escalate", view(), PolicySettings(escalate_threshold=0.4), RNG)
    assert (chosen.experts, chosen.then) == ([0, 3], [1])
    assert chosen.reasons[1].startswith("second stage") and "0.40" in chosen.reasons[1]
    assert chosen.reasons[2].startswith("not chosen")
    few = view(competence=np.array([0.3, 0.6]), expected_cost=np.array([1.0, 2.0]), global_competence=np.ones(2))
    assert select("escalate", few, PolicySettings(), RNG).experts == [1]  # too few experts to escalate


def test_cascade_defers_when_the_weak_expert_is_unsure() -> None:
    settings = PolicySettings(cascade_threshold=0.5)
    assert select("cascade", view(), settings, RNG).experts == [1]  # weak (cheapest, #3) has 0.2
    confident = view(competence=np.array([0.3, 0.6, 0.5, 0.7]))
    assert select("cascade", confident, settings, RNG).experts == [3]


def test_out_of_distribution_goes_to_the_generalist_under_every_policy() -> None:
    for policy in ("skills", "category", "cost", "cascade", "escalate"):
        chosen = select(policy, view(ood=True, generalist=0), PolicySettings(), RNG)
        assert chosen.experts == [0] and chosen.fallback


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown policy 'magic'"):
        select("magic", view(), PolicySettings(), RNG)
