"""Voting over extracted answers: weighted by competence, or one expert one vote.

One implementation serves the live aggregator (``vote`` strategy, consensus short-cut) and
the offline router evaluation, so what is measured offline is what runs.

Weights are log-odds: an expert believed right with probability p adds
``log(p / (1 - p)) + log(options - 1)``. That is the Bayes-optimal weight when a wrong
expert picks one of the other options at random (Nitzan & Paroush), which is why a vote
for one of ten options is evidence even at p = 0.1; below that it counts for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

TIE_TOLERANCE = 1e-9
DEFAULT_OPTIONS = 10  # MMLU-Pro's letters A-J; a free answer space is larger, so this is conservative


@dataclass(frozen=True)
class VoteOutcome:
    """The winning answer, who said it, and how the votes fell.

    ``winner`` indexes the ballot whose text is returned: the most competent supporter of
    the winning answer (the most competent ballot overall when nothing was extracted).
    ``agreement`` is the share of *all* ballots that gave the winning answer, so a ballot
    without an extractable answer counts as dissent.
    """

    answer: str | None
    winner: int
    totals: dict[str, float] = field(default_factory=dict)
    supporters: tuple[int, ...] = ()
    agreement: float = 0.0


def competence_weight(competence: float, options: int = DEFAULT_OPTIONS) -> float:
    """The log-odds weight of a vote from an expert right with probability ``competence`` (never negative)."""
    p = min(max(competence, 1e-3), 1 - 1e-3)
    return max(math.log(p / (1 - p)) + math.log(max(options, 2) - 1), 0.0)


def weighted_vote(
    answers: Sequence[str | None], competences: Sequence[float], weights: Sequence[float] | None = None
) -> VoteOutcome:
    """Sum each answer's weights (default: ``competence_weight``); ties go to the more competent side.

    Ties in summed weight are broken by the competence of each answer's most competent
    supporter, then by ballot order (the router ranks best first).
    """
    if len(answers) != len(competences):
        raise ValueError("one competence per answer is needed")
    if not answers:
        raise ValueError("a vote needs at least one ballot")
    weights = [competence_weight(c) for c in competences] if weights is None else list(weights)
    totals: dict[str, float] = {}
    best_supporter: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        totals[answer] = totals.get(answer, 0.0) + weights[index]
        current = best_supporter.get(answer)
        if current is None or competences[index] > competences[current]:
            best_supporter[answer] = index
    if not totals:
        most_competent = max(range(len(answers)), key=lambda i: (competences[i], -i))
        return VoteOutcome(None, most_competent)
    top = max(totals.values())
    tied = [answer for answer in totals if top - totals[answer] <= TIE_TOLERANCE]
    answer = max(tied, key=lambda a: (competences[best_supporter[a]], -best_supporter[a]))
    supporters = tuple(i for i, given in enumerate(answers) if given == answer)
    return VoteOutcome(answer, best_supporter[answer], totals, supporters, len(supporters) / len(answers))


def majority_vote(answers: Sequence[str | None], competences: Sequence[float]) -> VoteOutcome:
    """One expert, one vote; ties are broken as in ``weighted_vote``."""
    return weighted_vote(answers, competences, weights=[1.0] * len(answers))
