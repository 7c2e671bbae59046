"""Aggregator v1: pass one answer through, or have the aggregator expert synthesise several.

The aggregator only decides and builds the synthesis request; the orchestrator makes the
call. That keeps this module free of Ray and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aggregator.prompts import CANDIDATE, SYNTHESIS_SYSTEM, SYNTHESIS_USER
from experts.types import GenerationRequest, Message

Strategy = Literal["passthrough", "synthesize"]

MAX_CANDIDATE_CHARS = 4000  # keeps k long answers inside a small aggregator's context window


@dataclass(frozen=True)
class CandidateAnswer:
    """One expert's answer to the query."""

    expert: str
    text: str


class Synthesizer:
    """Turns expert answers into one, through the pool's aggregator expert when there are several."""

    def __init__(self, aggregator_expert: str | None) -> None:
        self.aggregator_expert = aggregator_expert

    def strategy(self, answers: list[CandidateAnswer]) -> Strategy:
        """Synthesis needs at least two answers and an aggregator; otherwise the best answer passes."""
        if len(answers) > 1 and self.aggregator_expert is not None:
            return "synthesize"
        return "passthrough"

    def synthesis_request(
        self,
        conversation: list[Message],
        answers: list[CandidateAnswer],
        max_tokens: int | None,
        temperature: float | None,
        seed: int | None = None,
    ) -> GenerationRequest:
        """The aggregator's request: the question, the numbered candidates, our instructions."""
        candidates = "\n\n".join(
            CANDIDATE.format(number=number, text=_clip(answer.text.strip()))
            for number, answer in enumerate(answers, start=1)
        )
        user = SYNTHESIS_USER.format(question=render_question(conversation), candidates=candidates)
        return GenerationRequest(
            messages=[Message("system", SYNTHESIS_SYSTEM), Message("user", user)],
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
        )


def render_question(conversation: list[Message]) -> str:
    """The last user turn, with earlier turns as context when the conversation has them."""
    turns = [message for message in conversation if message.role != "system"]
    if len(turns) <= 1:
        return turns[-1].content if turns else ""
    earlier = "\n".join(f"{message.role.capitalize()}: {message.content}" for message in turns[:-1])
    return f"(Conversation so far)\n{earlier}\n\n(Current question)\n{turns[-1].content}"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CANDIDATE_CHARS else text[:MAX_CANDIDATE_CHARS] + " [...]"
