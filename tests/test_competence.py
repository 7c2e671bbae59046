"""The competence estimator: the single-query fast path equals the batch path; probabilities are sane."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router._competence import CompetenceEstimator, CompetenceSettings
from router._profiles import build_profiles
from router.offline._outcomes import load_outcomes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "mmlu_pro_dev.parquet"


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("competence") / "slice.parquet"
    pd.read_parquet(DATA).head(500).to_parquet(path)
    return load_outcomes(path, "open-small")["all"].split(0.2, seed=0)


def test_fast_single_query_path_equals_the_batch_path(tables) -> None:  # type: ignore[no-untyped-def]
    train, test = tables
    estimator = CompetenceEstimator(build_profiles(train, pool="t"))
    for text in test.texts[:25]:
        expected = estimator.vectorizer.transform([text]).toarray()
        assert np.allclose(estimator._vectorize_one(text).toarray(), expected)
        single, batch = estimator.estimate([text]), estimator.estimate([text, text])
        assert np.allclose(single.competence[0], batch.competence[0])
        assert np.allclose(single.category_probs[0], batch.category_probs[0])
    unknown = estimator.estimate(["zzzz qqqq"])  # no known word: still a valid estimate
    assert np.isfinite(unknown.competence).all()


def test_probabilities_are_distributions_and_calibration_softens_them(tables) -> None:  # type: ignore[no-untyped-def]
    train, test = tables
    calibrated = CompetenceEstimator(build_profiles(train, pool="t")).estimate(test.texts)
    raw = CompetenceEstimator(build_profiles(train, pool="t"), CompetenceSettings(calibrate=False)).estimate(test.texts)
    assert np.allclose(calibrated.category_probs.sum(axis=1), 1.0)
    assert ((calibrated.competence >= 0) & (calibrated.competence <= 1)).all()
    # the temperature is fitted out of fold on the training questions; on the held-out ones it must not
    # make the category probabilities worse (negative log-likelihood of the true category)
    categories = sorted(set(train.categories))
    known = [i for i, c in enumerate(test.categories) if c in categories]
    truth = np.array([categories.index(test.categories[i]) for i in known])

    def nll(probs: np.ndarray) -> float:
        return float(-np.mean(np.log(probs[known][np.arange(len(known)), truth])))

    assert nll(calibrated.category_probs) <= nll(raw.category_probs)
