"""The vote over tool calls: canonical calls, call or answer, then which calls; and the pipeline's use of it."""

from __future__ import annotations

from aggregator import Ballot, canonical_arguments, canonical_calls, vote_on_calls
from experts.types import ToolCall
from orchestrator.pipeline.state import ExpertAnswer
from orchestrator.pipeline.tool_calls import call_vote, tool_call_verdict
from router import ExpertScore, RoutingDecision


def call(name: str, arguments: str, id_: str = "c") -> ToolCall:
    return ToolCall(id=id_, name=name, arguments=arguments)


def test_calls_that_differ_only_in_form_are_one_call() -> None:
    assert canonical_arguments('{"b": 1, "a": [1.0, 2.5]}') == canonical_arguments('{ "a":[1, 2.5], "b":1.0 }')
    assert canonical_arguments('{"city": "Paris"}') != canonical_arguments('{"city": "paris"}')
    assert canonical_arguments("not json ") == "not json"  # kept as text: it still matches itself
    assert canonical_arguments("") == "{}"
    first = [call("weather", '{"city": "Paris", "days": 2}'), call("time", '{"tz": "CET"}')]
    second = [call("time", '{"tz":"CET"}', "x"), call("weather", '{"days": 2.0, "city": "Paris"}', "y")]
    assert canonical_calls(first) == canonical_calls(second)  # parallel calls: a set, ids aside


def test_the_callers_agree_on_one_call_whatever_its_form() -> None:
    ballots = [
        Ballot("a", 0.6, (call("add", '{"x": 1, "y": 2}', "a1"),)),
        Ballot("b", 0.7, (call("add", '{"y": 2.0, "x": 1.0}', "b1"),)),
        Ballot("c", 0.5, (call("add", '{"x": 3, "y": 2}', "c1"),)),
    ]
    vote = vote_on_calls(ballots)
    assert vote is not None and vote.call_wins
    assert vote.expert == "b" and vote.calls[0].id == "b1"  # the most competent supporter's own calls
    assert vote.agreement == 2 / 3 and len(vote.totals) == 2


def test_answering_in_text_wins_when_the_more_competent_experts_answer() -> None:
    ballots = [Ballot("a", 0.9, ()), Ballot("b", 0.85, ()), Ballot("c", 0.3, (call("search", '{"q": "x"}'),))]
    vote = vote_on_calls(ballots)
    assert vote is not None and not vote.call_wins and vote.callers == ("c",)
    assert vote.call_or_answer["answer"] > vote.call_or_answer.get("call", 0.0)
    assert vote_on_calls([Ballot("a", 0.9, ()), Ballot("b", 0.2, ())]) is None  # nobody called: no call vote


def decision(*experts: str, competence: dict[str, float]) -> RoutingDecision:
    scores = [ExpertScore(name=name, score=1.0 - i / 10) for i, name in enumerate(experts)]
    return RoutingDecision(k=len(experts), experts=list(experts), scores=scores, competence=competence)


def test_the_pipeline_returns_the_winning_calls_with_the_vote() -> None:
    usable = [
        ExpertAnswer("a", "", "tool_calls", tool_calls=(call("add", '{"x": 1}', "a1"),)),
        ExpertAnswer("b", "", "tool_calls", tool_calls=(call("add", '{"x": 1.0}', "b1"),)),
        ExpertAnswer("c", "It is 1.", "stop"),
    ]
    vote = call_vote(decision("a", "b", "c", competence={"a": 0.8, "b": 0.6, "c": 0.7}), usable)
    assert vote is not None and vote.call_wins
    verdict = tool_call_verdict(vote, usable)
    assert verdict.finish_reason == "tool_calls" and verdict.strategy == "tool_calls"
    assert verdict.expert == "a" and verdict.tool_calls == usable[0].tool_calls
    assert verdict.agreement == 1.0 and verdict.shortcut  # both callers made the same call
    assert verdict.note is not None and "2 of 3 experts called tools" in verdict.note


def test_an_escalation_goes_on_when_the_first_stage_disagrees_on_its_calls() -> None:
    from aggregator import AggregationSettings, Aggregator, Candidate
    from experts.types import Message
    from orchestrator.pipeline.escalation import review_first_stage
    from router import Escalation

    staged = decision("a", "b", competence={"a": 0.9, "b": 0.9}).model_copy(
        update={"escalation": Escalation(then=["c"], threshold=0.5)}
    )
    aggregator = Aggregator(AggregationSettings(strategy="vote"), None)
    messages = [Message("user", "add one")]
    answered = [Candidate("a", "", 0.9), Candidate("b", "", 0.9)]
    same = {"a": (call("add", '{"x": 1}'),), "b": (call("add", '{"x": 1.0}'),)}
    settled = review_first_stage(aggregator, messages, staged, answered, same)
    assert settled.escalation is not None and settled.escalation.escalated is False
    assert "agreed on the calls" in settled.escalation.reason
    differ = {"a": (call("add", '{"x": 1}'),), "b": (call("add", '{"x": 2}'),)}
    escalated = review_first_stage(aggregator, messages, staged, answered, differ)
    assert escalated.escalation is not None and escalated.escalation.escalated is True
    assert "did not agree on its tool calls" in escalated.escalation.reason and escalated.experts == ["a", "b", "c"]
    one_answers = review_first_stage(aggregator, messages, staged, answered, {"a": differ["a"]})
    assert one_answers.escalation is not None and one_answers.escalation.escalated is True  # call against text
