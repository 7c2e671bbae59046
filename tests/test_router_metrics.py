"""RouteLLM metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from router.offline._quality_metrics import apgr, cpt, quality_curve

WEAK = np.array([1, 0, 1, 0])
STRONG = np.array([1, 1, 0, 1])


def test_quality_curve_follows_the_scores() -> None:
    # scores send query 1, then 3, then 2, then 0 to the strong model
    curve = quality_curve(np.array([0.1, 0.9, 0.2, 0.8]), WEAK, STRONG)
    assert curve.tolist() == [0.5, 0.75, 1.0, 0.75, 0.75]


def test_apgr_and_cpt_by_hand() -> None:
    curve = np.array([0.5, 0.75, 1.0, 0.75, 0.75])
    # trapezoids of width 1/4: (0.625 + 0.875 + 0.875 + 0.75) / 4 = 0.78125; gap 0.25
    assert apgr(curve) == pytest.approx((0.78125 - 0.5) / 0.25)
    assert cpt(curve, 0.5) == 0.25 and cpt(curve, 0.8) == 0.25
    random_like = np.array([0.5, 0.5625, 0.625, 0.6875, 0.75])
    assert apgr(random_like) == pytest.approx(0.5)
    assert cpt(random_like, 0.5) == 0.5 and cpt(random_like, 0.8) == 1.0


def test_ties_in_scores_keep_question_order() -> None:
    assert quality_curve(np.zeros(4), WEAK, STRONG).tolist() == [0.5, 0.5, 0.75, 0.5, 0.75]
