"""Outcome tables read from files: which expert got which labelled question right, and what it cost.

An outcome table has one row per question and, per expert, a ``<expert>|correct`` column
(bool; missing values allowed), optionally ``<expert>|pred`` (the extracted answer, for
voting) and ``<expert>|chars`` (length of the generated text, for cost). The question
text is ``question`` (+ ``options``) or ``prompt``; ``category``, ``answer`` and the finer
skill labels (``skills``, a list per question, or ``src``, one label) are optional;
``benchmark`` splits one file into several independent tables. Parquet, CSV and JSON
lines are read. Every problem is reported with the file and the column.

``TableLimits`` bounds a table before it is read (an upload to the API): rows, columns and decoded bytes are
measured on the raw bytes (CSV, JSON lines) or from the Parquet footer, so a table too large for its limits is
refused with ``TableTooLarge`` before pandas materialises any of it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from router._outcome_table import OutcomeTable

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


class TableTooLarge(OutcomeFileError):
    """A table beyond one of its ``TableLimits``; the message names the table, what was measured, the limit and
    the setting (``setting``, e.g. ``routing_evaluation.max_rows``)."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class TableLimits:
    """How large a table ``read_outcomes`` accepts, checked before it is materialised; None: unlimited (the CLI on
    local files). ``section`` names the settings in errors: ``{section}.max_rows`` and so on."""

    max_rows: int | None = None  # questions (data rows; blank lines and the CSV header not counted)
    max_columns: int | None = None  # columns (Parquet: leaf columns; JSON lines: every key any record has)
    max_table_bytes: int | None = None  # the table as read (Parquet: also its row groups uncompressed)
    section: str = "limits"

    def setting(self, name: str) -> str:
        return f"{self.section}.{name}"


UNLIMITED = TableLimits()


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


def read_outcomes(
    data: bytes, fmt: str, pool: str | None = None, source: str = "table", limits: TableLimits = UNLIMITED
) -> dict[str, OutcomeTable]:
    """``load_outcomes`` on bytes already in hand (an upload): ``fmt`` is one of ``OUTCOME_FORMATS``; ``source`` names
    the table in every error; ``limits`` are checked first (``check_limits``)."""
    import io

    import pandas as pd

    if fmt not in OUTCOME_FORMATS:
        raise OutcomeFileError(f"{source}: unsupported format {fmt!r}; use one of {', '.join(OUTCOME_FORMATS)}")
    check_limits(data, fmt, limits, source)
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


def check_limits(data: bytes, fmt: str, limits: TableLimits, source: str = "table") -> None:
    """Raise ``TableTooLarge`` when ``data`` is beyond ``limits``, measured without materialising the table: the
    byte size; CSV: the header's fields and the records (lines counted first, records parsed one at a time only
    when the lines alone exceed the limit); JSON lines: the non-blank lines, and every key of every record (parsed
    one line at a time) for the columns; Parquet: the footer (rows, columns, row groups' uncompressed size), so
    a file that decompresses to far more than it weighs is refused from its metadata. A table these cannot measure
    (not CSV, bad Parquet) is left to the reader's own error."""
    if limits == UNLIMITED:
        return
    _at_most(source, "bytes", len(data), limits.max_table_bytes, limits.setting("max_table_bytes"))
    if fmt == "parquet":
        _check_parquet(data, limits, source)
    elif fmt == "csv":
        _check_csv(data, limits, source)
    elif fmt == "jsonl":
        _check_json_lines(data, limits, source)
    elif limits.max_rows is not None or limits.max_columns is not None:  # one JSON array: bounded by its bytes
        _check_json_array(data, limits, source)


def _at_most(source: str, what: str, measured: int, limit: int | None, setting: str, how: str = "") -> None:
    if limit is not None and measured > limit:
        advice = "send fewer questions" if what == "rows" else "send fewer experts or drop unused columns"
        if what.endswith("bytes"):
            advice = "send fewer questions or columns"
        raise TableTooLarge(
            f"{source}: {how}{measured:,} {what}, more than the {limit:,} allowed ({setting}); {advice}", setting
        )


def _check_parquet(data: bytes, limits: TableLimits, source: str) -> None:
    import io

    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(io.BytesIO(data)).metadata  # the footer only: no column data is read
    except Exception:
        return  # not Parquet: the reader says so
    how = "its Parquet metadata says "
    _at_most(source, "rows", metadata.num_rows, limits.max_rows, limits.setting("max_rows"), how)
    _at_most(source, "columns", metadata.num_columns, limits.max_columns, limits.setting("max_columns"), how)
    uncompressed = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    how = "uncompressed, its row groups hold "
    _at_most(source, "bytes", uncompressed, limits.max_table_bytes, limits.setting("max_table_bytes"), how)


def _check_csv(data: bytes, limits: TableLimits, source: str) -> None:
    import csv
    import io

    def records() -> Iterator[list[str]]:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace", newline="")
        return (row for row in csv.reader(text) if row)  # pandas skips blank lines too

    if limits.max_columns is not None:
        try:
            header = next(records(), [])
        except csv.Error:  # e.g. a field beyond the csv module's size limit: count the separators instead
            header = re.split(rb"[\r\n]", data, maxsplit=1)[0].split(b",")  # type: ignore[assignment]
        _at_most(source, "columns", len(header), limits.max_columns, limits.setting("max_columns"), "its header has ")
    if limits.max_rows is None:
        return
    lines = data.count(b"\n") + data.count(b"\r") + 1  # at least the lines: pandas ends one at \n, \r or \r\n
    if lines - 1 <= limits.max_rows:
        return  # a record spans a line or more: no more records than lines
    try:  # the header, then at most one record too many
        count, more = sum(1 for _ in islice(records(), limits.max_rows + 2)) - 1, "at least "
    except csv.Error:  # unreadable here: the lines bound it
        count, more = lines - 1, "up to "
    _at_most(source, "rows", count, limits.max_rows, limits.setting("max_rows"), more)


def _check_json_lines(data: bytes, limits: TableLimits, source: str) -> None:
    """Every non-blank line must be one JSON record (pandas joins the lines into one array, so a line holding
    several comma-separated records would otherwise count once here and many times there)."""
    import io
    import json

    if limits.max_rows is None and limits.max_columns is None:
        return
    rows, columns = 0, set[str]()
    for number, line in enumerate(io.BytesIO(data), start=1):  # pandas splits at \n only
        if not line.strip():
            continue
        rows += 1
        if limits.max_rows is not None and rows > limits.max_rows:
            _at_most(source, "rows", rows, limits.max_rows, limits.setting("max_rows"), "at least ")
        try:
            record = json.loads(line)
        except ValueError:
            raise OutcomeFileError(
                f"{source}: line {number} is not one JSON record (JSON lines: one per line)"
            ) from None
        if isinstance(record, dict):
            columns.update(record)
        elif isinstance(record, list):  # arrays per line give numbered columns
            columns.update(map(str, range(len(record))))
        if limits.max_columns is not None and len(columns) > limits.max_columns:
            _at_most(
                source, "columns", len(columns), limits.max_columns, limits.setting("max_columns"), "its records name "
            )


def _check_json_array(data: bytes, limits: TableLimits, source: str) -> None:
    import json

    try:
        records = json.loads(data)
    except ValueError:
        return
    if not isinstance(records, list):
        return
    _at_most(source, "rows", len(records), limits.max_rows, limits.setting("max_rows"))
    columns = {key for record in records if isinstance(record, dict) for key in record}
    _at_most(source, "columns", len(columns), limits.max_columns, limits.setting("max_columns"), "its records name ")


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
