"""Offline router evaluation: profile on a training table, route a test table, call no model.

The test table's stored outcomes say what each chosen expert would have answered, so a
routing policy's accuracy (its top expert alone, and a competence-weighted vote of all the
experts it called), its mean number of calls and its mean cost are computed exactly, next
to the baselines: best single expert, best expert per (true) category, random expert and
the per-question oracle. Strong/weak tables add RouteLLM's APGR and CPT.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from aggregator import majority_vote, weighted_vote
from router._competence import CompetenceEstimator, CompetenceSettings
from router._cost_mix import hull_accuracy, hull_curve
from router._outcome_table import OutcomeTable
from router._plans import PlanData, PlanKey, PlanModel, fit_escalate_threshold, replay
from router._policies import PolicySettings, QueryView, select
from router._profiles import ProfileSet, build_profiles
from router.offline._frontier import DEFAULT_BUDGETS, FrontierRow, pool_apgr, single_model_points
from router.offline._quality_metrics import apgr, cpt, quality_curve


@dataclass(frozen=True)
class EvalOptions:
    policy: str = "skills"
    settings: PolicySettings = PolicySettings()
    competence: CompetenceSettings = CompetenceSettings()
    budget_factor: float | None = None  # cap the mean cost at F x the best single expert's mean cost
    vote: str = "weighted"  # how the called experts' stored answers are combined: weighted | majority
    seed: int = 0


@dataclass
class Fitted:
    """What ``evaluate`` fits on the training table once, reused across budgets (``measure_frontier``)."""

    train: OutcomeTable
    profiles: ProfileSet
    estimator: CompetenceEstimator
    competence: CompetenceSettings
    _plan_data: PlanData | None = None
    _plan_models: dict[int, PlanModel] = field(default_factory=dict)

    @classmethod
    def on(cls, train: OutcomeTable, competence: CompetenceSettings) -> Fitted:
        profiles = build_profiles(train, pool="eval")
        return cls(train, profiles, CompetenceEstimator(profiles, competence), competence)

    @property
    def plan_data(self) -> PlanData:
        if self._plan_data is None:
            self._plan_data = PlanData.from_profiles(self.profiles, self.competence)
        return self._plan_data

    def plan_model(self, max_experts: int) -> PlanModel:
        if max_experts not in self._plan_models:
            self._plan_models[max_experts] = PlanModel.fit(self.plan_data, max_experts)
        return self._plan_models[max_experts]


def evaluate(
    train: OutcomeTable, test: OutcomeTable, options: EvalOptions, fitted: Fitted | None = None
) -> dict[str, object]:
    """Every figure for one (train, test) pair; deterministic for a given seed.

    ``fitted`` (from ``Fitted.on(train, options.competence)``) skips refitting when one training table is
    evaluated several times.
    """
    fitted = fitted or Fitted.on(train, options.competence)
    profiles, estimator = fitted.profiles, fitted.estimator
    estimates = estimator.estimate(test.texts)
    global_accuracy = profiles.global_accuracy
    best_single = int(np.argmax(global_accuracy))
    settings = options.settings
    best_single_cost = _mean(test.cost[:, best_single]) if test.cost is not None else None
    expected_cost = estimates.category_probs @ profiles.mean_cost if profiles.mean_cost is not None else None
    category_best = np.argmax(profiles.accuracy, axis=1)
    plan_model = fitted.plan_model(settings.max_experts) if options.policy == "cost" else None
    cap = None
    if options.budget_factor is not None and profiles.mean_cost is not None:
        cap = options.budget_factor * float(profiles.global_cost[best_single])  # type: ignore[index]
    choice = None
    if cap is not None and plan_model is not None:
        choice = plan_model.budget_choice(cap)
        settings = replace(settings, cost_lambda=choice.penalty, mix=choice.mix)
    if options.policy == "escalate" and cap is not None:
        settings = replace(settings, escalate_threshold=fit_escalate_threshold(fitted.plan_data, cap))
    rng = np.random.default_rng(options.seed)

    top1, weighted, majority, calls, costs, scores, escalated = [], [], [], [], [], [], []
    for i in range(len(test)):
        zero_cost = np.zeros(len(test.experts))
        query_cost = zero_cost if expected_cost is None else expected_cost[i]
        view = QueryView(
            competence=estimates.competence[i],
            global_competence=global_accuracy,
            category_probs=estimates.category_probs[i],
            category_best=category_best,
            expected_cost=None if expected_cost is None else expected_cost[i],
            ood=bool(estimates.ood[i]),
            generalist=best_single,
            plans=None if plan_model is None else plan_model.estimate(estimates.competence[i], query_cost, settings.k),
        )
        selection = select(options.policy, view, settings, rng)
        chosen = selection.experts
        actual_cost = test.cost[i] if test.cost is not None else zero_cost
        if selection.then:
            key = PlanKey(tuple(chosen), tuple(selection.then))
            preds = None if test.preds is None else test.preds[i]
            run = replay(key, test.correct[i], actual_cost, estimates.competence[i], preds, settings.escalate_threshold)
            chosen = chosen + selection.then if run.escalated else chosen
            escalated.append(run.escalated)
        top1.append(_outcome(test.correct[i, chosen[0]]))
        weighted.append(_vote(test, i, chosen, estimates.competence[i], "weighted"))
        majority.append(_vote(test, i, chosen, estimates.competence[i], "majority"))
        calls.append(len(chosen))
        costs.append(float(test.cost[i, chosen].sum()) if test.cost is not None else float("nan"))
        scores.append(float(selection.scores.max()) if options.policy != "cascade" else float(selection.scores[0]))

    report: dict[str, object] = {
        "policy": options.policy,
        "train_questions": len(fitted.train),
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
        "category_oracle_accuracy": _category_oracle(fitted.train, test),
    }
    if options.policy == "cost":
        report["cost_lambda"] = settings.cost_lambda
        report["random_mix"] = choice is not None and choice.mix is not None  # the optimiser lost to one here
        assert plan_model is not None
        names = list(test.experts)
        report["plan_gains"] = {  # what each multi-expert plan added over its best member, on the training part
            key.label(names): round(gain, 4) for key, gain in plan_model.gain.items() if len(key.members) > 1
        }
    if options.policy == "escalate":
        report["escalate_threshold"] = settings.escalate_threshold
        report["escalation_share"] = float(np.mean(escalated)) if escalated else 0.0
    report["gain_over_best_single"] = report["accuracy"] - report["best_single_accuracy"]  # type: ignore[operator]
    if best_single_cost:
        report["cost_vs_best_single"] = report["mean_cost"] / best_single_cost  # type: ignore[operator]
    if set(test.experts) == {"weak", "strong"}:
        report.update(_routellm(estimator, test))
    return report


Pairs = tuple[OutcomeTable, OutcomeTable]  # (train, test)


def split_tables(tables: dict[str, OutcomeTable], test_share: float, seed: int) -> dict[str, Pairs]:
    """Each benchmark's table split into (train, test) by a hash of the question id (``OutcomeTable.split``)."""
    return {name: table.split(test_share, seed) for name, table in tables.items()}


