"""Files of ``moesaic batch``: the input lines, the progress log that makes a run resumable, the output.

Input: JSONL, one object per line with ``question`` or ``messages``, optionally ``id``,
``experts`` (forced choice), ``k``, ``max_tokens``, ``temperature``, ``seed``; other fields
(gold answers, labels) are ignored. A bad line becomes an output line with its error, naming
the line number and the field, so the output still has one line per input line.

Progress: ``OUT.progress.jsonl`` beside the output, append-only: a header (the input's hash,
so a progress file is never applied to another input), each item's routing decision, each
finished model call. A re-run reads it back, skips what is recorded and makes only the
missing calls. A line cut short by a kill is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from experts.types import Completion, GenerationRequest, Message, Usage
from router import RoutingDecision

PROGRESS_VERSION = 1


class BatchInputError(ValueError):
    """The input or progress file cannot be used at all (not one bad line: those go to the output)."""


class _Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class BatchItem(BaseModel):
    """One input line."""

    model_config = ConfigDict(extra="ignore")

    id: str | int | None = None
    question: str | None = None
    messages: list[_Turn] | None = None
    experts: list[str] | None = Field(None, min_length=1)
    k: int | None = Field(None, ge=1, le=16)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_conversation(self) -> BatchItem:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give exactly one of 'question' (a string) or 'messages' (a chat list)")
        if self.messages is not None and not any(turn.role == "user" for turn in self.messages):
            raise ValueError("'messages' needs at least one user turn")
        if self.experts is not None and len(set(self.experts)) != len(self.experts):
            raise ValueError("'experts' names an expert twice; list each once")
        return self

    def generation(self, max_tokens: int | None, temperature: float | None) -> GenerationRequest:
        """The model call this item asks every expert for (``max_tokens``/``temperature``: the run's defaults)."""
        turns = [Message("user", self.question or "")] if self.messages is None else []
        turns += [Message(turn.role, turn.content) for turn in self.messages or []]
        return GenerationRequest(
            turns,
            max_tokens=self.max_tokens or max_tokens,
            temperature=self.temperature if self.temperature is not None else temperature,
            seed=self.seed,
        )


@dataclass
class InputLine:
    """A line of the input: its parsed item, or why it could not be parsed."""

    line: int
    item: BatchItem | None = None
    error: str | None = None
    raw_id: Any = None  # the line's id, when it had one, even if the rest was bad


def read_items(path: Path) -> tuple[list[InputLine], str]:
    """Every line of ``path`` (blank lines too: each input line gets an output line), and the file's hash."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BatchInputError(f"{path}: cannot read: {error.strerror}") from None
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [_parse(number, text) for number, text in enumerate(lines, start=1)], hashlib.sha256(data).hexdigest()


def _parse(number: int, text: str) -> InputLine:
    if not text.strip():
        return InputLine(number, error=f"line {number}: empty line; expected a JSON object")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        return InputLine(number, error=f"line {number}: not valid JSON: {error.msg} (column {error.colno})")
    if not isinstance(raw, dict):
        return InputLine(number, error=f"line {number}: expected a JSON object, got {type(raw).__name__}")
    try:
        return InputLine(number, item=BatchItem.model_validate(raw), raw_id=raw.get("id"))
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in problem["loc"]).replace(".[", "[")
            problems.append(f"{where or '(line)'}: {problem['msg'].removeprefix('Value error, ')}")
        return InputLine(number, error=f"line {number}: " + "; ".join(problems), raw_id=raw.get("id"))


# -- progress ------------------------------------------------------------------------------
@dataclass
class Progress:
    """What earlier runs recorded: routing per line, finished calls per (line, role, expert)."""

    routes: dict[int, RoutingDecision] = field(default_factory=dict)
    calls: dict[tuple[int, str, str], Completion] = field(default_factory=dict)


class ProgressLog:
    """The append-only progress file of one output file."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(out.name + ".progress.jsonl")
        self._handle: Any = None

    def open(self, input_sha256: str, pool: str) -> Progress:
        """Read what is recorded (checking it belongs to this input), then keep the file open for appends."""
        progress = Progress()
        header = {"kind": "header", "version": PROGRESS_VERSION, "input_sha256": input_sha256, "pool": pool}
        if self.path.exists():
            records = _read_records(self.path)
            first = records[0] if records else None
            if first is not None and (first.get("kind") != "header" or first.get("input_sha256") != input_sha256):
                raise BatchInputError(
                    f"{self.path} records a run over a different input file; delete it to start afresh, or write "
                    "to another output file"
                )
            for record in records[1:]:
                if record.get("kind") == "route":
                    progress.routes[record["line"]] = RoutingDecision.model_validate(record["decision"])
                elif record.get("kind") == "call":
                    key = (record["line"], record["role"], record["expert"])
                    progress.calls[key] = _completion(record["completion"])
            fresh = first is None
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = True
        self._handle = open(self.path, "a", encoding="utf-8")
        if fresh:
            self._append(header)
        return progress

    def route(self, line: int, decision: RoutingDecision) -> None:
        self._append({"kind": "route", "line": line, "decision": decision.model_dump(mode="json")})

    def call(self, line: int, role: str, expert: str, completion: Completion) -> None:
        record = {"kind": "call", "line": line, "role": role, "expert": expert, "completion": asdict(completion)}
        self._append(record)

    def sync(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None

    def _append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a line cut short when the run was killed: that call is made again
    return records


def _completion(data: dict[str, Any]) -> Completion:
    return Completion(**{**data, "usage": Usage(**data["usage"])})


def write_output(out: Path, rows: list[dict[str, Any]]) -> None:
    """All output lines at once, through a temporary file, so OUT is never half written."""
    staging = out.with_name(out.name + ".partial")
    with open(staging, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    staging.replace(out)
