"""The cost-quality frontier of a routing policy, against what a user gets without a router.

Without a router, a user who wants to spend a given mean cost per question can still mix single models at random:
send each question to model A with probability p and to model B otherwise. Every such mix has the mean cost and the
mean accuracy of the two models interpolated, so the best accuracy reachable at a mean cost C is the upper concave
hull of the single models' (cost, accuracy) points at C (spending less than C is allowed). A router earns its keep
only above that hull. ``pool_apgr`` summarises a frontier like RouteLLM's APGR: 0.5 on the hull, 1.0 at the
per-question oracle, averaged over the budgets measured.

Pure arithmetic on measured points: no model, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from router.outcomes import OutcomeTable

DEFAULT_BUDGETS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class CostPoint:
    """One way of answering the test questions: its mean cost per question and its accuracy."""

    label: str
    mean_cost: float
    accuracy: float


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


@dataclass(frozen=True)
class Mix:
    """Send a question to ``dear`` with probability ``share``, else to ``cheap`` (indices into the points)."""

    cheap: int
    dear: int
    share: float
    accuracy: float


def best_mix(points: list[CostPoint], mean_cost: float) -> Mix | None:
    """The random mix of two single models (or one alone: share 0) most accurate at a mean cost <= ``mean_cost``.

    None when even the cheapest model costs more than ``mean_cost``.
    """
    affordable = [i for i, point in enumerate(points) if point.mean_cost <= mean_cost]
    if not affordable:
        return None
    alone = max(affordable, key=lambda i: (points[i].accuracy, -points[i].mean_cost))
    best = Mix(alone, alone, 0.0, points[alone].accuracy)
    for cheap in affordable:  # a mix of a cheaper and a dearer model, spending exactly mean_cost
        for dear, point in enumerate(points):
            if point.mean_cost > mean_cost and point.accuracy > points[cheap].accuracy:
                share = (mean_cost - points[cheap].mean_cost) / (point.mean_cost - points[cheap].mean_cost)
                accuracy = points[cheap].accuracy + share * (point.accuracy - points[cheap].accuracy)
                if accuracy > best.accuracy:
                    best = Mix(cheap, dear, share, accuracy)
    return best


def hull_accuracy(points: list[CostPoint], mean_cost: float) -> float:
    """The best accuracy a random mix of single models reaches at a mean cost of at most ``mean_cost``.

    NaN when even the cheapest model costs more than ``mean_cost``.
    """
    mix = best_mix(points, mean_cost)
    return math.nan if mix is None else mix.accuracy


def hull_curve(points: list[CostPoint], steps: int = 100) -> list[CostPoint]:
    """The random-mix hull sampled at ``steps + 1`` costs from the cheapest to the dearest model, for plots."""
    low, high = min(p.mean_cost for p in points), max(p.mean_cost for p in points)
    costs = [low + (high - low) * i / steps for i in range(steps + 1)]
    return [CostPoint("random mix", cost, hull_accuracy(points, cost)) for cost in costs]


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


def measure_frontier(
    train: OutcomeTable, test: OutcomeTable, options: object, budgets: tuple[float, ...] = DEFAULT_BUDGETS
) -> dict[str, object]:
    """The policy of ``options`` (an ``EvalOptions``) at each budget, the hull at its cost, and the summary.

    Each budget F caps the policy's mean cost at F x the best single model's mean cost on the training questions
    (``evaluate``'s ``budget_factor``); the hull is read at the cost the policy actually spent on the test questions.
    """
    from dataclasses import replace

    from router.evaluate import EvalOptions, Fitted, evaluate

    assert isinstance(options, EvalOptions)
    points = single_model_points(test)
    fitted = Fitted.on(train, options.competence)
    rows: list[FrontierRow] = []
    for budget in budgets:
        report = evaluate(train, test, replace(options, budget_factor=budget), fitted)
        spent = float(report["mean_cost"])  # type: ignore[arg-type]
        accuracy = float(report["accuracy"])  # type: ignore[arg-type]
        rows.append(FrontierRow(budget, accuracy, spent, hull_accuracy(points, spent)))
    oracle = float(np.nan_to_num(test.correct).max(axis=1).mean())
    return {
        "frontier": [asdict(row) for row in rows],
        "pool_apgr": pool_apgr(rows, oracle),
        "single_models": [asdict(point) for point in points],
        "hull": [asdict(point) for point in hull_curve(points)],
        "frontier_oracle_accuracy": oracle,
    }
