"""Aggregator v1: when to synthesise, and what the aggregator reads."""

from __future__ import annotations

from aggregator import CandidateAnswer, Synthesizer, render_question
from aggregator.synthesize import MAX_CANDIDATE_CHARS
from experts.types import Message


def test_one_answer_passes_through_several_are_synthesised() -> None:
    synthesizer = Synthesizer("conductor")
    assert synthesizer.strategy([CandidateAnswer("a", "x")]) == "passthrough"
    assert synthesizer.strategy([CandidateAnswer("a", "x"), CandidateAnswer("b", "y")]) == "synthesize"
    assert Synthesizer(None).strategy([CandidateAnswer("a", "x"), CandidateAnswer("b", "y")]) == "passthrough"


def test_synthesis_request_holds_question_and_numbered_candidates() -> None:
    request = Synthesizer("conductor").synthesis_request(
        [Message("system", "be brief"), Message("user", "What is 6 x 7?")],
        [CandidateAnswer("math", "42"), CandidateAnswer("generalist", "It is 48.")],
        max_tokens=64,
        temperature=0.0,
    )
    system, user = request.messages
    assert system.role == "system" and "disagree" in system.content
    assert "What is 6 x 7?" in user.content
    assert "Candidate answer 1:\n42" in user.content and "Candidate answer 2:\nIt is 48." in user.content
    assert "be brief" not in user.content  # the caller's system prompt is not part of the question
    assert request.max_tokens == 64 and request.temperature == 0.0


def test_long_candidates_are_clipped_and_conversations_keep_context() -> None:
    request = Synthesizer("c").synthesis_request(
        [Message("user", "q")],
        [CandidateAnswer("a", "x" * (MAX_CANDIDATE_CHARS + 50)), CandidateAnswer("b", "y")],
        None,
        None,
    )
    assert "x" * (MAX_CANDIDATE_CHARS + 1) not in request.messages[1].content
    assert "[...]" in request.messages[1].content
    question = render_question(
        [
            Message("user", "I have 3 apples."),
            Message("assistant", "Noted."),
            Message("user", "I eat one. How many now?"),
        ]
    )
    assert "I have 3 apples." in question and question.endswith("I eat one. How many now?")
