"""Offline router evaluation: profile on a training table, route a test table, call no model.

The test table's stored outcomes say what each chosen expert would have answered, so a
routing policy's accuracy (its top expert alone, and a competence-weighted vote of all the
experts it called), its mean number of calls and its mean cost are computed exactly, next
to the baselines: best single expert, best expert per (true) category, random expert and
the per-question oracle. Strong/weak tables add RouteLLM's APGR and CPT.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from aggregator.vote import majority_vote, weighted_vote
from router.competence import CompetenceEstimator, CompetenceSettings
from router.metrics import apgr, cpt, quality_curve
from router.outcomes import OutcomeTable
from router.policies import PolicySettings, QueryView, select
from router.profiles import build_profiles


@dataclass(frozen=True)
class EvalOptions:
    policy: str = "skills"
    settings: PolicySettings = PolicySettings()
    competence: CompetenceSettings = CompetenceSettings()
    budget_factor: float | None = None  # cap the mean cost at F x the best single expert's mean cost
    vote: str = "weighted"  # how the called experts' stored answers are combined: weighted | majority
    seed: int = 0


def evaluate(train: OutcomeTable, test: OutcomeTable, options: EvalOptions) -> dict[str, object]:
    """Every figure for one (train, test) pair; deterministic for a given seed."""
    profiles = build_profiles(train, pool="eval")
    estimator = CompetenceEstimator(profiles, options.competence)
    estimates = estimator.estimate(test.texts)
    global_accuracy = profiles.global_accuracy
    best_single = int(np.argmax(global_accuracy))
    settings = options.settings
    best_single_cost = _mean(test.cost[:, best_single]) if test.cost is not None else None
    expected_cost = estimates.category_probs @ profiles.mean_cost if profiles.mean_cost is not None else None
    category_best = np.argmax(profiles.accuracy, axis=1)
    if options.budget_factor is not None and profiles.mean_cost is not None:
        cap = options.budget_factor * float(profiles.global_cost[best_single])  # type: ignore[index]
        settings = replace(settings, cost_lambda=_calibrate_lambda(estimator, train, options.policy, settings, cap))
    rng = np.random.default_rng(options.seed)

    top1, weighted, majority, calls, costs, scores = [], [], [], [], [], []
    for i in range(len(test)):
        view = QueryView(
            competence=estimates.competence[i],
            global_competence=global_accuracy,
            category_probs=estimates.category_probs[i],
            category_best=category_best,
            expected_cost=None if expected_cost is None else expected_cost[i],
            ood=bool(estimates.ood[i]),
            generalist=best_single,
        )
        selection = select(options.policy, view, settings, rng)
        chosen = selection.experts
        top1.append(_outcome(test.correct[i, chosen[0]]))
        weighted.append(_vote(test, i, chosen, estimates.competence[i], "weighted"))
        majority.append(_vote(test, i, chosen, estimates.competence[i], "majority"))
        calls.append(len(chosen))
        costs.append(float(test.cost[i, chosen].sum()) if test.cost is not None else float("nan"))
        scores.append(float(selection.scores.max()) if options.policy != "cascade" else float(selection.scores[0]))

    report: dict[str, object] = {
        "policy": options.policy,
        "train_questions": len(train),
        "test_questions": len(test),
        "experts": list(test.experts),
        "vote": options.vote,
        "accuracy": _mean(weighted if options.vote == "weighted" else majority),
        "weighted_vote_accuracy": _mean(weighted),
        "majority_vote_accuracy": _mean(majority),
        "top1_accuracy": _mean(top1),
        "mean_experts": float(np.mean(calls)),
        "mean_cost": _mean(costs),
        "ood_share": float(np.mean(estimates.ood)),
        "best_single_expert": test.experts[best_single],
        "best_single_accuracy": _mean(test.correct[:, best_single]),
        "best_single_cost": best_single_cost,
        "random_accuracy": float(np.nanmean(test.correct)),
        "oracle_accuracy": float(np.mean(np.nan_to_num(test.correct).max(axis=1))),
        "category_oracle_accuracy": _category_oracle(train, test),
    }
    report["gain_over_best_single"] = report["accuracy"] - report["best_single_accuracy"]  # type: ignore[operator]
    if best_single_cost:
        report["cost_vs_best_single"] = report["mean_cost"] / best_single_cost  # type: ignore[operator]
    if set(test.experts) == {"weak", "strong"}:
        report.update(_routellm(estimator, test))
    return report


def _calibrate_lambda(
    estimator: CompetenceEstimator, train: OutcomeTable, policy: str, settings: PolicySettings, cap: float
) -> float:
    """The smallest cost penalty whose choices on the training questions cost at most ``cap`` on average.

    Uses training questions only, so the test answers never tune the router. Competence is
    estimated out of fold (two halves, each estimated by a model fitted on the other), because
    in-sample estimates are over-confident and would under-spend on new questions; costs are
    the training questions' real ones.
    """
    assert train.cost is not None
    competence, category_probs = _out_of_fold(train, estimator.settings)
    profiles = estimator.profiles
    assert profiles.mean_cost is not None
    expected = category_probs @ profiles.mean_cost
    best = np.argmax(profiles.accuracy, axis=1)
    generalist = int(np.argmax(profiles.global_accuracy))

    def mean_cost(penalty: float) -> float:
        trial = replace(settings, cost_lambda=penalty)
        rng = np.random.default_rng(0)
        total = 0.0
        for i in range(len(train)):
            view = QueryView(
                competence[i], profiles.global_accuracy, category_probs[i], best, expected[i], False, generalist
            )
            total += float(train.cost[i, select(policy, view, trial, rng).experts].sum())  # type: ignore[index]
        return total / max(len(train), 1)

    low, high = 0.0, 1.0 / max(float(expected.min()), 1e-9)
    if mean_cost(low) <= cap:
        return low
    for _ in range(30):  # bisection: cost falls as the penalty grows
        middle = (low + high) / 2
        low, high = (middle, high) if mean_cost(middle) > cap else (low, middle)
    return high


def _out_of_fold(train: OutcomeTable, settings: object) -> tuple[np.ndarray, np.ndarray]:
    """Competence and category probabilities of every training question from a model that never saw it."""
    first, second = train.split(0.5, seed=12345)
    position = {question: i for i, question in enumerate(train.ids)}
    competence = np.zeros((len(train), len(train.experts)))
    categories: np.ndarray | None = None
    for fitted_on, estimated in ((first, second), (second, first)):
        estimates = CompetenceEstimator(build_profiles(fitted_on, pool="fold"), settings).estimate(estimated.texts)  # type: ignore[arg-type]
        rows = [position[question] for question in estimated.ids]
        competence[rows] = estimates.competence
        if categories is None:
            categories = np.zeros((len(train), estimates.category_probs.shape[1]))
        if estimates.category_probs.shape[1] == categories.shape[1]:
            categories[rows] = estimates.category_probs
    assert categories is not None
    return competence, categories


def _routellm(estimator: CompetenceEstimator, test: OutcomeTable) -> dict[str, object]:
    """RouteLLM's metrics with the router's score = estimated gain of the strong model over the weak."""
    weak, strong = test.experts.index("weak"), test.experts.index("strong")
    competence = estimator.estimate(test.texts).competence
    curve = quality_curve(
        competence[:, strong] - competence[:, weak],
        np.nan_to_num(test.correct[:, weak]),
        np.nan_to_num(test.correct[:, strong]),
    )
    return {
        "weak_accuracy": float(curve[0]),
        "strong_accuracy": float(curve[-1]),
        "apgr": apgr(curve),
        "cpt50": cpt(curve, 0.5),
        "cpt80": cpt(curve, 0.8),
        "quality_curve": [round(float(v), 5) for v in curve[:: max(1, len(curve) // 100)]],
    }


def _vote(test: OutcomeTable, i: int, chosen: list[int], competence: np.ndarray, vote: str) -> float:
    """The live aggregator's vote over the chosen experts' stored answers (top-1 without answers).

    ``weighted``: each vote weighs the log-odds of the router's competence estimate;
    ``majority``: one expert, one vote. Both break ties toward the more competent expert.
    """
    if test.preds is None or test.answers is None or len(chosen) == 1:
        return _outcome(test.correct[i, chosen[0]])
    counting = weighted_vote if vote == "weighted" else majority_vote
    outcome = counting([test.preds[i, j] for j in chosen], [float(c) for c in competence[chosen]])
    return float(outcome.answer == test.answers[i])


def _category_oracle(train: OutcomeTable, test: OutcomeTable) -> float | None:
    """Accuracy of the best training expert of each question's true category."""
    if not train.categories or not test.categories:
        return None
    profiles = build_profiles(train, pool="eval")
    best = {c: int(np.argmax(row)) for c, row in zip(profiles.categories, profiles.accuracy)}
    fallback = int(np.argmax(profiles.global_accuracy))
    return _mean([test.correct[i, best.get(c, fallback)] for i, c in enumerate(test.categories)])


def _outcome(value: float) -> float:
    return 0.0 if np.isnan(value) else float(value)


def _mean(values: object) -> float:
    array = np.asarray(values, dtype=float)
    return float(np.nanmean(array)) if array.size and not np.all(np.isnan(array)) else float("nan")
