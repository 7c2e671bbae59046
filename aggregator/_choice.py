"""Choosing the aggregator by measurement (Symbolic-MoE): who recovers the right answer most often?

From profiling outputs (graded expert answers, with their texts) we build synthetic cases:
a question, one correct and two wrong candidate answers from different experts, shuffled.
Each candidate aggregator model synthesises an answer for every case; the answer is graded
like an expert's. The best aggregator per category (smoothed toward its overall rate, so a
category with few cases does not flip on one lucky answer) and overall is the
``AggregatorChoice``, stored beside the pool's profiles and used per query category.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aggregator._extract import EXTRACTORS, is_correct
from aggregator._synthesize import Candidate, Sampling, synthesis_request
from experts.types import Message

WRONG_PER_CASE = 2
SMOOTHING = 5.0  # prior strength, in cases, toward an aggregator's overall recovery rate


@dataclass(frozen=True)
class SyntheticCase:
    """One question with one right and two wrong candidates, in shuffled order."""

    question_id: str
    category: str
    prompt: str
    kind: str
    gold: str
    candidates: tuple[Candidate, ...]
    correct_position: int


@dataclass
class AggregatorChoice:
    """The measured aggregator per category, the overall best, and the table behind them."""

    default: str
    per_category: dict[str, str]
    recovered: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # aggregator -> category -> [right, n]

    def pick(self, skills: dict[str, float]) -> str:
        """The aggregator for a query: that of its most likely category with a measurement, else the default."""
        for skill, _ in sorted(skills.items(), key=lambda item: -item[1]):
            if skill in self.per_category:
                return self.per_category[skill]
        return self.default

    def rate(self, aggregator: str, category: str | None = None) -> float:
        """Share of cases recovered (all categories when ``category`` is None)."""
        cells = self.recovered.get(aggregator, {})
        pairs = cells.values() if category is None else [cells.get(category, [0, 0])]
        right, total = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        return right / total if total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "per_category": self.per_category, "recovered": self.recovered}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> AggregatorChoice:
        try:
            return cls(str(data["default"]), dict(data["per_category"]), dict(data.get("recovered", {})))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: not an aggregator choice document ({error})") from None


def build_cases(
    questions: list[tuple[str, Any]], answers: list[Any], per_category: int, seed: int = 0
) -> list[SyntheticCase]:
    """Cases from graded answers that kept their text; at most ``per_category`` per category.

    ``questions`` are (id, LabelledQuestion) pairs, ``answers`` GradedAnswer records. A
    question qualifies when one expert got it right and two others got it wrong with
    different answers (two identical wrong answers would test majority-following, not judgement).
    """
    rng = random.Random(seed)
    by_question: dict[str, list[Any]] = {}
    for answer in answers:
        if answer.text:
            by_question.setdefault(answer.question_id, []).append(answer)
    cases: list[SyntheticCase] = []
    taken: dict[str, int] = {}
    order = list(questions)
    rng.shuffle(order)
    for question_id, question in order:
        category = question.category or "general"
        if taken.get(category, 0) >= per_category:
            continue
        graded = sorted(by_question.get(question_id, []), key=lambda a: a.expert)
        right = [a for a in graded if a.correct]
        wrong = _distinct_wrong(graded, rng)
        if not right or len(wrong) < WRONG_PER_CASE:
            continue
        chosen = [rng.choice(right)] + wrong[:WRONG_PER_CASE]
        rng.shuffle(chosen)
        candidates = tuple(Candidate(a.expert, a.text) for a in chosen)
        position = next(i for i, a in enumerate(chosen) if a.correct)
        cases.append(
            SyntheticCase(
                question_id,
                category,
                question.prompt(),
                question.resolved_kind(),
                question.answer,
                candidates,
                position,
            )
        )
        taken[category] = taken.get(category, 0) + 1
    return cases


def _distinct_wrong(graded: list[Any], rng: random.Random) -> list[Any]:
    wrong = [a for a in graded if not a.correct]
    rng.shuffle(wrong)
    seen: set[str | None] = set()
    distinct = []
    for answer in wrong:
        if answer.pred not in seen:
            seen.add(answer.pred)
            distinct.append(answer)
    return distinct


def recovers(case: SyntheticCase, reply: str) -> bool:
    """Did the aggregator's answer state the gold answer of the case?"""
    return is_correct(case.kind, EXTRACTORS[case.kind](reply), case.gold)  # type: ignore[arg-type]


async def measure(
    pool: Any,
    cases: list[SyntheticCase],
    aggregators: list[str],
    sampling: Sampling,
    concurrency: int = 8,
    on_progress: Callable[[int], None] | None = None,
) -> AggregatorChoice:
    """Every aggregator synthesises every case for real through ``pool``; the best per category wins."""
    if not cases:
        raise ValueError(
            "no synthetic cases: the profiling results need questions with one right and two different wrong "
            "answers (with texts); profile more questions or more experts"
        )
    limiter = asyncio.Semaphore(concurrency)
    recovered: dict[str, dict[str, list[int]]] = {name: {} for name in aggregators}

    async def one(aggregator: str, case: SyntheticCase) -> None:
        async with limiter:
            request = synthesis_request([Message("user", case.prompt)], list(case.candidates), sampling)
            completion = await pool.generate(aggregator, request)
        cell = recovered[aggregator].setdefault(case.category, [0, 0])
        cell[0] += int(completion.error is None and recovers(case, completion.text))
        cell[1] += 1
        if on_progress is not None:
            on_progress(1)

    await asyncio.gather(*(one(name, case) for name in aggregators for case in cases))
    return choose(recovered)


def choose(recovered: dict[str, dict[str, list[int]]]) -> AggregatorChoice:
    """Best overall, and best per category after smoothing toward each aggregator's overall rate."""
    table = AggregatorChoice("", {}, recovered)
    names = sorted(recovered)
    overall = {name: table.rate(name) for name in names}
    default = max(names, key=lambda name: (_or_zero(overall[name]), -names.index(name)))
    categories = sorted({category for cells in recovered.values() for category in cells})
    per_category = {}
    for category in categories:

        def smoothed(name: str, category: str = category) -> float:
            right, total = recovered[name].get(category, [0, 0])
            return (right + SMOOTHING * _or_zero(overall[name])) / (total + SMOOTHING)

        per_category[category] = max(names, key=lambda name: (smoothed(name), name == default))
    return AggregatorChoice(default, per_category, recovered)


def _or_zero(value: float) -> float:
    return 0.0 if value != value else value  # NaN (no cases) ranks last
