"""Aggregator: turns the experts' answers into one answer (passthrough, vote, synthesize, rank).

Runs in: the driver. May import: ``experts.types`` (answers as data); never the router or the orchestrator.

Public surface (below; the modules are private): the strategies (``_strategies``), votes (``_vote``), synthesis by an
aggregator model (``_synthesize``, prompts in ``_prompts``), the vote over tool calls (``_tool_vote``), answer
extraction and grading (``_extract``), and the measured choice of the aggregator model (``_choice``).
"""

from aggregator._choice import AggregatorChoice, SyntheticCase, build_cases, measure
from aggregator._extract import EXTRACTORS, is_correct
from aggregator._strategies import STRATEGIES, AggregationSettings, Aggregator, ModelStep, Verdict
from aggregator._synthesize import Candidate, Sampling, for_caller, render_question
from aggregator._tool_vote import Ballot, CallVote, canonical_arguments, canonical_calls, vote_on_calls
from aggregator._vote import VoteOutcome, majority_vote, weighted_vote

__all__ = [
    "EXTRACTORS",
    "STRATEGIES",
    "AggregationSettings",
    "Aggregator",
    "AggregatorChoice",
    "Ballot",
    "CallVote",
    "Candidate",
    "ModelStep",
    "Sampling",
    "SyntheticCase",
    "Verdict",
    "VoteOutcome",
    "build_cases",
    "canonical_arguments",
    "canonical_calls",
    "for_caller",
    "is_correct",
    "majority_vote",
    "measure",
    "render_question",
    "vote_on_calls",
    "weighted_vote",
]
