"""``OutcomeTable``: which expert got which labelled question right, and what it cost, as arrays.

The data every routing step shares: profiles are built from one and carry one, plans and competence estimators read
it, the offline evaluation splits it into training and test questions. Reading tables from files, with their limits
and errors, is ``router.offline`` (``outcomes``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np


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
