"""Aggregator: turns the experts' answers into one answer."""

from aggregator.synthesize import CandidateAnswer, Strategy, Synthesizer, render_question

__all__ = ["CandidateAnswer", "Strategy", "Synthesizer", "render_question"]
