"""Profiling on labelled questions: run every routable expert for real, grade, build profiles.

A dataset is JSON lines, one question each::

    {"id": "q1", "question": "...", "answer": "B", "kind": "choice", "category": "physics",
     "skills": ["kinematics"], "options": ["...", "..."]}

``kind`` is ``choice`` (a letter), ``number`` or ``exact`` (short text); when absent it is
inferred from the answer. Each graded answer is appended to a results file as soon as it
is known, so an interrupted run resumes where it stopped; the results file is itself an
outcome table (``<expert>|correct``, ``|pred``, ``|chars`` columns after pivoting).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aggregator import EXTRACTORS, is_correct
from router._outcome_table import OutcomeTable
from router.offline._outcomes import OutcomeFileError

INSTRUCTIONS = {
    "choice": "Answer with the letter of the correct option, as 'The answer is (X)'.",
    "number": "Finish with 'The answer is N' where N is the final number.",
    "exact": "End with a last line holding the word Answer, a colon and the short final answer.",
}


class LabelledQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    question: Annotated[str, Field(min_length=1)]
    answer: Annotated[str, Field(min_length=1)]
    kind: Literal["choice", "number", "exact"] | None = None
    category: str | None = None
    skills: list[str] | None = None
    options: list[str] | None = None

    def resolved_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        if re.fullmatch(r"[A-Ja-j]", self.answer.strip()):
            return "choice"
        if re.fullmatch(r"-?\d[\d,]*(\.\d+)?", self.answer.strip()):
            return "number"
        return "exact"

    def prompt(self) -> str:
        text = self.question
        if self.options:
            text += "\n" + "\n".join(f"({chr(65 + i)}) {option}" for i, option in enumerate(self.options))
        return f"{text}\n\n{INSTRUCTIONS[self.resolved_kind()]}"


@dataclass(frozen=True)
class GradedAnswer:
    question_id: str
    expert: str
    correct: bool
    pred: str | None
    chars: int
    text: str | None = None  # the answer itself: aggregator benchmarks build their cases from it


def load_dataset(path: str | Path) -> list[tuple[str, LabelledQuestion]]:
    """(id, question) pairs; a bad line is reported with the file, the line number and the field."""
    path = Path(path)
    if not path.exists():
        raise OutcomeFileError(f"{path}: no such dataset file")
    questions: list[tuple[str, LabelledQuestion]] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = LabelledQuestion.model_validate(json.loads(line))
        except json.JSONDecodeError as error:
            raise OutcomeFileError(f"{path}:{number}: not JSON: {error.msg}") from None
        except ValidationError as error:
            problem = error.errors()[0]
            field = ".".join(str(part) for part in problem["loc"]) or "(line)"
            raise OutcomeFileError(f"{path}:{number}: {field}: {problem['msg']}") from None
        question_id = item.id or f"line-{number}"
        if question_id in seen:
            raise OutcomeFileError(f"{path}:{number}: id {question_id!r} appears twice")
        seen.add(question_id)
        questions.append((question_id, item))
    if not questions:
        raise OutcomeFileError(f"{path}: no questions")
    return questions


def grade(question: LabelledQuestion, question_id: str, expert: str, text: str) -> GradedAnswer:
    kind = question.resolved_kind()
    prediction = EXTRACTORS[kind](text)
    correct = is_correct(kind, prediction, question.answer)  # type: ignore[arg-type]
    return GradedAnswer(question_id, expert, correct, prediction, len(text), text)


def read_results(path: Path) -> list[GradedAnswer]:
    if not path.exists():
        return []
    results = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            results.append(GradedAnswer(**json.loads(line)))
    return results


async def run_profiling(
    pool: Any,
    questions: list[tuple[str, LabelledQuestion]],
    results_path: Path,
    max_tokens: int,
    concurrency: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> list[GradedAnswer]:
    """Ask every routable expert every question not yet in ``results_path``; append as graded."""
    from experts.types import GenerationRequest, Message

    done = {(r.question_id, r.expert) for r in read_results(results_path)}
    experts = [expert.name for expert in pool.spec.routable_experts]
    todo = [(qid, q, e) for qid, q in questions for e in experts if (qid, e) not in done]
    limiter = asyncio.Semaphore(concurrency)  # enough to fill every actor's batch, not the whole file at once
    results_path.parent.mkdir(parents=True, exist_ok=True)
    with results_path.open("a", encoding="utf-8") as sink:

        async def one(question_id: str, question: LabelledQuestion, expert: str) -> None:
            async with limiter:
                messages = [Message("user", question.prompt())]
                request = GenerationRequest(messages, max_tokens=max_tokens, temperature=0.0)
                completion = await pool.generate(expert, request)
            graded = grade(question, question_id, expert, completion.text)
            sink.write(json.dumps(graded.__dict__) + "\n")
            sink.flush()
            if on_progress is not None:
                on_progress(1)

        await asyncio.gather(*(one(qid, q, e) for qid, q, e in todo))
    return read_results(results_path)


def results_table(
    questions: list[tuple[str, LabelledQuestion]], results: list[GradedAnswer], experts: list[str], source: str
) -> OutcomeTable:
    """Pivot graded answers into an outcome table (missing answers stay NaN)."""
    index = {qid: i for i, (qid, _) in enumerate(questions)}
    column = {name: j for j, name in enumerate(experts)}
    correct = np.full((len(questions), len(experts)), np.nan)
    preds = np.full((len(questions), len(experts)), None, dtype=object)
    for result in results:
        if result.question_id in index and result.expert in column:
            correct[index[result.question_id], column[result.expert]] = float(result.correct)
            preds[index[result.question_id], column[result.expert]] = result.pred
    return OutcomeTable(
        source=source,
        ids=[qid for qid, _ in questions],
        texts=[q.question for _, q in questions],
        experts=experts,
        correct=correct,
        categories=[q.category or "general" for _, q in questions],
        skills=[q.skills or [] for _, q in questions] if any(q.skills for _, q in questions) else None,
        answers=[q.answer for _, q in questions],
        preds=preds,
    )
