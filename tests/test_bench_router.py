"""The router benchmarks' own arithmetic: router_targets' multi-split summary, router_ceiling's knapsack."""

from __future__ import annotations

import pytest
from bench_scripts import load_bench

router_targets = load_bench("router_targets")
router_ceiling = load_bench("router_ceiling")


@pytest.mark.parametrize(("text", "seeds"), [("3", [3]), ("0-3", [0, 1, 2, 3]), ("0,4,7", [0, 4, 7])])
def test_seed_lists(text: str, seeds: list[int]) -> None:
    assert router_targets._seeds(text) == seeds


def test_summary_counts_met_splits_and_spread() -> None:
    def row(name: str, value: float, met: bool) -> dict[str, object]:
        return {"name": name, "goal": "g", "value": value, "met": met}

    runs = [
        [row("gain", 0.05, True), row("apgr", 0.60, False)],
        [row("gain", 0.02, False), row("apgr", 0.70, True)],
        [row("gain", 0.04, True), row("apgr", 0.65, False)],
    ]
    gain, apgr = router_targets.summary(runs)
    assert gain["name"] == "gain" and gain["met_splits"] == 2 and gain["splits"] == 3
    assert gain["mean"] == pytest.approx(0.11 / 3) and gain["min"] == 0.02 and gain["max"] == 0.05
    assert apgr["met_splits"] == 1 and apgr["mean"] == pytest.approx(0.65)


def test_cheapest_mix_picks_the_least_cost_per_group_that_reaches_the_count() -> None:
    strategy = router_ceiling.Strategy
    groups = [
        [strategy("big", 8, 80.0), strategy("small", 6, 10.0), strategy("cascade", 7, 30.0)],
        [strategy("big", 9, 90.0), strategy("small", 5, 10.0)],
    ]
    # with group 2 on big: small 15 at 100, cascade 16 at 120, big 17 at 170
    cost, chosen = router_ceiling.cheapest_mix(groups, 17)
    assert cost == 170.0 and [s.name for s in chosen] == ["big", "big"]
    cost, chosen = router_ceiling.cheapest_mix(groups, 15)  # small + big = 15 at 100; cascade + big = 16 at 120
    assert cost == 100.0 and [s.name for s in chosen] == ["small", "big"]
    cost, chosen = router_ceiling.cheapest_mix(groups, 11)
    assert cost == 20.0 and [s.name for s in chosen] == ["small", "small"]
    cost, chosen = router_ceiling.cheapest_mix(groups, 18)
    assert cost == float("inf") and chosen == []


def test_targets_read_the_hull_at_the_cost_the_policy_spent() -> None:
    import numpy as np

    from router._outcome_table import OutcomeTable

    # two models: cheap (cost 1, right on 1 of 2) and dear (cost 3, right on both)
    table = OutcomeTable(
        source="<two>",
        ids=["q1", "q2"],
        texts=["a", "b"],
        experts=["cheap", "dear"],
        correct=np.array([[1.0, 1.0], [0.0, 1.0]]),
        cost=np.array([[1.0, 3.0], [1.0, 3.0]]),
    )
    report = router_targets._with_hull({"mean_cost": 2.0}, table)
    assert report["hull_accuracy"] == pytest.approx(0.75)  # half and half: 0.5 x 0.5 + 0.5 x 1.0
    options = router_targets._cost_options(0.5)(router_targets.CompetenceSettings(), 3)
    assert (options.policy, options.budget_factor, options.settings.k, options.seed) == ("cost", 0.5, None, 3)
