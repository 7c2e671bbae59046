"""Per-query competence: how likely is each expert to answer *this* question correctly?

Two estimates, blended (Symbolic-MoE's local suitability, refined by neighbours):
  1. category route: a TF-IDF + logistic-regression classifier gives P(category | query);
     times each expert's smoothed accuracy per category;
  2. neighbour route: the most similar profiled questions (cosine over the same TF-IDF
     space) and how each expert did on them, shrunk toward estimate 1 so that a few
     neighbours do not dominate.
A query whose category is unclear *and* which resembles no profiled question is flagged
out-of-distribution: the policies then fall back to the generalist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.profiles import ProfileSet


@dataclass(frozen=True)
class CompetenceSettings:
    neighbours: int = 20
    neighbour_prior: float = 3.0  # weight, in summed similarity, of the category estimate against neighbours
    ood_confidence: float = 0.25  # below this top-category probability ...
    ood_similarity: float = 0.10  # ... and this best neighbour similarity, a query is out of distribution
    classifier_c: float = 5.0


@dataclass(frozen=True)
class CompetenceEstimates:
    """Estimates for a batch of queries; arrays have one row per query."""

    category_probs: np.ndarray  # (N, C)
    local: np.ndarray  # (N, E) category route
    competence: np.ndarray  # (N, E) blended
    best_similarity: np.ndarray  # (N,)
    ood: np.ndarray  # (N,) bool


class CompetenceEstimator:
    """Fitted on a ``ProfileSet``'s profiled questions; estimates competence for new queries."""

    def __init__(self, profiles: ProfileSet, settings: CompetenceSettings | None = None) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.profiles = profiles
        self.settings = settings or CompetenceSettings()
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=60000)
        self.profiled = self.vectorizer.fit_transform(profiles.query_texts)
        self.classifier = None
        if len(profiles.categories) > 1:
            self.classifier = LogisticRegression(C=self.settings.classifier_c, max_iter=2000)
            self.classifier.fit(self.profiled, profiles.query_categories)
            order = [list(self.classifier.classes_).index(c) for c in profiles.categories]
            self._class_order = np.array(order)

    def estimate(self, texts: list[str]) -> CompetenceEstimates:
        vectors = self.vectorizer.transform(texts)
        if self.classifier is None:
            category_probs = np.ones((len(texts), 1))
        else:
            category_probs = self.classifier.predict_proba(vectors)[:, self._class_order]
        local = category_probs @ self.profiles.accuracy
        similarity = (
            (vectors @ self.profiled.T).toarray() if len(texts) else np.zeros((0, len(self.profiles.query_texts)))
        )
        competence, best = self._blend(similarity, local)
        s = self.settings
        ood = (category_probs.max(1) < s.ood_confidence) & (best < s.ood_similarity)
        return CompetenceEstimates(category_probs, local, competence, best, ood)

    def _blend(self, similarity: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = min(self.settings.neighbours, similarity.shape[1])
        if k == 0:
            return local, np.zeros(len(local))
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(similarity, nearest, axis=1)  # (N, k)
        outcomes = self.profiles.query_correct[nearest]  # (N, k, E)
        known = ~np.isnan(outcomes)
        weighted = np.einsum("nk,nke->ne", weights, np.nan_to_num(outcomes))
        mass = np.einsum("nk,nke->ne", weights, known.astype(float))
        prior = self.settings.neighbour_prior
        return (weighted + prior * local) / (mass + prior), weights.max(1)
