"""Aggregator: turns the experts' answers into one answer (passthrough, vote, synthesize, rank)."""

from aggregator.strategies import STRATEGIES, AggregationSettings, Aggregator, ModelStep, Verdict
from aggregator.synthesize import Candidate, Sampling, render_question
from aggregator.vote import VoteOutcome, majority_vote, weighted_vote

__all__ = [
    "STRATEGIES",
    "AggregationSettings",
    "Aggregator",
    "Candidate",
    "ModelStep",
    "Sampling",
    "Verdict",
    "VoteOutcome",
    "majority_vote",
    "render_question",
    "weighted_vote",
]
