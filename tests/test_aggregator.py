"""Aggregation strategies: what each decides, what the aggregator and judge read, the short-cut."""

from __future__ import annotations

import pytest

from aggregator import AggregationSettings, Aggregator, Candidate, ModelStep, Sampling, Verdict, render_question
from aggregator._synthesize import MAX_CANDIDATE_CHARS, parse_rank, rank_request, synthesis_request
from experts.types import Message

QUESTION = [Message("system", "be brief"), Message("user", "Which is a mammal?\n(A) shark\n(B) whale\n(C) trout")]


def candidates(*texts: str, competence: tuple[float, ...] | None = None) -> list[Candidate]:
    levels = competence or tuple(0.5 for _ in texts)
    return [Candidate(f"e{i}", text, level) for i, (text, level) in enumerate(zip(texts, levels))]


def aggregator(strategy: str = "synthesize", consensus: float | None = 1.0, **settings: object) -> Aggregator:
    return Aggregator(
        AggregationSettings(strategy=strategy, consensus=consensus, **settings),  # type: ignore[arg-type]
        "conductor",
    )


def test_one_answer_passes_through_whatever_the_strategy() -> None:
    for strategy in ("vote", "synthesize", "rank"):
        verdict = aggregator(strategy).plan(QUESTION, candidates("The answer is (B)."))
        assert isinstance(verdict, Verdict) and verdict.strategy == "passthrough" and verdict.expert == "e0"
    verdict = aggregator("passthrough").plan(QUESTION, candidates("(A)", "(B)"))
    assert isinstance(verdict, Verdict) and verdict.text == "(A)"


def test_vote_returns_the_winning_answer_with_its_most_competent_supporters_text() -> None:
    texts = ("The answer is (A).", "I would say (B).", "Clearly (B), a whale.")
    verdict = aggregator("vote").plan(QUESTION, candidates(*texts, competence=(0.6, 0.4, 0.7)))
    assert isinstance(verdict, Verdict)
    assert verdict.answer == "B" and verdict.answer_kind == "choice" and verdict.expert == "e2"
    assert verdict.text == "Clearly (B), a whale." and not verdict.shortcut
    assert verdict.agreement == pytest.approx(2 / 3, abs=1e-4) and set(verdict.votes) == {"A", "B"}
    # competence decides against the majority when one expert is far more likely right
    strong = aggregator("vote").plan(QUESTION, candidates(*texts, competence=(0.97, 0.2, 0.2)))
    assert isinstance(strong, Verdict) and strong.answer == "A"


def test_consensus_short_cut_skips_the_aggregator() -> None:
    agreed = candidates("The answer is (B).", "<think>A? no</think> (B) whale", "B")
    verdict = aggregator("synthesize").plan(QUESTION, agreed)
    assert isinstance(verdict, Verdict) and verdict.shortcut and verdict.answer == "B"
    assert verdict.strategy == "synthesize" and verdict.agreement == 1.0
    split = candidates("The answer is (B).", "(A)", "(B)")
    assert isinstance(aggregator("synthesize", consensus=1.0).plan(QUESTION, split), ModelStep)
    partial = aggregator("synthesize", consensus=0.6).plan(QUESTION, split)
    assert isinstance(partial, Verdict) and partial.shortcut and partial.answer == "B"
    assert isinstance(aggregator("synthesize", consensus=None).plan(QUESTION, agreed), ModelStep)
    per_request = aggregator("synthesize", consensus=None).plan(QUESTION, split, consensus=0.5)
    assert isinstance(per_request, Verdict) and per_request.shortcut
    assert isinstance(aggregator().plan(QUESTION, agreed, consensus=None), ModelStep)  # request turns it off
    no_answers = candidates("I am not sure.", "Hard to say.")  # free text that differs never agrees
    assert isinstance(aggregator().plan([Message("user", "Why?")], no_answers), ModelStep)


def test_synthesis_step_reads_stripped_candidates_and_has_its_own_budget() -> None:
    settings = {"sampling": Sampling(max_tokens=77, temperature=0.0)}
    step = aggregator("synthesize", **settings).plan(
        QUESTION, candidates("<think>secret chain</think>The answer is (A).", "(B)")
    )
    assert isinstance(step, ModelStep) and step.role == "aggregator" and step.expert == "conductor"
    assert step.stream_reply and step.request.max_tokens == 77 and step.request.temperature == 0.0
    system, user = step.request.messages
    assert "disagree" in system.content and "be brief" not in user.content
    assert "secret chain" not in user.content and "Candidate answer 1:\nThe answer is (A)." in user.content
    verdict = step.finish("A whale is a mammal: (B).", "stop")
    assert verdict.strategy == "synthesize" and verdict.answer == "B" and verdict.text.startswith("A whale")
    assert step.fallback.expert in {"e0", "e1"}  # if the call fails, the vote's answer stands
    measured = aggregator().plan(QUESTION, candidates("(A)", "(B)"), aggregator="measured-best")
    assert isinstance(measured, ModelStep) and measured.expert == "measured-best"


def test_rank_step_returns_the_judges_pick_and_falls_back_to_the_vote() -> None:
    step = aggregator("rank").plan(QUESTION, candidates("(A) shark", "(B) whale", "(B)", competence=(0.5, 0.5, 0.6)))
    assert isinstance(step, ModelStep) and step.role == "judge" and not step.stream_reply
    picked = step.finish("Best: 2", "stop")
    assert picked.strategy == "rank" and picked.expert == "e1" and picked.text == "(B) whale"
    unclear = step.finish("They all look fine.", "stop")
    assert unclear.expert == "e2" and unclear.answer == "B" and "named no candidate" in (unclear.note or "")


def test_parse_rank() -> None:
    assert parse_rank("Best: 3", 3) == 2
    assert parse_rank("The best answer is candidate 2.", 3) == 1
    assert parse_rank("<think>1 or 2</think>Best candidate: #1", 3) == 0
    assert parse_rank("Best: 7", 3) is None and parse_rank("none", 3) is None


def test_without_an_aggregator_the_vote_decides_and_says_so() -> None:
    lone = Aggregator(AggregationSettings(strategy="synthesize"), None)
    verdict = lone.plan(QUESTION, candidates("(A)", "(B)", competence=(0.4, 0.9)))
    assert isinstance(verdict, Verdict) and verdict.expert == "e1" and "no aggregator" in (verdict.note or "")


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="unknown aggregation strategy 'merge'"):
        aggregator().plan(QUESTION, candidates("a", "b"), strategy="merge")
    with pytest.raises(ValueError, match="no answer extractor named 'colour'"):
        aggregator(answer_kind="colour").plan(QUESTION, candidates("a", "b"))
    with pytest.raises(ValueError, match="at least one candidate"):
        aggregator().plan(QUESTION, [])


def test_requests_clip_long_candidates_and_keep_conversation_context() -> None:
    long = candidates("x" * (MAX_CANDIDATE_CHARS + 50), "y")
    for build in (synthesis_request, rank_request):
        content = build([Message("user", "q")], long, Sampling()).messages[1].content
        assert "x" * (MAX_CANDIDATE_CHARS + 1) not in content and "[...]" in content
    question = render_question(
        [Message("user", "I have 3 apples."), Message("assistant", "Noted."), Message("user", "I eat one. How many?")]
    )
    assert "I have 3 apples." in question and question.endswith("I eat one. How many?")