def evaluate_pairs(
    pairs: dict[str, Pairs], options: EvalOptions, budgets: tuple[float, ...] = ()
) -> dict[str, dict[str, object]]:
    """``eval-router``'s whole computation: per benchmark, ``evaluate`` and, with ``budgets``, the cost-quality
    frontier (``measure_frontier``: the policy at each budget, the single models, the random-mix hull) merged in.

    The CLI and ``POST /v1/routing/evaluate`` (the console's routing view) both call this. A ValueError says what
    is missing (a frontier needs cost columns).
    """
    reports: dict[str, dict[str, object]] = {}
    for name, (train, test) in pairs.items():
        if budgets and test.cost is None:
            raise ValueError(
                f"{test.source}: no cost columns, so no cost-quality frontier: it needs each model's '<model>|chars' "
                "column and a model family whose active parameters are known (../shared/data/routing/README.md)"
            )
        reports[name] = evaluate(train, test, options)
        if budgets:
            reports[name].update(measure_frontier(train, test, options, budgets))
    return reports


def json_figures(value: object) -> object:
    """A report as JSON allows: NaN (a figure that could not be measured) becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_figures(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_figures(item) for item in value]
    return value


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


def measure_frontier(
    train: OutcomeTable, test: OutcomeTable, options: EvalOptions, budgets: tuple[float, ...] = DEFAULT_BUDGETS
) -> dict[str, object]:
    """The policy of ``options`` at each budget, the hull at its cost, and the summary.

    Each budget F caps the policy's mean cost at F x the best single model's mean cost on the training questions
    (``evaluate``'s ``budget_factor``); the hull is read at the cost the policy actually spent on the test questions.
    """
    points = single_model_points(test)
    fitted = Fitted.on(train, options.competence)
    rows: list[FrontierRow] = []
    for budget in budgets:
        report = evaluate(train, test, replace(options, budget_factor=budget), fitted)
        spent = float(report["mean_cost"])  # type: ignore[arg-type]
        accuracy = float(report["accuracy"])  # type: ignore[arg-type]
        rows.append(FrontierRow(budget, accuracy, spent, hull_accuracy(points, spent)))
    oracle = float(np.nan_to_num(test.correct).max(axis=1).mean())
    return {
        "frontier": [asdict(row) for row in rows],
        "pool_apgr": pool_apgr(rows, oracle),
        "single_models": [asdict(point) for point in points],
        "hull": [asdict(point) for point in hull_curve(points)],
        "frontier_oracle_accuracy": oracle,
    }
