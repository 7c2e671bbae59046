"""Plans for the cost optimiser: which experts one query gets, and what that is expected to score and cost.

A plan (``PlanKey``) has one of three shapes:
- one expert;
- a set of experts whose answers the competence-weighted vote combines (``aggregator/_vote.py``);
- an escalation: a first stage of cheaper experts; when their answers agree (and, for the ``escalate``
  policy, their competence reaches a threshold) the vote over them stands; otherwise a second stage is asked
  and the vote covers everyone (an answer-aware cascade, as in Language Model Cascades).

The candidates for a query (``candidate_keys``) are every single expert, the top-k sets by competence up to
``max_experts`` and one escalation (the two most competent of the cheaper half of the pool, then the most
competent of the rest). ``PlanModel`` estimates a plan's accuracy as its most competent member's competence plus
the plan's measured *gain*: replayed on the profiled questions where it was a candidate (from their stored
answers), how much more often the plan was right than that member alone. What the members' errors share (two
models wrong the same way) is in the measured gain, not assumed away. Competence for fitting comes out of fold,
as it will be on new queries. An escalation's expected cost adds its second stage's cost times its modelled
chance of being needed (a logistic model of the first stage's competence). ``PlanModel.fit_lambda`` finds the
cost penalty whose choices keep the profiled questions' mean cost within a cap.

Pure arithmetic on arrays (scikit-learn fits the escalation models); no model is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from aggregator import weighted_vote
from router._competence import CompetenceSettings
from router._cost_mix import CostPoint, Mix, best_mix
from router._profiles import ProfileSet

MIN_OUT_OF_FOLD = 40  # fewer profiled questions than this: plan models are fitted on in-sample competence
MAX_FITTED_PLANS = 256  # a large pool keeps the plans most often among the candidates
GUARD_Z = 2.0  # the optimiser must beat a budget's best random mix by this many standard errors, else the mix serves
GAIN_PRIOR = 50.0  # a plan's measured gain is shrunk toward 0 as if by this many questions with none
_CLIP = 0.01  # competence is clipped to [0.01, 0.99] before taking log-odds


class PlanKind(str, Enum):
    SINGLE = "single"
    VOTE = "vote"
    ESCALATE = "escalate"


@dataclass(frozen=True, order=True)
class PlanKey:
    """Who is asked: ``first`` always; ``then`` only when the first stage does not settle the answer."""

    first: tuple[int, ...]
    then: tuple[int, ...] = ()

    @property
    def members(self) -> tuple[int, ...]:
        return self.first + self.then

    @property
    def kind(self) -> PlanKind:
        if self.then:
            return PlanKind.ESCALATE
        return PlanKind.SINGLE if len(self.first) == 1 else PlanKind.VOTE

    def label(self, names: list[str]) -> str:
        first = " + ".join(names[i] for i in self.first)
        return f"{first}, then {' + '.join(names[i] for i in self.then)}" if self.then else first


@dataclass(frozen=True)
class PlanEstimate:
    """One candidate plan for one query: estimated accuracy, expected cost, chance the second stage runs."""

    key: PlanKey
    accuracy: float
    cost: float
    escalation: float = 0.0


@dataclass(frozen=True)
class Replay:
    """What a plan did on one stored question: right or not, what it cost, whether it escalated."""

    correct: float
    cost: float
    escalated: bool


def candidate_keys(competence: np.ndarray, expected_cost: np.ndarray, max_experts: int) -> list[PlanKey]:
    """Every single expert, the top-k sets by competence (k = 2 .. max_experts) and one escalation."""
    experts = len(competence)
    order = [int(i) for i in np.argsort(-competence, kind="stable")]
    keys = [PlanKey((e,)) for e in range(experts)]
    keys += [PlanKey(tuple(sorted(order[:k]))) for k in range(2, min(max_experts, experts) + 1)]
    escalation = escalation_key(competence, expected_cost)
    if escalation is not None and max_experts >= 3:
        keys.append(escalation)
    return keys


def escalation_key(competence: np.ndarray, expected_cost: np.ndarray) -> PlanKey | None:
    """The two most competent of the cheaper half (by expected cost), then the most competent of the rest."""
    if len(competence) < 3:
        return None
    cheap = [int(i) for i in np.flatnonzero(expected_cost <= np.median(expected_cost))]
    if len(cheap) < 2:
        return None
    first = sorted(sorted(cheap, key=lambda i: (-competence[i], i))[:2])
    rest = [i for i in range(len(competence)) if i not in first]
    strongest = max(rest, key=lambda i: (competence[i], -i))
    return PlanKey(tuple(first), (strongest,))


def stage_agrees(answers: list[str | None]) -> bool:
    """The first stage settles the answer when every expert gave one and they are the same."""
    return all(answer is not None for answer in answers) and len(set(answers)) == 1


def replay(
    key: PlanKey,
    correct: np.ndarray,
    cost: np.ndarray,
    competence: np.ndarray,
    preds: np.ndarray | None,
    threshold: float = 0.0,
) -> Replay:
    """Run ``key`` on one stored question (rows of one question, one entry per expert).

    The vote is ``aggregator._vote.weighted_vote`` with the competence estimates as weights, as live; without
    stored answers (``preds`` None) nothing can be voted and the most competent member's outcome counts, and an
    escalation always escalates.
    """
    first = list(key.first)
    escalated = False
    if key.then:
        settled = (
            preds is not None
            and stage_agrees([preds[i] for i in first])
            and float(np.mean(competence[first])) >= threshold
        )
        escalated = not settled
    members = first + list(key.then) if escalated else first
    return Replay(_vote_correct(members, correct, competence, preds), float(cost[members].sum()), escalated)


def _vote_correct(members: list[int], correct: np.ndarray, competence: np.ndarray, preds: np.ndarray | None) -> float:
    """1.0 when the weighted vote over ``members`` picks a right answer (its winner is a right expert)."""
    if len(members) == 1 or preds is None:
        best = max(members, key=lambda i: (competence[i], -i))
        return float(np.nan_to_num(correct[best]))
    outcome = weighted_vote([preds[i] for i in members], [float(competence[i]) for i in members])
    return float(np.nan_to_num(correct[members[outcome.winner]]))


@dataclass(frozen=True)
class PlanData:
    """The profiled questions as plans see them: out-of-fold competence, costs, outcomes, stored answers."""

    competence: np.ndarray  # (N, E) out of fold
    expected_cost: np.ndarray  # (N, E) what the router expects a call to cost (category-weighted means)
    actual_cost: np.ndarray  # (N, E) what it cost
    correct: np.ndarray  # (N, E) 1/0/NaN
    preds: np.ndarray | None  # (N, E) extracted answers, or None when the table has none

    @classmethod
    def from_profiles(cls, profiles: ProfileSet, settings: CompetenceSettings) -> PlanData:
        """Out-of-fold competence for the profiled questions (in-sample below ``MIN_OUT_OF_FOLD`` of them)."""
        from router._competence import CompetenceEstimator, out_of_fold

        if len(profiles.query_ids) >= MIN_OUT_OF_FOLD:
            competence, categories = out_of_fold(profiles, settings)
        else:
            estimates = CompetenceEstimator(profiles, settings).estimate(profiles.query_texts)
            competence, categories = estimates.competence, estimates.category_probs
        expected = np.zeros_like(competence) if profiles.mean_cost is None else categories @ profiles.mean_cost
        actual = profiles.query_cost if profiles.query_cost is not None else expected
        return cls(competence, expected, actual, profiles.query_correct, profiles.query_preds)

    def replay(self, i: int, key: PlanKey, threshold: float = 0.0) -> Replay:
        preds = None if self.preds is None else self.preds[i]
        return replay(key, self.correct[i], self.actual_cost[i], self.competence[i], preds, threshold)

    def best_member_correct(self, i: int, key: PlanKey) -> float:
        """Whether the plan's most competent member (by the estimate) was right on question ``i``."""
        best = max(key.members, key=lambda e: (self.competence[i, e], -e))
        return float(np.nan_to_num(self.correct[i, best]))


