"""Metrics for judging a router offline: weighted vote, and RouteLLM's APGR and CPT.

RouteLLM's definitions: sort queries by the router's score (highest = most worth the strong
model); calling the strong model for the top x share gives quality(x). APGR is the area
under quality(x) over x in [0, 1], as a share of the strong-weak gap; CPT(p) is the smallest
strong-call share whose quality recovers p of that gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def weighted_vote(predictions: Sequence[str | None], weights: Sequence[float]) -> str | None:
    """The answer with the largest summed weight; ties go to the answer of the earliest voter."""
    totals: dict[str, float] = {}
    for prediction, weight in zip(predictions, weights):
        if prediction is not None:
            totals[prediction] = totals.get(prediction, 0.0) + weight
    if not totals:
        return None
    best = max(totals.values())
    return next(p for p in predictions if p is not None and totals[p] == best)


def quality_curve(scores: np.ndarray, weak_correct: np.ndarray, strong_correct: np.ndarray) -> np.ndarray:
    """quality[i] = accuracy when the i highest-scored queries go to the strong model (i = 0..N)."""
    order = np.argsort(-scores, kind="stable")
    gain = (strong_correct[order].astype(float) - weak_correct[order].astype(float)).cumsum()
    base = weak_correct.astype(float).sum()
    return np.concatenate([[base], base + gain]) / len(scores)


def apgr(curve: np.ndarray) -> float:
    """Average performance gap recovered (area under the curve, trapezoids over the N+1 points)."""
    weak, strong = curve[0], curve[-1]
    if strong == weak:
        return float("nan")
    steps = np.diff(np.linspace(0.0, 1.0, len(curve)))
    area = float(np.sum(steps * (curve[1:] + curve[:-1]) / 2.0))
    return (area - weak) / (strong - weak)


def cpt(curve: np.ndarray, share: float) -> float:
    """Call-performance threshold: smallest strong-call share recovering ``share`` of the gap."""
    weak, strong = curve[0], curve[-1]
    needed = weak + share * (strong - weak)
    reached = np.flatnonzero(curve >= needed - 1e-12)
    return float(reached[0] / (len(curve) - 1)) if len(reached) else 1.0
