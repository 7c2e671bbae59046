"""Pool files: the default one is valid; every kind of mistake names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from experts.config._pool_spec import POOLS_DIR, PoolFileError, load_pool
from orchestrator.cli.main import app

GOOD_EXPERT = "  - {name: a, backend: local, model: embedded:smollm2-135m-instruct, skills: [math]}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    return path


def test_default_pool_has_four_routed_experts_and_an_aggregator() -> None:
    pool = load_pool("default")
    assert [e.name for e in pool.routable_experts] == ["math", "coder", "writer", "generalist"]
    assert pool.roles.aggregator == "conductor" and not pool.expert("conductor").routable
    assert {skill for e in pool.routable_experts for skill in e.skills} >= {
        "math",
        "code",
        "writing",
        "general_knowledge",
    }
    assert len({e.system_prompt for e in pool.routable_experts}) == 4
    assert all(e.model == "embedded:smollm2-135m-instruct" for e in pool.experts)


def test_skill_list_is_short_for_full_competence(tmp_path: Path) -> None:
    pool = load_pool(write(tmp_path, "experts:\n" + GOOD_EXPERT))
    assert pool.experts[0].skills == {"math": 1.0}


def test_unknown_backend_names_file_field_and_expert(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n" + GOOD_EXPERT + "  - {name: b, backend: tensorflow, model: x}\n")
    with pytest.raises(PoolFileError) as caught:
        load_pool(path)
    message = str(caught.value)
    assert str(path) in message
    assert "experts[1] (name: 'b').backend" in message
    assert "tensorflow" in message


def test_misspelt_field_is_rejected_not_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n  - {name: a, backend: local, model: m, sytem_prompt: hi}\n")
    with pytest.raises(
        PoolFileError, match=r"experts\[0\] \(name: 'a'\)\.sytem_prompt: Extra inputs are not permitted"
    ):
        load_pool(path)


def test_out_of_range_values_are_reported_with_their_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "experts:\n  - name: a\n    backend: local\n    model: m\n    generation: {temperature: 7}\n"
        "    batching: {max_batch_size: 0}\n",
    )
    with pytest.raises(PoolFileError) as caught:
        load_pool(path)
    assert "generation.temperature" in str(caught.value)
    assert "batching.max_batch_size" in str(caught.value)


def test_duplicate_names_and_dangling_roles(tmp_path: Path) -> None:
    with pytest.raises(PoolFileError, match="appears twice"):
        load_pool(write(tmp_path, "experts:\n" + GOOD_EXPERT + GOOD_EXPERT))
    with pytest.raises(PoolFileError, match="roles.aggregator names 'ghost'"):
        load_pool(write(tmp_path, "roles: {aggregator: ghost}\nexperts:\n" + GOOD_EXPERT))


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n  - name: a\n    backend: [local\n")
    with pytest.raises(PoolFileError, match=r"line \d+, column \d+: not valid YAML"):
        load_pool(path)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PoolFileError, match="top level must be a mapping"):
        load_pool(write(tmp_path, ""))
    with pytest.raises(PoolFileError, match="no file .*absent.yaml, and no pool of that name") as missing:
        load_pool(tmp_path / "absent.yaml")
    assert "pools by name: default, examples/litellm, examples/moe" in str(missing.value)  # what exists
    with pytest.raises(PoolFileError, match="'.*': a folder, not a file"):
        load_pool(tmp_path)
    assert load_pool("examples/moe").name  # a pool in a folder of deploy/pools, by name


def test_bad_expert_name(tmp_path: Path) -> None:
    with pytest.raises(PoolFileError, match=r"experts\[0\] \(name: 'Bad Name'\)\.name"):
        load_pool(write(tmp_path, "experts:\n  - {name: Bad Name, backend: local, model: m}\n"))


def test_cli_refuses_a_bad_pool_file_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n  - {name: a, backend: nope, model: m}\n")
    result = CliRunner().invoke(app, ["serve", "--pool", str(path)])
    assert result.exit_code == 2
    assert "experts[0] (name: 'a').backend" in result.output


def test_cli_lists_experts_of_the_default_pool() -> None:
    result = CliRunner().invoke(app, ["experts"])
    assert result.exit_code == 0, result.output
    for name in ("math", "coder", "writer", "generalist", "conductor", "aggregator"):
        assert name in result.output


@pytest.mark.parametrize("example", sorted((POOLS_DIR / "examples").glob("*.yaml")), ids=lambda path: path.name)
def test_example_pools_are_valid(example: Path) -> None:
    pool = load_pool(example)
    assert pool.experts and all(expert.name for expert in pool.experts)