def fit_escalate_threshold(data: PlanData, cap: float | None, grid: int = 20) -> float:
    """The ``escalate`` policy's threshold: the most accurate on the profiled questions within a mean-cost cap.

    Higher thresholds escalate more (more cost, usually more accuracy). Ties go to the lower threshold; when
    even the lowest exceeds the cap, the lowest (stop on agreement alone). No cap: agreement alone.
    """
    if cap is None:
        return 0.0
    keys = [escalation_key(data.competence[i], data.expected_cost[i]) for i in range(len(data.competence))]
    best, best_accuracy = 0.0, -1.0
    for threshold in np.linspace(0.0, 0.95, grid):
        replays = [data.replay(i, key, float(threshold)) for i, key in enumerate(keys) if key is not None]
        if not replays:
            return 0.0
        accuracy, cost = np.mean([r.correct for r in replays]), np.mean([r.cost for r in replays])
        if cost <= cap and accuracy > best_accuracy + 1e-12:
            best, best_accuracy = float(threshold), float(accuracy)
    return best


@dataclass(frozen=True)
class _Logistic:
    """P(event) = sigmoid(weights . logit(competence of the members) + bias)."""

    weights: np.ndarray
    bias: float

    def __call__(self, competence: np.ndarray) -> np.ndarray:
        return _sigmoid(_logit(competence) @ self.weights + self.bias)


