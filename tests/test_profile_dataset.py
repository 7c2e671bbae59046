"""``moesaic profile --dataset``: run the pool's experts on labelled questions, grade, resume, profile.

The experts here use the echo backend (fault injection: it repeats the prompt), so each
expert's answer and grade are known in advance; one test runs the embedded model for real.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from experts.config._pool_spec import load_pool
from experts.runtime._pool import ExpertPool
from orchestrator.cli.main import app
from router._store import import_json
from router.offline._dataset import load_dataset, read_results, results_table, run_profiling
from router.offline._outcomes import OutcomeFileError

QUESTIONS = [
    {"id": "q1", "question": "Which is right? The answer is (B)", "answer": "B", "category": "logic"},
    {"id": "q2", "question": "Which is right? The answer is (C)", "answer": "A", "category": "logic"},
    {"id": "q3", "question": "How many? The answer is 12", "answer": "12", "category": "math"},
    {"id": "q4", "question": "Capital of France? Answer: Paris", "answer": "paris", "kind": "exact"},
]


def write_dataset(folder: Path, items: list[dict[str, object]]) -> Path:
    path = folder / "labelled.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    return path


def echo_pool(folder: Path) -> Path:
    pool = {
        "name": "echoes",
        "roles": {"aggregator": "c"},
        "experts": [
            {"name": name, "backend": "echo", "model": "echo", "routable": name != "c", "resources": {"num_cpus": 0}}
            for name in ("a", "b", "c")
        ],
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


def test_dataset_errors_name_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(OutcomeFileError, match=r"labelled.jsonl:2: answer: Field required"):
        load_dataset(write_dataset(tmp_path, [QUESTIONS[0], {"question": "no answer"}]))
    (tmp_path / "labelled.jsonl").write_text('{"question": "x", "answer": "A"}\n{broken\n')
    with pytest.raises(OutcomeFileError, match=r"labelled.jsonl:2: not JSON"):
        load_dataset(tmp_path / "labelled.jsonl")
    with pytest.raises(OutcomeFileError, match="id 'q1' appears twice"):
        load_dataset(write_dataset(tmp_path, [QUESTIONS[0], QUESTIONS[0]]))
    kinds = [q.resolved_kind() for _, q in load_dataset(write_dataset(tmp_path, QUESTIONS))]
    assert kinds == ["choice", "choice", "number", "exact"]


async def test_profiling_grades_and_resumes(tmp_path: Path, ray_session: None) -> None:
    questions = load_dataset(write_dataset(tmp_path, QUESTIONS))
    pool = ExpertPool(load_pool(echo_pool(tmp_path)))
    results = tmp_path / "results.jsonl"
    try:
        await pool.start()
        first = await run_profiling(pool, questions[:2], results, max_tokens=200)
        assert len(first) == 4  # 2 questions x 2 routable experts; the aggregator is not profiled
        progress: list[int] = []
        everything = await run_profiling(pool, questions, results, max_tokens=200, on_progress=progress.append)
        assert len(progress) == 4  # only the new (question, expert) pairs ran
    finally:
        await pool.shutdown()
    graded = {(r.question_id, r.expert): r for r in everything}
    assert len(graded) == 8
    assert graded["q1", "a"].correct and graded["q1", "a"].pred == "B"
    assert not graded["q2", "b"].correct and graded["q2", "b"].pred == "C"
    assert graded["q3", "a"].correct and graded["q4", "b"].correct
    table = results_table(questions, read_results(results), ["a", "b"], "t")
    assert table.correct.tolist() == [[1, 1], [0, 0], [1, 1], [1, 1]]


def test_cli_profile_dataset_writes_profiles(tmp_path: Path, ray_session: None) -> None:
    out = tmp_path / "profiles.json"
    result = CliRunner().invoke(
        app,
        [
            "profile",
            "--dataset",
            str(write_dataset(tmp_path, QUESTIONS)),
            "--pool",
            str(echo_pool(tmp_path)),
            "--results",
            str(tmp_path / "r.jsonl"),
            "--out",
            str(out),
            "--max-tokens",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    profiles = import_json(out)
    assert profiles.pool == "echoes" and profiles.experts == ["a", "b"]
    assert sorted(profiles.categories) == ["general", "logic", "math"]


@pytest.mark.model
async def test_the_embedded_experts_answer_for_real(tmp_path: Path, embedded_pool: ExpertPool) -> None:
    items = [
        {"id": "paris", "question": "What is the capital of France?", "answer": "Paris", "kind": "exact"},
        # a gold answer no expert will give: every one of these must be graded wrong
        {"id": "wrong-gold", "question": "What is the capital of France?", "answer": "Zanzibar", "kind": "exact"},
    ]
    questions = load_dataset(write_dataset(tmp_path, items))
    graded = await run_profiling(embedded_pool, questions, tmp_path / "real.jsonl", max_tokens=24)
    assert {r.expert for r in graded} == {"math", "coder", "writer", "generalist"}
    assert len(graded) == 8 and all(r.text and r.chars == len(r.text) for r in graded)
    for r in graded:
        # an independent reading of the grade: the final answer (its last line) names the gold as a word
        final = (r.pred or "").lower()
        gold = "paris" if r.question_id == "paris" else "zanzibar"
        expected = re.search(rf"\b{gold}\b", final) is not None and len(final.split()) <= 12
        assert r.correct == expected, (r.question_id, r.expert, r.text)
        assert r.pred is not None and r.pred in r.text.lower().replace("*", "")
    assert not any(r.correct for r in graded if r.question_id == "wrong-gold")
    assert read_results(tmp_path / "real.jsonl") == graded  # what was graded is what the results file holds
