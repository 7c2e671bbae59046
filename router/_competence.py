"""Per-query competence: how likely is each expert to answer *this* question correctly?

Three estimates, blended (Symbolic-MoE's local suitability, refined per query):
  1. category route: a TF-IDF + logistic-regression classifier gives P(category | query);
     times each expert's smoothed accuracy per category;
  2. neighbour route: the most similar profiled questions (cosine over the same TF-IDF
     space) and how each expert did on them, shrunk toward estimate 1 so that a few
     neighbours do not dominate;
  3. expert models: per expert, a logistic regression of "answered correctly" on the
     query's TF-IDF vector, trained on the profiled questions.
(1+2) and 3 are averaged with ``expert_model_weight``.
A query whose category is unclear *and* which resembles no profiled question is flagged
out-of-distribution: the policies then fall back to the generalist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router._profiles import ProfileSet


@dataclass(frozen=True)
class CompetenceSettings:
    neighbours: int = 20
    neighbour_prior: float = 10.0  # weight, in summed similarity, of the category estimate against neighbours
    ood_confidence: float = 0.25  # below this top-category probability ...
    ood_similarity: float = 0.10  # ... and this best neighbour similarity, a query is out of distribution
    classifier_c: float = 5.0
    expert_model_weight: float = 0.8  # share of the per-expert correctness models in the blend
    expert_model_c: float = 0.3  # strong regularisation: a few thousand questions, 60k features
    calibrate: bool = True  # temperature-scale the category classifier on out-of-fold predictions


@dataclass(frozen=True)
class CompetenceEstimates:
    """Estimates for a batch of queries; arrays have one row per query."""

    category_probs: np.ndarray  # (N, C)
    local: np.ndarray  # (N, E) category route
    competence: np.ndarray  # (N, E) blended
    best_similarity: np.ndarray  # (N,)
    ood: np.ndarray  # (N,) bool


class CompetenceEstimator:
    """Fitted on a ``ProfileSet``'s profiled questions; estimates competence for new queries.

    The fitted linear models are folded into two weight matrices (categories and experts),
    so one estimate is a TF-IDF transform and three sparse products: well under a
    millisecond for a single query.
    """

    def __init__(self, profiles: ProfileSet, settings: CompetenceSettings | None = None) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.profiles = profiles
        self.settings = settings or CompetenceSettings()
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=60000)
        try:
            self.profiled = self.vectorizer.fit_transform(profiles.query_texts).tocsr()
        except ValueError:  # scikit-learn's words for it: "max_df corresponds to < documents than min_df"
            raise ValueError(
                f"{len(profiles.query_texts)} profiled question(s) are too few to learn from: the competence "
                "model keeps words seen in at least 2 of them; profile on more questions"
            ) from None
        self._analyzer = self.vectorizer.build_analyzer()
        self._vocabulary: dict[str, int] = self.vectorizer.vocabulary_
        self._idf = self.vectorizer.idf_
        self.profiled_t = self.profiled.T.tocsr()  # (V, N): similarity is one sparse product
        self.category_weights, self.category_bias = self._fit_categories()
        self.expert_weights, self.expert_bias, self.expert_fitted = self._fit_experts()

    def _fit_categories(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Multinomial logistic regression over the profiles' categories, as (V, C) weights and (C,) bias.

        The weights are divided by a temperature fitted on out-of-fold predictions (two halves,
        each predicted by a model fitted on the other), so the probabilities are calibrated:
        an in-sample fit is over-confident on new queries.
        """
        if len(self.profiles.categories) < 2:
            return None, None
        labels = np.array(self.profiles.query_categories)
        weights, bias = self._category_linear(self.profiled, labels)
        if self.settings.calibrate and len(labels) >= 50:
            temperature = self._temperature(labels)
            weights, bias = weights / temperature, bias / temperature
        return weights, bias

    def _category_linear(self, vectors: object, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=self.settings.classifier_c, max_iter=2000).fit(vectors, labels)
        coef, intercept = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # binary: sigmoid(z) is the softmax of [-z/2, z/2]
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        weights = np.zeros((coef.shape[1], len(self.profiles.categories)))
        bias = np.full(len(self.profiles.categories), -1e4)  # a category this fit never saw: never predicted
        classes = list(model.classes_)
        for c, category in enumerate(self.profiles.categories):
            if category in classes:
                weights[:, c], bias[c] = coef[classes.index(category)], intercept[classes.index(category)]
        return weights, bias

    def _temperature(self, labels: np.ndarray) -> float:
        """The temperature minimising the out-of-fold negative log-likelihood (1.0 when a fold is degenerate)."""
        halves = [np.arange(len(labels)) % 2 == 0, np.arange(len(labels)) % 2 == 1]
        logits = np.zeros((len(labels), len(self.profiles.categories)))
        for fit_on, predict in (halves, halves[::-1]):
            if len(np.unique(labels[fit_on])) < 2:
                return 1.0
            weights, bias = self._category_linear(self.profiled[np.flatnonzero(fit_on)], labels[fit_on])
            logits[predict] = self.profiled[np.flatnonzero(predict)] @ weights + bias
        truth = np.array([self.profiles.categories.index(label) for label in labels])
        best, best_loss = 1.0, np.inf
        for temperature in np.geomspace(0.2, 5.0, 61):
            probs = _softmax(logits / temperature)
            loss = -np.mean(np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, None)))
            if loss < best_loss:
                best, best_loss = float(temperature), loss
        return best

    def _fit_experts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per expert, P(right | query) by logistic regression; experts without both outcomes are skipped."""
        from sklearn.linear_model import LogisticRegression

        experts = len(self.profiles.experts)
        weights = np.zeros((self.profiled.shape[1], experts))
        bias = np.zeros(experts)
        fitted = np.zeros(experts, dtype=bool)
        if self.settings.expert_model_weight <= 0:
            return weights, bias, fitted
        for e in range(experts):
            outcomes = self.profiles.query_correct[:, e]
            known = np.flatnonzero(~np.isnan(outcomes))
            labels = outcomes[known].astype(int)
            if len(np.unique(labels)) < 2:
                continue
            model = LogisticRegression(C=self.settings.expert_model_c, max_iter=2000).fit(self.profiled[known], labels)
            weights[:, e], bias[e], fitted[e] = model.coef_[0], model.intercept_[0], True
        return weights, bias, fitted

    def estimate(self, texts: list[str], category_hint: np.ndarray | None = None) -> CompetenceEstimates:
        """Estimates for ``texts``; ``category_hint`` (a distribution, e.g. from the keyword expert) is
        averaged with the classifier's category probabilities of every text."""
        if not texts:
            experts, categories = len(self.profiles.experts), max(len(self.profiles.categories), 1)
            empty = np.zeros((0, experts))
            return CompetenceEstimates(np.zeros((0, categories)), empty, empty, np.zeros(0), np.zeros(0, dtype=bool))
        vectors = self._vectorize_one(texts[0]) if len(texts) == 1 else self.vectorizer.transform(texts)
        if self.category_weights is None:
            category_probs = np.ones((len(texts), 1))
        else:
            category_probs = _softmax(vectors @ self.category_weights + self.category_bias)
        if category_hint is not None and category_hint.sum() > 0 and category_probs.shape[1] == len(category_hint):
            category_probs = 0.5 * category_probs + 0.5 * (category_hint / category_hint.sum())[None, :]
        local = category_probs @ self.profiles.accuracy
        similarity = (vectors @ self.profiled_t).toarray()
        competence, best = self._blend(similarity, local)
        weight = self.settings.expert_model_weight
        if weight > 0 and self.expert_fitted.any():
            learned = 1.0 / (1.0 + np.exp(-(vectors @ self.expert_weights + self.expert_bias)))
            learned = np.where(self.expert_fitted[None, :], learned, competence)
            competence = (1 - weight) * competence + weight * learned
        s = self.settings
        ood = (category_probs.max(1) < s.ood_confidence) & (best < s.ood_similarity)
        return CompetenceEstimates(category_probs, local, competence, best, ood)

    def _vectorize_one(self, text: str) -> object:
        """The same TF-IDF vector as ``vectorizer.transform([text])``, without its per-call overhead.

        One routing decision is dominated by scikit-learn's transform on a single document;
        this does the same arithmetic (sublinear tf, idf, l2 norm) directly.
        """
        from scipy.sparse import csr_matrix

        counts: dict[int, int] = {}
        for term in self._analyzer(text):
            index = self._vocabulary.get(term)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        columns = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        values = (1.0 + np.log([counts[c] for c in columns])) * self._idf[columns] if len(columns) else np.zeros(0)
        norm = np.sqrt(np.dot(values, values))
        if norm > 0:
            values = values / norm
        return csr_matrix((values, columns, np.array([0, len(columns)])), shape=(1, len(self._idf)))

    def _blend(self, similarity: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = min(self.settings.neighbours, similarity.shape[1])
        if k == 0 or len(similarity) == 0:
            return local, np.zeros(len(local))
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(similarity, nearest, axis=1)  # (N, k)
        outcomes = self.profiles.query_correct[nearest]  # (N, k, E)
        known = ~np.isnan(outcomes)
        weighted = np.einsum("nk,nke->ne", weights, np.nan_to_num(outcomes))
        mass = np.einsum("nk,nke->ne", weights, known.astype(float))
        prior = self.settings.neighbour_prior
        return (weighted + prior * local) / (mass + prior), weights.max(1)


def out_of_fold(profiles: ProfileSet, settings: CompetenceSettings) -> tuple[np.ndarray, np.ndarray]:
    """Competence and category probabilities of every profiled question from an estimator that never saw it.

    Two halves (by a hash of the question id), each estimated by an estimator fitted on the other: in-sample
    estimates are over-confident, and whatever is fitted on them (cost penalties, plan models) would be too.
    """
    from router._profiles import build_profiles

    table = profiles.outcomes()
    first, second = table.split(0.5, seed=12345)
    position = {question: i for i, question in enumerate(table.ids)}
    competence = np.zeros((len(table), len(table.experts)))
    categories = np.zeros((len(table), max(len(profiles.categories), 1)))
    for fitted_on, estimated in ((first, second), (second, first)):
        if not len(estimated):
            continue
        fold = build_profiles(fitted_on, pool="fold", smoothing=profiles.smoothing)
        estimates = CompetenceEstimator(fold, settings).estimate(estimated.texts)
        rows = [position[question] for question in estimated.ids]
        competence[rows] = estimates.competence
        # the fold may lack a category: place its columns under the full profile's categories
        columns = [profiles.categories.index(category) for category in fold.categories]
        if len(profiles.categories) > 1:
            categories[np.ix_(rows, columns)] = estimates.category_probs
        else:
            categories[rows] = 1.0
    return competence, categories


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