def _fit_logistic(features: np.ndarray, outcome: np.ndarray, regularisation: float = 1.0) -> _Logistic:
    """Logistic regression of ``outcome`` (0/1) on the members' competence log-odds; a constant if one-sided."""
    from sklearn.linear_model import LogisticRegression

    rate = float(np.clip(outcome.mean(), 1e-3, 1 - 1e-3)) if len(outcome) else 0.5
    if len(np.unique(outcome)) < 2:
        return _Logistic(np.zeros(features.shape[1]), float(np.log(rate / (1 - rate))))
    model = LogisticRegression(C=regularisation, max_iter=1000).fit(_logit(features), outcome.astype(int))
    return _Logistic(model.coef_[0].copy(), float(model.intercept_[0]))


@dataclass
class _TrainingChoices:
    """Per profiled question, its candidate plans' estimates and what each really cost (padded: accuracy -inf)."""

    accuracy: np.ndarray  # (N, P)
    expected_cost: np.ndarray  # (N, P)
    actual_cost: np.ndarray  # (N, P)
    actual_correct: np.ndarray  # (N, P)
    experts: int = 0  # the first ``experts`` columns are the single experts, in order


@dataclass(frozen=True)
class BudgetChoice:
    """How the cost policy keeps a mean-cost cap: the optimiser at ``penalty``, unless it did not beat the best
    random mix of two single experts (``mix``) on the profiled questions at that cap by ``GUARD_Z`` standard errors
    of the paired difference: then the mix serves, and the policy is not worse than what a user gets without a
    router."""

    penalty: float
    optimiser_accuracy: float  # on the profiled questions (out-of-fold competence)
    mix: Mix | None = None
    mix_accuracy: float = float("nan")


