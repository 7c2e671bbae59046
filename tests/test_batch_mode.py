"""``moesaic batch``: input errors by line and field, one output line per input line, answers equal to the
online pipeline's, each expert loaded once, and a stopped run that resumes without repeating calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from experts.runtime.dispatch._dispatcher import Dispatcher
from orchestrator.pipeline.batch import BatchRunner
from orchestrator.pipeline.batch_io import BatchInputError, ProgressLog, read_items
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_lines_are_reported_with_their_number_and_field(tmp_path: Path) -> None:
    source = write_lines(
        tmp_path / "in.jsonl",
        [
            {"id": "ok", "question": "What is 2 + 2?", "k": 1},
            "",
            "{not json",
            {"id": 4, "messages": [{"role": "robot", "content": "hi"}]},
            {"question": "q", "messages": [{"role": "user", "content": "q"}]},
            [1, 2],
            {"question": "q", "k": 0, "label": "ignored"},
        ],
    )
    lines, digest = read_items(source)
    assert [line.line for line in lines] == [1, 2, 3, 4, 5, 6, 7] and len(digest) == 64
    errors = {line.line: line.error for line in lines}
    assert errors[1] is None and lines[0].item is not None and lines[0].item.id == "ok"
    assert errors[2] == "line 2: empty line; expected a JSON object"
    assert errors[3].startswith("line 3: not valid JSON")
    assert errors[4].startswith("line 4: messages[0].role: Input should be 'system', 'user' or 'assistant'")
    assert lines[3].raw_id == 4
    assert errors[5] == "line 5: (line): give exactly one of 'question' (a string) or 'messages' (a chat list)"
    assert errors[6] == "line 6: expected a JSON object, got list"
    assert errors[7].startswith("line 7: k: Input should be greater than or equal to 1")


def test_a_progress_file_of_another_input_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    log = ProgressLog(out)
    log.open("aaa", "pool")
    log.close()
    with pytest.raises(BatchInputError, match="different input file; delete it"):
        ProgressLog(out).open("bbb", "pool")


@pytest.mark.ray
def test_cli_writes_one_line_per_input_line_in_order_with_errors(ray_session: None, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli.main import app

    pool = {
        "name": "batch-echo",
        "roles": {"aggregator": "b"},
        "aggregation": {"strategy": "vote"},
        "experts": [
            {"name": "a", "backend": "echo", "model": "echo", "skills": ["math"], "resources": {"num_cpus": 0}},
            {"name": "b", "backend": "echo", "model": "echo", "skills": ["writing"], "resources": {"num_cpus": 0}},
        ],
    }
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool))
    source = write_lines(
        tmp_path / "in.jsonl",
        [
            {"id": "q1", "question": "solve 3 + 4"},
            "{broken",
            {"id": "q3", "messages": [{"role": "user", "content": "write a poem"}], "experts": ["a", "b"]},
            {"id": "q4", "question": "anything", "experts": ["nobody"]},
            {"id": "q5", "question": "solve 1 + 1", "k": 2},
        ],
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["batch", str(source), str(out), "--pool", str(pool_file)])
    assert result.exit_code == 0, result.output
    assert "line 2: not valid JSON" in result.output and "5 lines" in result.output
    rows = read_jsonl(out)
    assert [row["line"] for row in rows] == [1, 2, 3, 4, 5]
    assert [row["id"] for row in rows] == ["q1", None, "q3", "q4", "q5"]
    assert rows[0]["answer"] == "solve 3 + 4" and rows[0]["experts"] == ["a"] and rows[0]["error"] is None
    assert rows[1]["answer"] is None and rows[1]["error"].startswith("line 2: not valid JSON")
    assert rows[2]["experts"] == ["a", "b"] and rows[2]["strategy"] == "vote" and rows[2]["answer"] == "write a poem"
    assert rows[3]["error"] == "line 4: experts: no expert named 'nobody' in this pool"
    assert rows[4]["experts"][0] == "a" and rows[4]["answer"] == "solve 1 + 1"  # routed: a knows math
    calls = sum(len(row["answers"]) for row in rows if row["error"] is None)
    again = CliRunner().invoke(app, ["batch", str(source), str(out), "--pool", str(pool_file)])
    assert again.exit_code == 0 and f"0 calls made, {calls} reused" in again.output
    assert read_jsonl(out) == rows


ITEMS = [
    {"id": "m1", "question": "What is 2 + 3?", "experts": ["maths"]},
    {"id": "w1", "question": "Name a colour.", "experts": ["writer"]},
    {"id": "h1", "question": "What is the capital of Italy?", "experts": ["helper"]},
    {"id": "mw", "question": "Say hello in French.", "experts": ["maths", "writer"]},
    {"id": "wh", "question": "What is 7 times 6?", "experts": ["writer", "helper"]},
    {"id": "r1", "question": "Write a short poem about rain.", "k": 1},
]


def requests_by_expert(health: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: facts["requests"] for name, facts in health.items()}


@pytest.mark.ray
@pytest.mark.model
async def test_batch_answers_equal_the_online_pipeline_and_each_expert_loads_once(
    residency_pool: Dispatcher, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "in.jsonl", ITEMS)
    await residency_pool.release_all()
    before = await residency_pool.health()
    orchestrator = Orchestrator(residency_pool)
    report = await BatchRunner(orchestrator, max_tokens=6).run(source, tmp_path / "out.jsonl")
    after = await residency_pool.health()
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert report.failed == 0 and report.calls_reused == 0 and [row["id"] for row in rows] == [i["id"] for i in ITEMS]
    loads = {name: after[name]["loads"] - before[name]["loads"] for name in after}
    assert sum(loads.values()) <= 3, loads  # each expert once: the aggregator ran with helper's own batch or after
    assert rows[5]["experts"] == ["writer"]  # routed by the pool's router
    assert {facts["residency"] for facts in after.values()} == {"disk"}  # released at the end
    for item, row in zip(ITEMS, rows):
        generation = item_request(item)
        online = await orchestrator.run(PipelineRequest(generation, experts=item.get("experts"), k=item.get("k")))
        assert row["answer"] == online.text, item["id"]
        assert row["strategy"] == online.strategy and row["experts"] == online.decision.experts


def item_request(item: dict[str, Any]) -> Any:
    from orchestrator.pipeline.batch_io import BatchItem

    return BatchItem.model_validate(item).generation(6, None)


@pytest.mark.ray
@pytest.mark.model
async def test_a_stopped_run_resumes_without_repeating_calls(residency_pool: Dispatcher, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", ITEMS)
    whole = await BatchRunner(Orchestrator(residency_pool), max_tokens=6).run(source, tmp_path / "whole.jsonl")
    out = tmp_path / "resumed.jsonl"
    before = requests_by_expert(await residency_pool.health())
    first = await BatchRunner(Orchestrator(residency_pool), max_tokens=6).run(source, out, stop_after_experts=1)
    assert first.stopped and not out.exists() and 0 < first.calls_made < whole.calls_made
    second = await BatchRunner(Orchestrator(residency_pool), max_tokens=6).run(source, out)
    assert not second.stopped and second.calls_reused == first.calls_made
    assert first.calls_made + second.calls_made == whole.calls_made
    actor_requests = sum(requests_by_expert(await residency_pool.health()).values()) - sum(before.values())
    assert actor_requests == whole.calls_made  # the actors saw each call once
    keys = [
        (record["line"], record["role"], record["expert"])
        for record in read_jsonl(ProgressLog(out).path)
        if record["kind"] == "call"
    ]
    assert len(keys) == len(set(keys)) == whole.calls_made
    assert read_jsonl(out) == read_jsonl(tmp_path / "whole.jsonl")
