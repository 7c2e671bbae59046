"""Expert profiles: what each expert has been measured to do well.

Per expert, per category and per skill (finer labels, several per question): how many
profiled questions it answered, how many correctly, the accuracy smoothed toward its
overall accuracy (so a category with three questions does not claim 100%), and
Symbolic-MoE's skill score (+1 per correct answer, -1 per wrong one). The profiled questions themselves
are kept, with every expert's outcome, for per-query estimates from similar questions.

A ``ProfileSet`` is plain data: it round-trips through JSON (``to_dict``/``from_dict``) and
is what the Redis store keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router._outcome_table import OutcomeTable

UNCATEGORISED = "general"
FORMAT_VERSION = 1


@dataclass
class ProfileSet:
    """Profiles of ``experts`` over ``categories``; arrays are (categories, experts)."""

    pool: str
    experts: list[str]
    categories: list[str]
    answered: np.ndarray  # (C, E) questions with a known outcome
    correct: np.ndarray  # (C, E)
    smoothing: float  # prior strength, in questions, toward the expert's overall accuracy
    mean_cost: np.ndarray | None  # (C, E) mean cost of one call, or None when unknown
    query_ids: list[str]
    query_texts: list[str]
    query_categories: list[str]
    query_correct: np.ndarray  # (N, E) 1/0/NaN
    source: str = ""
    version: int | None = None
    skills: list[str] | None = None
    skill_answered: np.ndarray | None = None  # (S, E)
    skill_correct: np.ndarray | None = None  # (S, E)
    query_preds: np.ndarray | None = None  # (N, E) object: each expert's extracted answer (None: none given)
    query_cost: np.ndarray | None = None  # (N, E) what each call cost

    def outcomes(self) -> OutcomeTable:
        """The profiled questions as an outcome table (for fits on part of them, e.g. out of fold)."""
        return OutcomeTable(
            source=self.source or self.pool,
            ids=list(self.query_ids),
            texts=list(self.query_texts),
            experts=list(self.experts),
            correct=self.query_correct,
            categories=list(self.query_categories),
            preds=self.query_preds,
            cost=self.query_cost,
        )

    # -- derived statistics ----------------------------------------------------------------
    @property
    def global_accuracy(self) -> np.ndarray:
        """(E,) accuracy over every profiled question."""
        return self.correct.sum(0) / np.maximum(self.answered.sum(0), 1)

    @property
    def accuracy(self) -> np.ndarray:
        """(C, E) per-category accuracy, smoothed toward the expert's global accuracy."""
        prior = self.global_accuracy[None, :]
        return (self.correct + self.smoothing * prior) / (self.answered + self.smoothing)

    @property
    def skill_score(self) -> np.ndarray:
        """(C, E) Symbolic-MoE's score: +1 for each correct answer, -1 for each wrong one."""
        return 2 * self.correct - self.answered

    @property
    def global_cost(self) -> np.ndarray | None:
        if self.mean_cost is None:
            return None
        weights = self.answered / np.maximum(self.answered.sum(0, keepdims=True), 1)
        return (self.mean_cost * weights).sum(0)

    def skill_table(self) -> dict[str, dict[str, dict[str, float]]]:
        """skill -> expert -> answered, correct, smoothed accuracy, +-1 skill score (empty without skills)."""
        if self.skills is None or self.skill_answered is None or self.skill_correct is None:
            return {}
        prior = self.global_accuracy[None, :]
        accuracy = (self.skill_correct + self.smoothing * prior) / (self.skill_answered + self.smoothing)
        score = 2 * self.skill_correct - self.skill_answered
        return {
            skill: {
                expert: {
                    "answered": float(self.skill_answered[s, e]),
                    "correct": float(self.skill_correct[s, e]),
                    "accuracy": round(float(accuracy[s, e]), 4),
                    "skill_score": float(score[s, e]),
                }
                for e, expert in enumerate(self.experts)
            }
            for s, skill in enumerate(self.skills)
        }

    def category_index(self, category: str) -> int:
        return self.categories.index(category)

    def best_expert_per_category(self) -> dict[str, str]:
        """Composition of Experts' category -> expert map."""
        return {category: self.experts[int(np.argmax(row))] for category, row in zip(self.categories, self.accuracy)}

    def table(self) -> list[dict[str, object]]:
        """One row per (category, expert): for reports and the CLI."""
        rows = []
        accuracy, score = self.accuracy, self.skill_score
        for c, category in enumerate(self.categories):
            for e, expert in enumerate(self.experts):
                rows.append(
                    {
                        "category": category,
                        "expert": expert,
                        "answered": int(self.answered[c, e]),
                        "correct": int(self.correct[c, e]),
                        "accuracy": round(float(accuracy[c, e]), 4),
                        "skill_score": int(score[c, e]),
                    }
                )
        return rows

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT_VERSION,
            "pool": self.pool,
            "source": self.source,
            "version": self.version,
            "experts": self.experts,
            "categories": self.categories,
            "answered": self.answered.tolist(),
            "correct": self.correct.tolist(),
            "smoothing": self.smoothing,
            "mean_cost": None if self.mean_cost is None else self.mean_cost.tolist(),
            "queries": {
                "ids": self.query_ids,
                "texts": self.query_texts,
                "categories": self.query_categories,
                # NaN is not JSON: missing outcomes are null
                "correct": [[None if np.isnan(v) else int(v) for v in row] for row in self.query_correct],
                "preds": None if self.query_preds is None else self.query_preds.tolist(),
                "cost": None if self.query_cost is None else self.query_cost.tolist(),
            },
            "skills": None
            if self.skills is None
            else {
                "names": self.skills,
                "answered": self.skill_answered.tolist(),  # type: ignore[union-attr]
                "correct": self.skill_correct.tolist(),  # type: ignore[union-attr]
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, object], source: str = "<profiles>") -> ProfileSet:
        """Rebuild from ``to_dict`` output; a malformed document raises ``ValueError`` naming the key."""
        try:
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"format is {data.get('format')!r}, this version reads {FORMAT_VERSION}")
            queries = data["queries"]
            assert isinstance(queries, dict)
            experts, categories = list(data["experts"]), list(data["categories"])  # type: ignore[call-overload]
            answered = np.asarray(data["answered"], dtype=float)
            correct = np.asarray(data["correct"], dtype=float)
            if answered.shape != (len(categories), len(experts)) or correct.shape != answered.shape:
                raise ValueError("'answered'/'correct' must be categories x experts")
            query_correct = np.array(
                [[np.nan if v is None else float(v) for v in row] for row in queries["correct"]], dtype=float
            ).reshape(-1, len(experts))
            mean_cost = data.get("mean_cost")
            preds, costs = queries.get("preds"), queries.get("cost")
            query_preds = None
            if preds is not None:
                query_preds = np.empty((len(query_correct), len(experts)), dtype=object)
                query_preds[:] = [[None if v is None else str(v) for v in row] for row in preds]
            query_cost = None if costs is None else np.asarray(costs, dtype=float).reshape(-1, len(experts))
            skills = data.get("skills")
            skill_fields: dict[str, object] = {}
            if skills is not None:
                assert isinstance(skills, dict)
                skill_fields = {
                    "skills": list(skills["names"]),
                    "skill_answered": np.asarray(skills["answered"], dtype=float).reshape(-1, len(experts)),
                    "skill_correct": np.asarray(skills["correct"], dtype=float).reshape(-1, len(experts)),
                }
            return cls(
                pool=str(data["pool"]),
                experts=experts,
                categories=categories,
                answered=answered,
                correct=correct,
                smoothing=float(data["smoothing"]),  # type: ignore[arg-type]
                mean_cost=None if mean_cost is None else np.asarray(mean_cost, dtype=float),
                query_ids=list(queries["ids"]),
                query_texts=list(queries["texts"]),
                query_categories=list(queries["categories"]),
                query_correct=query_correct,
                source=str(data.get("source", "")),
                version=data.get("version"),  # type: ignore[arg-type]
                query_preds=query_preds,
                query_cost=query_cost,
                **skill_fields,  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            raise ValueError(f"{source}: not a profile document: {error}") from None


def build_profiles(table: OutcomeTable, pool: str, smoothing: float = 10.0) -> ProfileSet:
    """Count, per category and expert, what ``table`` says each expert got right."""
    categories_of = table.categories or [UNCATEGORISED] * len(table)
    categories = sorted(set(categories_of))
    index = {category: c for c, category in enumerate(categories)}
    rows = np.array([index[category] for category in categories_of])
    known = ~np.isnan(table.correct)
    answered = np.zeros((len(categories), len(table.experts)))
    correct = np.zeros_like(answered)
    np.add.at(answered, rows, known.astype(float))
    np.add.at(correct, rows, np.nan_to_num(table.correct))
    mean_cost = None
    if table.cost is not None:
        totals = np.zeros_like(answered)
        np.add.at(totals, rows, table.cost)
        counts = np.bincount(rows, minlength=len(categories))[:, None]
        mean_cost = totals / np.maximum(counts, 1)
    skill_fields: dict[str, object] = {}
    if table.skills is not None:
        names = sorted({skill for labels in table.skills for skill in labels})
        position = {skill: s for s, skill in enumerate(names)}
        skill_answered = np.zeros((len(names), len(table.experts)))
        skill_correct = np.zeros_like(skill_answered)
        for row, labels in enumerate(table.skills):
            for skill in set(labels):
                skill_answered[position[skill]] += known[row]
                skill_correct[position[skill]] += np.nan_to_num(table.correct[row])
        skill_fields = {"skills": names, "skill_answered": skill_answered, "skill_correct": skill_correct}
    return ProfileSet(
        pool=pool,
        experts=list(table.experts),
        categories=categories,
        answered=answered,
        correct=correct,
        smoothing=smoothing,
        mean_cost=mean_cost,
        query_ids=list(table.ids),
        query_texts=list(table.texts),
        query_categories=list(categories_of),
        query_correct=table.correct.copy(),
        source=table.source,
        query_preds=None if table.preds is None else table.preds.copy(),
        query_cost=None if table.cost is None else table.cost.copy(),
        **skill_fields,  # type: ignore[arg-type]
    )
