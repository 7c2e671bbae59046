"""What a user gets without a router: random mixes of single models, and the best one at a mean cost.

A user who wants to spend a given mean cost per question can mix single models at random: send each question to model
A with probability p and to model B otherwise. Every such mix has the mean cost and the mean accuracy of the two models
interpolated, so the best accuracy reachable at a mean cost C is the upper concave hull of the single models' (cost,
accuracy) points at C (spending less than C is allowed). The ``cost`` policy plans against it live; the offline
frontier (``router.offline._frontier``) measures a router against it.

Pure arithmetic on measured points: no model, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CostPoint:
    """One way of answering the test questions: its mean cost per question and its accuracy."""

    label: str
    mean_cost: float
    accuracy: float


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
