"""The cost-quality frontier (``router/_cost_mix.py``, ``router/offline/_frontier.py``): the random-mix hull and
pool APGR by hand, then ``moesaic eval-router --frontier`` on a slice of the shared MMLU-Pro table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_eval_router import run_json, shared_slice
from typer.testing import CliRunner

from orchestrator.cli.main import app
from router._cost_mix import CostPoint, hull_accuracy
from router._outcome_table import OutcomeTable
from router.offline._frontier import FrontierRow, pool_apgr, single_model_points

POINTS = [
    CostPoint("cheap", 1.0, 0.40),
    CostPoint("middle", 2.0, 0.50),
    CostPoint("dominated", 2.5, 0.30),  # dearer and worse than "middle": never on the hull
    CostPoint("dear", 4.0, 0.60),
]


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (1.0, 0.40),
        (1.5, 0.45),  # half cheap, half middle
        (2.0, 0.50),
        (3.0, 0.55),  # half middle, half dear
        (4.0, 0.60),
        (9.0, 0.60),  # more money than the dearest model needs buys nothing more
    ],
)
def test_the_hull_interpolates_between_neighbours_on_the_upper_hull(cost: float, expected: float) -> None:
    assert hull_accuracy(POINTS, cost) == pytest.approx(expected)


def test_below_the_cheapest_model_the_hull_is_undefined_and_a_concave_point_is_skipped() -> None:
    assert math.isnan(hull_accuracy(POINTS, 0.5))
    # "middle" under the straight line from cheap to dear: a mix of those two beats it
    skewed = [CostPoint("cheap", 1.0, 0.40), CostPoint("middle", 2.0, 0.42), CostPoint("dear", 3.0, 0.60)]
    assert hull_accuracy(skewed, 2.0) == pytest.approx(0.50)


def test_pool_apgr_is_half_on_the_hull_and_one_at_the_oracle() -> None:
    on_hull = [FrontierRow(1.0, 0.55, 3.0, 0.55), FrontierRow(0.5, 0.45, 1.5, 0.45)]
    assert pool_apgr(on_hull, oracle_accuracy=0.8) == pytest.approx(0.5)
    at_oracle = [FrontierRow(1.0, 0.8, 3.0, 0.55), FrontierRow(0.5, 0.8, 1.5, 0.45)]
    assert pool_apgr(at_oracle, oracle_accuracy=0.8) == pytest.approx(1.0)
    # a quarter of the gap at one budget (0.05 of 0.20), under the hull at the other (-0.07 of 0.35)
    mixed = [FrontierRow(1.0, 0.65, 3.0, 0.60), FrontierRow(0.5, 0.38, 1.5, 0.45)]
    assert pool_apgr(mixed, oracle_accuracy=0.8) == pytest.approx(0.5 + 0.5 * (0.25 - 0.2) / 2)
    assert math.isnan(pool_apgr([FrontierRow(0.1, 0.3, 0.2, math.nan)], 0.8))


def test_single_model_points_count_unanswered_questions_as_wrong() -> None:
    table = OutcomeTable(
        source="hand",
        ids=["q1", "q2"],
        texts=["a", "b"],
        experts=["x", "y"],
        correct=np.array([[1.0, np.nan], [0.0, 1.0]]),
        cost=np.array([[2.0, 1.0], [4.0, 3.0]]),
    )
    assert single_model_points(table) == [CostPoint("x", 3.0, 0.5), CostPoint("y", 2.0, 0.5)]


def test_eval_router_frontier_on_the_mixed_pool(tmp_path: Path) -> None:
    path = shared_slice(tmp_path, "mmlu_pro_dev.parquet", 600)
    plot = tmp_path / "frontier.png"
    args = ("eval-router", "--outcomes", str(path), "--pool", "mixed", "--policy", "cost", "--frontier")
    report = run_json(*args, "--budgets", "0.25,0.5,1.0", "--plot", str(plot))
    assert [row["budget"] for row in report["frontier"]] == [0.25, 0.5, 1.0]
    costs = [row["mean_cost"] for row in report["frontier"]]
    assert costs == sorted(costs)  # a bigger budget never spends less
    singles = {point["label"]: point for point in report["single_models"]}
    assert len(singles) == len(report["experts"])
    for row in report["frontier"]:
        points = [CostPoint(**point) for point in report["single_models"]]
        assert row["hull_accuracy"] == pytest.approx(hull_accuracy(points, row["mean_cost"]))
    assert 0.0 < report["pool_apgr"] < 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_json(*args, "--budgets", "0.25,0.5,1.0") == {**report}  # deterministic
    refused = CliRunner().invoke(app, [*args, "--budgets", "cheap"])
    assert refused.exit_code == 2 and "--budgets 'cheap' must be numbers" in refused.output