@dataclass
class PlanModel:
    """Fitted per-plan accuracy (and escalation) models, and what λ fitting needs from the profiled questions."""

    max_experts: int
    gain: dict[PlanKey, float]  # accuracy over the most competent member's, measured (0 for one expert)
    escalation: dict[PlanKey, _Logistic]
    training: _TrainingChoices
    _lambdas: dict[float, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, data: PlanData, max_experts: int = 3, prior: float = GAIN_PRIOR) -> PlanModel:
        """Fit on the profiled questions of ``data``.

        A single expert's estimated accuracy is its competence estimate. A vote or an escalation adds its
        measured *gain*: over the profiled questions where it was a candidate, the mean of (the plan right) -
        (its most competent member right), shrunk toward 0 by ``prior`` questions. An escalation's chance of
        needing its second stage is a logistic model of the first stage's competence log-odds. The plans fitted
        are every plan that is a candidate for some profiled question (the ``MAX_FITTED_PLANS`` most frequent).
        """
        competence = data.competence
        candidates = [candidate_keys(competence[i], data.expected_cost[i], max_experts) for i in range(len(competence))]
        where: dict[PlanKey, list[int]] = {}
        for i, keys in enumerate(candidates):
            for key in keys:
                where.setdefault(key, []).append(i)
        family = sorted(where, key=lambda key: (-len(where[key]), key))[:MAX_FITTED_PLANS]
        gain: dict[PlanKey, float] = {}
        escalation: dict[PlanKey, _Logistic] = {}
        for key in family:
            rows = where[key]
            if key.kind is PlanKind.SINGLE:
                gain[key] = 0.0
                continue
            replays = [data.replay(i, key) for i in rows]
            best = [data.best_member_correct(i, key) for i in rows]
            difference = float(np.sum([r.correct for r in replays]) - np.sum(best))
            gain[key] = difference / (len(rows) + prior)
            if key.then:
                escalated = np.array([float(r.escalated) for r in replays])
                escalation[key] = _fit_logistic(competence[np.ix_(rows, list(key.first))], escalated)
        empty = _TrainingChoices(np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)))
        model = cls(max_experts, gain, escalation, empty)
        model.training = model._training_choices(candidates, data)
        return model

    def estimate(
        self, competence: np.ndarray, expected_cost: np.ndarray, max_experts: int | None = None
    ) -> list[PlanEstimate]:
        """The fitted candidate plans for one query (plans never fitted are left out), cheapest first on ties."""
        limit = self.max_experts if max_experts is None else min(max_experts, self.max_experts)
        estimates = []
        for key in candidate_keys(competence, expected_cost, limit):
            estimate = self._estimate(key, competence, expected_cost)
            if estimate is not None:
                estimates.append(estimate)
        return estimates

    def _estimate(self, key: PlanKey, competence: np.ndarray, expected_cost: np.ndarray) -> PlanEstimate | None:
        gain = self.gain.get(key)
        if gain is None:
            return None
        accuracy = float(np.clip(max(competence[i] for i in key.members) + gain, 0.0, 1.0))
        cost = float(expected_cost[list(key.first)].sum())
        chance = 0.0
        if key.then:
            chance = float(self.escalation[key](competence[list(key.first)][None, :])[0])
            cost += chance * float(expected_cost[list(key.then)].sum())
        return PlanEstimate(key, accuracy, cost, chance)

    def _training_choices(self, candidates: list[list[PlanKey]], data: PlanData) -> _TrainingChoices:
        width = max((len(keys) for keys in candidates), default=0)
        shape = (len(candidates), width)
        accuracy, estimated, actual = np.full(shape, -np.inf), np.zeros(shape), np.zeros(shape)
        right = np.zeros(shape)
        for i, keys in enumerate(candidates):
            for p, key in enumerate(keys):
                estimate = self._estimate(key, data.competence[i], data.expected_cost[i])
                if estimate is not None:
                    accuracy[i, p], estimated[i, p] = estimate.accuracy, estimate.cost
                    outcome = data.replay(i, key)
                    actual[i, p], right[i, p] = outcome.cost, outcome.correct
        return _TrainingChoices(accuracy, estimated, actual, right, data.competence.shape[1])

    def mean_cost(self, penalty: float) -> float:
        """Mean real cost over the profiled questions when each takes its best plan at this cost penalty."""
        return float(self._chosen(penalty, self.training.actual_cost).mean()) if self.training.accuracy.size else 0.0

    def training_accuracy(self, penalty: float) -> float:
        """Accuracy over the profiled questions when each takes its best plan at this cost penalty."""
        return float(self._chosen(penalty, self.training.actual_correct).mean()) if self.training.accuracy.size else 0.0

    def _chosen(self, penalty: float, values: np.ndarray) -> np.ndarray:
        chosen = np.argmax(self.training.accuracy - penalty * self.training.expected_cost, axis=1)
        return values[np.arange(len(chosen)), chosen]

    def budget_choice(self, cap: float) -> BudgetChoice:
        """The penalty for ``cap`` (``fit_lambda``), or the random mix of two single experts that beat it on the
        profiled questions at the same cap."""
        penalty = self.fit_lambda(cap)
        accuracy = self.training_accuracy(penalty)
        training = self.training
        singles = [
            CostPoint(str(e), float(training.actual_cost[:, e].mean()), float(training.actual_correct[:, e].mean()))
            for e in range(training.experts)
        ]
        mix = best_mix(singles, cap)
        if mix is None:
            return BudgetChoice(penalty, accuracy)
        right = training.actual_correct
        mixed = mix.share * right[:, mix.dear] + (1 - mix.share) * right[:, mix.cheap]
        difference = self._chosen(penalty, right) - mixed  # paired, question by question
        margin = GUARD_Z * float(difference.std(ddof=1)) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
        if float(difference.mean()) > margin:
            return BudgetChoice(penalty, accuracy, None, mix.accuracy)
        return BudgetChoice(penalty, accuracy, mix, mix.accuracy)

    def fit_lambda(self, cap: float) -> float:
        """The smallest penalty whose choices on the profiled questions cost at most ``cap`` on average.

        Cost falls as the penalty grows, so bisection finds it; a cap below even the cheapest choices gives the
        penalty at which every question takes its cheapest plan. Memoised per cap.
        """
        key = round(float(cap), 9)
        if key in self._lambdas:
            return self._lambdas[key]
        positive = self.training.expected_cost[self.training.expected_cost > 0]
        low, high = 0.0, 1e3 / float(positive.min()) if positive.size else 0.0
        if self.mean_cost(low) <= cap or high == 0.0:
            self._lambdas[key] = low
            return low
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if self.mean_cost(middle) > cap else (low, middle)
        self._lambdas[key] = high
        return high


def _logit(competence: np.ndarray) -> np.ndarray:
    p = np.clip(competence, _CLIP, 1 - _CLIP)
    return np.log(p / (1 - p))


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))
