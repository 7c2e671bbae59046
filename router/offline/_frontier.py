"""The cost-quality frontier of a routing policy, against what a user gets without a router.

Without a router, a user who wants to spend a given mean cost per question can still mix single models at random:
send each question to model A with probability p and to model B otherwise. Every such mix has the mean cost and the
mean accuracy of the two models interpolated, so the best accuracy reachable at a mean cost C is the upper concave
hull of the single models' (cost, accuracy) points at C (spending less than C is allowed). A router earns its keep
only above that hull. ``pool_apgr`` summarises a frontier like RouteLLM's APGR: 0.5 on the hull, 1.0 at the
per-question oracle, averaged over the budgets measured.

Pure arithmetic on measured points: no model, no I/O. ``evaluate.measure_frontier`` runs a policy at each budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from router._cost_mix import CostPoint
from router._outcome_table import OutcomeTable

DEFAULT_BUDGETS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class FrontierRow:
    """A policy at one budget (x the best single model's mean cost), beside the random-mix hull at its cost."""

    budget: float
    accuracy: float
    mean_cost: float
    hull_accuracy: float


def single_model_points(test: OutcomeTable) -> list[CostPoint]:
    """Each expert alone on every test question (unanswered questions count as wrong, as in the evaluation)."""
    if test.cost is None:
        raise ValueError("the outcome table has no cost columns: a cost frontier needs each model's cost")
    correct = np.nan_to_num(test.correct)
    costs = np.nan_to_num(test.cost)
    return [
        CostPoint(name, float(costs[:, column].mean()), float(correct[:, column].mean()))
        for column, name in enumerate(test.experts)
    ]


def pool_apgr(rows: list[FrontierRow], oracle_accuracy: float) -> float:
    """0.5 + half the mean share of the gap from the hull to the oracle that the policy closes, over the budgets.

    0.5: on the random-mix hull at every budget; 1.0: the per-question oracle's accuracy at every budget; below 0.5:
    under the hull. Budgets whose hull is undefined (cheaper than every model) or already at the oracle are skipped.
    """
    shares = [
        (row.accuracy - row.hull_accuracy) / (oracle_accuracy - row.hull_accuracy)
        for row in rows
        if not math.isnan(row.hull_accuracy) and oracle_accuracy > row.hull_accuracy
    ]
    if not shares:
        return math.nan
    return 0.5 + 0.5 * float(np.mean(shares))
