"""Metrics for judging a router offline: RouteLLM's APGR and CPT (votes live in ``aggregator._vote``).

RouteLLM's definitions: sort queries by the router's score (highest = most worth the strong
model); calling the strong model for the top x share gives quality(x). APGR is the area
under quality(x) over x in [0, 1], as a share of the strong-weak gap; CPT(p) is the smallest
strong-call share whose quality recovers p of that gap.
"""

from __future__ import annotations

import numpy as np


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
