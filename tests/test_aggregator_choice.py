"""Choosing the aggregator by measurement: synthetic cases, the per-category choice, storage, live use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aggregator._choice import AggregatorChoice, build_cases, choose, recovers
from router._store import ProfileStore
from router.offline._dataset import GradedAnswer, LabelledQuestion

QUESTIONS = [
    (
        "q1",
        LabelledQuestion(
            question="Which is a mammal?", options=["shark", "whale", "trout"], answer="B", category="biology"
        ),
    ),
    ("q2", LabelledQuestion(question="What is 6 x 7?", answer="42", category="math")),
    ("q3", LabelledQuestion(question="What is 5 + 5?", answer="10", category="math")),
    ("q4", LabelledQuestion(question="Which is a fish?", options=["cat", "trout"], answer="B", category="biology")),
]


def graded(question_id: str, expert: str, correct: bool, pred: str | None, text: str | None) -> GradedAnswer:
    return GradedAnswer(question_id, expert, correct, pred, len(text or ""), text)


ANSWERS = [
    graded("q1", "a", True, "B", "The answer is (B)."),
    graded("q1", "b", False, "A", "The answer is (A)."),
    graded("q1", "c", False, "C", "The answer is (C)."),
    graded("q2", "a", False, "48", "The answer is 48"),
    graded("q2", "b", True, "42", "The answer is 42"),
    graded("q2", "c", False, "36", "The answer is 36"),
    graded("q3", "a", True, "10", "The answer is 10"),
    graded("q3", "b", False, "11", "The answer is 11"),
    graded("q3", "c", False, "11", "The answer is 11"),  # two identical wrong answers: not a case
    graded("q4", "a", True, "B", None),  # no text (older results): cannot be a candidate
    graded("q4", "b", False, "A", "(A)"),
    graded("q4", "c", False, "A", "(A)"),
]


def test_cases_hold_one_right_and_two_different_wrong_answers_shuffled() -> None:
    cases = build_cases(QUESTIONS, ANSWERS, per_category=5, seed=1)
    assert sorted(case.question_id for case in cases) == ["q1", "q2"]
    for case in cases:
        assert len(case.candidates) == 3 and len({c.expert for c in case.candidates}) == 3
        right = case.candidates[case.correct_position]
        assert case.gold in right.text
        assert sum(case.gold in c.text for c in case.candidates) == 1
    assert "(B) whale" in next(c for c in cases if c.question_id == "q1").prompt  # options are part of the case
    positions = {build_cases(QUESTIONS, ANSWERS, 5, seed).pop(0).correct_position for seed in range(12)}
    assert len(positions) > 1  # the right answer is not always in the same place
    assert len(build_cases(QUESTIONS, ANSWERS, per_category=0, seed=1)) == 0
    assert build_cases(QUESTIONS, ANSWERS, 5, seed=3) == build_cases(QUESTIONS, ANSWERS, 5, seed=3)


def test_recovery_is_graded_like_an_expert_answer() -> None:
    case = next(c for c in build_cases(QUESTIONS, ANSWERS, 5) if c.question_id == "q2")
    assert recovers(case, "Checking each: 6 x 7 = 42. The answer is 42.")
    assert not recovers(case, "The answer is 48.")


def test_choice_per_category_is_smoothed_toward_the_overall_rate() -> None:
    recovered = {
        "big": {"math": [18, 20], "law": [6, 10]},
        "small": {"math": [10, 20], "law": [9, 10], "art": [1, 1]},
    }
    choice = choose(recovered)
    assert choice.default == "big"  # 24/30 against 20/31
    assert choice.per_category["math"] == "big" and choice.per_category["law"] == "small"
    # one lucky case (1/1, smoothed 0.70) does not beat the unmeasured but better aggregator (0.80)
    assert choice.per_category["art"] == "big"
    assert choice.rate("small", "law") == 0.9 and choice.rate("big") == pytest.approx(24 / 30)
    assert choice.pick({"law": 0.7, "math": 0.3}) == "small"
    assert choice.pick({"poetry": 0.9, "math": 0.1}) == "big"  # the likeliest measured category
    assert choice.pick({}) == "big"
    assert AggregatorChoice.from_dict(json.loads(json.dumps(choice.to_dict())), "x").to_dict() == choice.to_dict()
    with pytest.raises(ValueError, match="doc.json: not an aggregator choice document"):
        AggregatorChoice.from_dict({"per_category": {}}, "doc.json")


def test_choice_is_stored_beside_the_profiles(redis_url: str) -> None:
    store = ProfileStore(redis_url, "choice-pool")
    assert store.load_document("aggregators") is None
    choice = choose({"x": {"math": [1, 2]}, "y": {"math": [2, 2]}})
    store.save_document("aggregators", choice.to_dict())
    assert AggregatorChoice.from_dict(store.load_document("aggregators") or {}, "redis").per_category == {"math": "y"}


@pytest.mark.ray
@pytest.mark.model
def test_bench_aggregators_measures_stores_and_the_router_uses_it(
    tmp_path: Path, redis_url: str, ray_session: None
) -> None:
    """The embedded model really aggregates each case; the stored choice then picks the aggregator per query."""
    from orchestrator.cli.main import app

    dataset = tmp_path / "labelled.jsonl"
    items = [{"id": qid, **q.model_dump(exclude_none=True)} for qid, q in QUESTIONS]
    dataset.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(answer.__dict__) for answer in ANSWERS) + "\n")
    spec = yaml.safe_load(Path("deploy/pools/default.yaml").read_text())
    spec["name"] = "choice-live"
    for expert in spec["experts"]:
        expert["resources"] = {"num_cpus": 0, "torch_threads": 1}
    spec["experts"] = [e for e in spec["experts"] if e["name"] in ("generalist", "conductor")]
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(spec))

    arguments = ["bench-aggregators", "--dataset", str(dataset), "--results", str(results), "--pool", str(pool_file)]
    arguments += ["--candidates", "conductor,generalist", "--max-tokens", "24", "--redis", redis_url, "--json"]
    outcome = CliRunner().invoke(app, arguments)
    assert outcome.exit_code == 0, outcome.output
    figures = json.loads(outcome.stdout)
    assert figures["cases"] == 2 and set(figures["per_category"]) == {"biology", "math"}
    for name in ("conductor", "generalist"):
        assert sum(cell[1] for cell in figures["recovered"][name].values()) == 2  # every case, every aggregator
    stored = ProfileStore(redis_url, "choice-live").load_document("aggregators")
    assert stored is not None and stored["default"] == figures["default"] in ("conductor", "generalist")

    from experts.config._pool_spec import load_pool
    from router._factory import load_aggregator_choice

    spec["aggregation"] = {"choice": {"redis": redis_url}}
    pool_file.write_text(yaml.safe_dump(spec))
    choice = load_aggregator_choice(load_pool(pool_file))
    assert choice is not None and choice.pick({"math": 1.0}) == figures["per_category"]["math"]

    missing = CliRunner().invoke(app, [*arguments[:5], "--pool", str(pool_file), "--candidates", "nobody"])
    assert missing.exit_code == 2 and "unknown experts: nobody" in missing.output
