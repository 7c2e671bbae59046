"""Outcome tables, profiles, and their round trips through real Redis and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router._profiles import ProfileSet, build_profiles
from router._store import ProfileStore, ProfileStoreError, export_json, import_json
from router.offline._outcomes import OutcomeFileError, load_outcomes


def small_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "question_id": ["q1", "q2", "q3", "q4"],
            "question": ["solve x + 1 = 2", "integrate x", "who was Caesar", "when did Rome fall"],
            "category": ["math", "math", "history", "history"],
            "src": ["algebra", "calculus", "rome", "rome"],
            "answer": ["A", "B", "C", "D"],
            "alpha|correct": [True, True, False, None],
            "alpha|pred": ["A", "B", "A", None],
            "beta|correct": [False, True, True, True],
            "beta|pred": ["C", "B", "C", "D"],
        }
    )


@pytest.fixture()
def table_file(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.parquet"
    small_frame().to_parquet(path)
    return path


def test_profiles_count_smooth_and_score(table_file: Path) -> None:
    table = load_outcomes(table_file)["all"]
    assert table.experts == ["alpha", "beta"] and np.isnan(table.correct[3, 0])
    profiles = build_profiles(table, pool="t", smoothing=2.0)
    assert profiles.categories == ["history", "math"]
    assert profiles.answered.tolist() == [[1, 2], [2, 2]]  # alpha's missing outcome is not counted
    assert profiles.correct.tolist() == [[0, 2], [2, 1]]
    assert profiles.global_accuracy.tolist() == pytest.approx([2 / 3, 3 / 4])
    # (correct + 2 x global) / (answered + 2): alpha on history = (0 + 4/3) / 3
    assert profiles.accuracy[0, 0] == pytest.approx((4 / 3) / 3)
    assert profiles.skill_score.tolist() == [[-1, 2], [2, 0]]
    assert profiles.best_expert_per_category() == {"history": "beta", "math": "alpha"}
    skills = profiles.skill_table()
    assert sorted(skills) == ["algebra", "calculus", "rome"]
    assert skills["rome"]["beta"] == {
        "answered": 2.0,
        "correct": 2.0,
        "accuracy": pytest.approx((2 + 1.5) / 4, abs=1e-4),
        "skill_score": 2.0,
    }
    assert skills["rome"]["alpha"]["answered"] == 1.0 and skills["rome"]["alpha"]["skill_score"] == -1.0


def test_json_round_trip(table_file: Path, tmp_path: Path) -> None:
    profiles = build_profiles(load_outcomes(table_file)["all"], pool="t")
    export_json(profiles, tmp_path / "p.json")
    again = import_json(tmp_path / "p.json")
    assert again.to_dict() == profiles.to_dict()
    assert again.skill_table() == profiles.skill_table() != {}
    assert np.isnan(again.query_correct[3, 0])


def test_broken_profile_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not JSON"):
        import_json(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": 1, "pool": "x"}))
    with pytest.raises(ValueError, match="other.json: not a profile document"):
        import_json(tmp_path / "other.json")


def test_redis_versions_per_pool(table_file: Path, redis_url: str) -> None:
    profiles = build_profiles(load_outcomes(table_file)["all"], pool="ignored")
    store = ProfileStore(redis_url, "pool-a")
    first = store.save(profiles)
    second = store.save(build_profiles(load_outcomes(table_file)["all"], pool="x", smoothing=3.0))
    assert second == first + 1 and store.versions()[-2:] == [first, second]
    assert store.load().smoothing == 3.0 and store.load().pool == "pool-a"
    store.activate(first)
    loaded = store.load()
    assert loaded.version == first and loaded.to_dict()["correct"] == profiles.to_dict()["correct"]
    with pytest.raises(ProfileStoreError, match="no profile version 999"):
        store.activate(999)
    with pytest.raises(ProfileStoreError, match="no profiles stored for pool 'pool-b'"):
        ProfileStore(redis_url, "pool-b").load()


def test_unreachable_redis_is_a_clear_error(table_file: Path) -> None:
    from tests.conftest import free_port

    store = ProfileStore(f"redis://127.0.0.1:{free_port()}/0", "p")
    with pytest.raises(ProfileStoreError, match="cannot reach Redis"):
        store.save(build_profiles(load_outcomes(table_file)["all"], pool="p"))


def test_bad_outcome_files(tmp_path: Path) -> None:
    with pytest.raises(OutcomeFileError, match="no such outcome file"):
        load_outcomes(tmp_path / "absent.parquet")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(OutcomeFileError, match="unsupported format '.txt'"):
        load_outcomes(tmp_path / "t.txt")
    pd.DataFrame({"question": ["q"], "score": [1]}).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(OutcomeFileError, match=r"none.csv: no '<expert>\|correct' columns"):
        load_outcomes(tmp_path / "none.csv")
    pd.DataFrame({"text": ["q"], "a|correct": [True]}).to_csv(tmp_path / "notext.csv", index=False)
    with pytest.raises(OutcomeFileError, match="needs a 'question' or 'prompt' column"):
        load_outcomes(tmp_path / "notext.csv")
    pd.DataFrame({"question": ["q"], "a|correct": ["maybe"]}).to_csv(tmp_path / "values.csv", index=False)
    with pytest.raises(OutcomeFileError, match=r"column 'a\|correct' must hold booleans, found 'maybe'"):
        load_outcomes(tmp_path / "values.csv")


def test_unknown_expert_names(table_file: Path) -> None:
    with pytest.raises(OutcomeFileError, match="no outcome columns for expert.s. gamma; the file has: alpha, beta"):
        load_outcomes(table_file, pool="alpha,gamma")
    assert load_outcomes(table_file, pool="beta")["all"].experts == ["beta"]


def test_split_is_deterministic_and_disjoint(table_file: Path) -> None:
    table = load_outcomes(table_file)["all"]
    train, test = table.split(0.5, seed=3)
    again_train, again_test = table.split(0.5, seed=3)
    assert train.ids == again_train.ids and test.ids == again_test.ids
    assert sorted(train.ids + test.ids) == sorted(table.ids)
    with pytest.raises(ValueError, match="between 0 and 1"):
        table.split(1.5)


def test_profile_document_checks_shapes() -> None:
    with pytest.raises(ValueError, match="categories x experts"):
        ProfileSet.from_dict(
            {
                "format": 1,
                "pool": "p",
                "experts": ["a"],
                "categories": ["c", "d"],
                "answered": [[1]],
                "correct": [[1]],
                "smoothing": 1,
                "queries": {"ids": [], "texts": [], "categories": [], "correct": []},
            }
        )
