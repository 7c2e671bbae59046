"""Outcome tables: which expert got which labelled question right, and what it cost.

An outcome table has one row per question and, per expert, a ``<expert>|correct`` column
(bool; missing values allowed), optionally ``<expert>|pred`` (the extracted answer, for
voting) and ``<expert>|chars`` (length of the generated text, for cost). The question
text is ``question`` (+ ``options``) or ``prompt``; ``category``, ``answer`` and the finer
skill labels (``skills``, a list per question, or ``src``, one label) are optional;
``benchmark`` splits one file into several independent tables. Parquet, CSV and JSON
lines are read. Every problem is reported with the file and the column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

# Active parameters (billions) per model family, from ../shared/data/routing/README.md; the cost
# of one expert call is active parameters x output tokens (chars / 4).
ACTIVE_PARAMS_B: dict[str, float] = {
    "Meta-Llama-3_1-8B": 8.0,
    "Mistral-7B": 7.2,
    "Qwen1.5-7B": 7.7,
    "mathstral-7B": 7.2,
    "gemma-7b": 8.5,
    "Phi-3-mini": 3.8,
    "Yi-6": 6.1,
    "Meta-Llama-3_1-70B": 70.6,
    "Qwen1.5-72B": 72.3,
    "Mixtral-8x7B": 12.9,
    "c4ai-command-r": 35.0,
    "Yi-34B": 34.4,
}

NAMED_POOLS: dict[str, list[str]] = {
    "open-small": [
        "Meta-Llama-3_1-8B-Instruct",
        "Mistral-7B-Instruct-v0.2",
        "Qwen1.5-7B-Chat",
        "mathstral-7B",
        "gemma-7b",
        "Phi-3-mini-4k-instruct",
        "Yi-6b-Chat",
    ],
    "mixed": [
        "Meta-Llama-3_1-70B-Instruct",
        "Qwen1.5-72B-Chat",
        "Mixtral-8x7B-Instruct-v0.1",
        "mathstral-7B",
        "c4ai-command-r-v01",
        "Yi-34B",
        "Meta-Llama-3_1-8B-Instruct",
    ],
}


class OutcomeFileError(ValueError):
    """An outcome table that cannot be used; the message names the file and the column."""


@dataclass(frozen=True)
class OutcomeTable:
    """Questions x experts. ``correct`` holds 1.0/0.0 and NaN where an outcome is missing."""

    source: str
    ids: list[str]
    texts: list[str]
    experts: list[str]
    correct: np.ndarray  # (questions, experts) float
    categories: list[str] | None = None
    skills: list[list[str]] | None = None  # finer labels per question (several allowed)
    answers: list[str] | None = None
    preds: np.ndarray | None = None  # (questions, experts) object: extracted answers or None
    cost: np.ndarray | None = None  # (questions, experts) float: active params x output tokens

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, mask: np.ndarray) -> OutcomeTable:
        """The questions where ``mask`` is true."""
        index = np.flatnonzero(mask)
        pick = [self.ids[i] for i in index]
        return replace(
            self,
            ids=pick,
            texts=[self.texts[i] for i in index],
            correct=self.correct[index],
            categories=[self.categories[i] for i in index] if self.categories else None,
            skills=[self.skills[i] for i in index] if self.skills else None,
            answers=[self.answers[i] for i in index] if self.answers else None,
            preds=self.preds[index] if self.preds is not None else None,
            cost=self.cost[index] if self.cost is not None else None,
        )

    def split(self, test_share: float, seed: int = 0) -> tuple[OutcomeTable, OutcomeTable]:
        """Deterministic train/test split by a hash of the question id (and the seed)."""
        if not 0.0 < test_share < 1.0:
            raise ValueError(f"--split must be between 0 and 1 (exclusive), got {test_share}")
        buckets = np.array([_bucket(f"{seed}:{question}") for question in self.ids])
        train, test = self.rows(buckets >= test_share), self.rows(buckets < test_share)
        if not len(train) or not len(test):
            raise ValueError(
                f"{self.source}: {len(self)} question(s) split at a test share of {test_share} leave "
                f"{len(train)} for training and {len(test)} for testing; both need some: give more questions"
            )
        return train, test


def _bucket(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / float(16**12)


def active_params(expert: str) -> float | None:
    """Active parameters of a known model family, by name prefix (longest match)."""
    matches = [prefix for prefix in ACTIVE_PARAMS_B if expert.startswith(prefix)]
    return ACTIVE_PARAMS_B[max(matches, key=len)] if matches else None


def resolve_pool_names(pool: str | None, available: list[str], source: str) -> list[str]:
    """``open-small``/``mixed``, or comma-separated expert names; None means every expert of the file."""
    if pool is None:
        return list(available)
    names = NAMED_POOLS.get(pool) or [name.strip() for name in pool.split(",") if name.strip()]
    unknown = [name for name in names if name not in available]
    if unknown:
        shown = ", ".join(available[:8]) + (" ..." if len(available) > 8 else "")
        raise OutcomeFileError(
            f"{source}: no outcome columns for expert(s) {', '.join(unknown)}; the file has: {shown} "
            f"(named pools: {', '.join(NAMED_POOLS)})"
        )
    return names


OUTCOME_FORMATS = ("parquet", "csv", "jsonl", "json")  # json: one array of row objects


def load_outcomes(path: str | Path, pool: str | None = None) -> dict[str, OutcomeTable]:
    """Read an outcome file; returns one table per ``benchmark`` value (``{"all": table}`` without one)."""
    path = Path(path)
    if not path.exists():
        raise OutcomeFileError(f"{path}: no such outcome file")
    suffix = path.suffix.removeprefix(".")
    if suffix not in OUTCOME_FORMATS:
        raise OutcomeFileError(f"{path}: unsupported format {path.suffix!r}; use .parquet, .csv or .jsonl")
    return read_outcomes(path.read_bytes(), suffix, pool, str(path))


def read_outcomes(data: bytes, fmt: str, pool: str | None = None, source: str = "table") -> dict[str, OutcomeTable]:
    """``load_outcomes`` on bytes already in hand (an upload): ``fmt`` is one of ``OUTCOME_FORMATS``; ``source`` names
    the table in every error."""
    import io

    import pandas as pd

    if fmt not in OUTCOME_FORMATS:
        raise OutcomeFileError(f"{source}: unsupported format {fmt!r}; use one of {', '.join(OUTCOME_FORMATS)}")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(io.BytesIO(data))
        elif fmt == "csv":
            frame = pd.read_csv(io.BytesIO(data))
        else:
            frame = pd.read_json(io.BytesIO(data), lines=fmt == "jsonl")
    except Exception as error:
        raise OutcomeFileError(f"{source}: cannot be read as {fmt}: {error}") from None
    frame.columns = [str(column) for column in frame.columns]  # JSON arrays per line give numbered columns
    available = [column.removesuffix("|correct") for column in frame.columns if column.endswith("|correct")]
    if not available:
        raise OutcomeFileError(f"{source}: no '<expert>|correct' columns; see ../shared/data/routing/README.md")
    experts = resolve_pool_names(pool, available, source)
    if "benchmark" in frame.columns:
        return {
            str(name): _table(group.reset_index(drop=True), experts, f"{source}[benchmark={name}]")
            for name, group in frame.groupby("benchmark", sort=True)
        }
    return {"all": _table(frame, experts, source)}


def _table(frame: object, experts: list[str], source: str) -> OutcomeTable:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    if "question" in frame.columns:
        texts = frame["question"].astype(str)
        if "options" in frame.columns:
            texts = texts + "\n" + frame["options"].map(_join_options)
    elif "prompt" in frame.columns:
        texts = frame["prompt"].astype(str)
    else:
        raise OutcomeFileError(f"{source}: needs a 'question' or 'prompt' column with the query text")
    ids = frame["question_id"].astype(str).tolist() if "question_id" in frame.columns else _text_ids(texts.tolist())
    correct = np.empty((len(frame), len(experts)))
    for j, expert in enumerate(experts):
        column = frame[f"{expert}|correct"]
        values = column.map(_as_outcome)
        if values.map(lambda v: v is _BAD).any():
            bad = column[values.map(lambda v: v is _BAD)].iloc[0]
            raise OutcomeFileError(f"{source}: column '{expert}|correct' must hold booleans, found {bad!r}")
        correct[:, j] = values.astype(float).to_numpy()
    preds = None
    if all(f"{expert}|pred" in frame.columns for expert in experts):
        # a list, not Series.map: pandas would turn the None of "no answer" back into NaN, a ballot for "nan"
        columns = [[_as_pred(value) for value in frame[f"{e}|pred"]] for e in experts]
        preds = np.empty((len(frame), len(experts)), dtype=object)
        for j, column in enumerate(columns):
            preds[:, j] = column
    return OutcomeTable(
        source=source,
        ids=ids,
        texts=texts.tolist(),
        experts=list(experts),
        correct=correct,
        categories=frame["category"].astype(str).tolist() if "category" in frame.columns else None,
        skills=_skills(frame),
        answers=frame["answer"].astype(str).tolist() if "answer" in frame.columns else None,
        preds=preds,
        cost=_cost(frame, experts),
    )


def _skills(frame: object) -> list[list[str]] | None:
    """Per question, its skill labels: a ``skills`` list column, else the one ``src`` label."""
    if "skills" in frame.columns:  # type: ignore[attr-defined]
        return [[str(s) for s in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])] for v in frame["skills"]]  # type: ignore[index]
    if "src" in frame.columns:  # type: ignore[attr-defined]
        return [[str(v)] for v in frame["src"]]  # type: ignore[index]
    return None


_BAD = object()


def _as_outcome(value: object) -> object:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return float(bool(value))
    return _BAD


def _as_pred(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _join_options(options: object) -> str:
    if options is None or isinstance(options, float):
        return ""
    return "\n".join(f"{chr(65 + i)}. {option}" for i, option in enumerate(list(options)))  # type: ignore[call-overload]


def _text_ids(texts: list[str]) -> list[str]:
    return [hashlib.sha256(text.encode()).hexdigest()[:16] for text in texts]


def _cost(frame: object, experts: list[str]) -> np.ndarray | None:
    """Per call: active parameters x output tokens (chars / 4), when both are known for every expert."""
    params = [active_params(expert) for expert in experts]
    if any(p is None for p in params) or not all(f"{e}|chars" in frame.columns for e in experts):  # type: ignore[attr-defined]
        return None
    chars = np.stack([frame[f"{e}|chars"].astype(float).to_numpy() for e in experts], axis=1)  # type: ignore[index]
    chars = np.where(np.isnan(chars), np.nanmean(chars, axis=0, keepdims=True), chars)
    return chars / 4.0 * np.array(params, dtype=float)[None, :]
