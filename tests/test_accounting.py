"""The bill: every call counted once, by role, failures included at zero; the API's metadata shape."""

from __future__ import annotations

from aggregator._strategies import Verdict
from experts.types import Completion, Usage
from orchestrator.pipeline.state import CallRecord, ExpertAnswer, PipelineResult
from router._decision import RoutingDecision


def completion(prompt: int, done: int, cost: float) -> Completion:
    return Completion(text="x", finish_reason="stop", usage=Usage(prompt, done, cost), latency_s=0.1)


def test_usage_sums_keywords_fan_out_and_aggregator_and_lists_each_call() -> None:
    calls = [
        CallRecord.of("kw", "keywords", completion(10, 3, 0.001)),
        CallRecord.of("a", "expert", completion(20, 40, 0.002)),
        CallRecord.of("b", "expert", completion(22, 35, 0.004)),
        CallRecord.failure("c", "expert", "timed out", 30.0),
        CallRecord.of("agg", "aggregator", completion(120, 50, 0.010)),
    ]
    result = PipelineResult(
        verdict=Verdict("answer", "stop", "synthesize", None, answer="42", answer_kind="number", agreement=0.5),
        decision=RoutingDecision(k=3, experts=["a", "b", "c"], aggregator="agg"),
        answers=[
            ExpertAnswer("a", "41", "stop"),
            ExpertAnswer("b", "42", "stop"),
            ExpertAnswer("c", "", "error", "out"),
        ],
        calls=calls,
        timings_ms={"total": 1.0},
    )
    assert result.usage.prompt_tokens == 172 and result.usage.completion_tokens == 128
    assert abs(result.usage.cost - 0.017) < 1e-12
    metadata = result.metadata()
    assert [(c["expert"], c["role"]) for c in metadata["calls"]] == [
        ("kw", "keywords"),
        ("a", "expert"),
        ("b", "expert"),
        ("c", "expert"),
        ("agg", "aggregator"),
    ]
    failed = metadata["calls"][3]
    assert failed["prompt_tokens"] == failed["completion_tokens"] == 0 and failed["error"] == "timed out"
    assert metadata["shortcut"] is False and metadata["strategy"] == "synthesize"
    assert metadata["aggregation"] == {
        "answer": "42",
        "answer_kind": "number",
        "votes": {},
        "agreement": 0.5,
        "chosen_expert": None,
    }
    assert abs(metadata["cost"] - 0.017) < 1e-12
