"""Votes: log-odds weights, tie rules, agreement, and majority vs weighted, by hand."""

from __future__ import annotations

import math

import pytest

from aggregator._vote import competence_weight, majority_vote, weighted_vote


def test_competence_weight_is_log_odds_plus_the_option_prior() -> None:
    assert competence_weight(0.5) == pytest.approx(math.log(9))
    assert competence_weight(0.9) == pytest.approx(math.log(9) + math.log(9))
    assert competence_weight(0.1) == pytest.approx(0.0, abs=1e-12)  # as good as a random pick among ten
    assert competence_weight(0.01) == 0.0  # worse than random never counts against
    assert competence_weight(0.5, options=2) == pytest.approx(0.0)  # a coin flip between two says nothing


def test_weighted_vote_sums_weights() -> None:
    outcome = weighted_vote(["A", "B", "B"], [0.9, 0.6, 0.6], weights=[3.0, 1.0, 1.0])
    assert outcome.answer == "A" and outcome.winner == 0 and outcome.totals == {"A": 3.0, "B": 2.0}
    assert outcome.supporters == (0,) and outcome.agreement == pytest.approx(1 / 3)
    outcome = weighted_vote(["A", "B", "B"], [0.9, 0.6, 0.7], weights=[1.5, 1.0, 1.0])
    assert outcome.answer == "B" and outcome.winner == 2  # the more competent supporter's text is returned
    assert outcome.agreement == pytest.approx(2 / 3)


def test_one_strong_expert_outvotes_two_weak_ones_only_when_weighted() -> None:
    answers, competence = ["C", "D", "D"], [0.95, 0.3, 0.3]
    # log-odds weights: 0.95 -> log(19) + log(9) = 5.14; 0.3 -> log(3/7) + log(9) = 1.35 each
    assert weighted_vote(answers, competence).answer == "C"
    assert majority_vote(answers, competence).answer == "D"


def test_ties_go_to_the_more_competent_supporter_then_to_rank() -> None:
    assert weighted_vote(["C", "D"], [0.4, 0.7], weights=[1.0, 1.0]).answer == "D"
    assert majority_vote(["C", "D"], [0.5, 0.5]).answer == "C"  # equal competence: the better-ranked ballot
    tie = majority_vote(["C", "D", "D", "C"], [0.2, 0.6, 0.3, 0.5])
    assert tie.answer == "D" and tie.winner == 1


def test_missing_answers_are_dissent_and_an_empty_vote_returns_the_most_competent() -> None:
    outcome = majority_vote(["A", None, "A", None], [0.5, 0.9, 0.5, 0.5])
    assert outcome.answer == "A" and outcome.agreement == 0.5
    nothing = weighted_vote([None, None, None], [0.2, 0.8, 0.8])
    assert nothing.answer is None and nothing.winner == 1 and nothing.totals == {}
    with pytest.raises(ValueError, match="one competence per answer"):
        weighted_vote(["A"], [0.5, 0.5])
    with pytest.raises(ValueError, match="at least one"):
        weighted_vote([], [])
