"""The cost optimiser's plans (``router/_plans.py``): candidates, replays, gains, lambda and thresholds by hand;
then the optimiser inside ``evaluate`` on synthetic and shared tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_eval_router import run_json, shared_slice

from aggregator._vote import competence_weight
from router._cost_mix import Mix
from router._outcome_table import OutcomeTable
from router._plans import PlanData, PlanKey, PlanModel, candidate_keys, fit_escalate_threshold, replay
from router._policies import PolicySettings
from router.offline._evaluate import EvalOptions, evaluate

COMPETENCE = np.array([0.3, 0.6, 0.5, 0.2])
COST = np.array([10.0, 100.0, 40.0, 5.0])


def test_candidates_are_singles_top_k_sets_and_one_escalation() -> None:
    keys = candidate_keys(COMPETENCE, COST, max_experts=3)
    singles = [PlanKey((e,)) for e in range(4)]
    # top-2 by competence: 1 (0.6), 2 (0.5); top-3 adds 0 (0.3). The cheaper half (cost <= median 25): 0 and 3;
    # the strongest of the rest: 1
    assert keys == [*singles, PlanKey((1, 2)), PlanKey((0, 1, 2)), PlanKey((0, 3), (1,))]
    assert candidate_keys(COMPETENCE, COST, max_experts=2) == [*singles, PlanKey((1, 2))]
    assert PlanKey((0, 3), (1,)).label(["a", "b", "c", "d"]) == "a + d, then b"


def test_replay_votes_and_escalates_from_stored_answers() -> None:
    preds = np.array(["B", "C", "B", "A"], dtype=object)
    correct = np.array([1.0, 0.0, 1.0, 0.0])  # the gold answer is B
    assert replay(PlanKey((1,)), correct, COST, COMPETENCE, preds).correct == 0.0
    # weights log(p/(1-p)) + log 9: 0.3 -> 1.350, 0.6 -> 2.603, 0.5 -> 2.197; B has 3.547 > C's 2.603
    assert competence_weight(0.3) + competence_weight(0.5) > competence_weight(0.6)
    voted = replay(PlanKey((0, 1, 2)), correct, COST, COMPETENCE, preds)
    assert (voted.correct, voted.cost, voted.escalated) == (1.0, 150.0, False)
    # first stage 0 (B) and 3 (A) disagree: all three vote; C (2.603) beats B (1.350) and A (0.811)
    escalated = replay(PlanKey((0, 3), (1,)), correct, COST, COMPETENCE, preds)
    assert (escalated.correct, escalated.cost, escalated.escalated) == (0.0, 115.0, True)
    agreeing = np.array(["B", "C", "B", "B"], dtype=object)
    stopped = replay(PlanKey((0, 3), (1,)), correct, COST, COMPETENCE, agreeing)
    assert (stopped.correct, stopped.cost, stopped.escalated) == (1.0, 15.0, False)
    # a threshold above the first stage's mean competence (0.25) escalates even an agreement
    assert replay(PlanKey((0, 3), (1,)), correct, COST, COMPETENCE, agreeing, threshold=0.3).escalated
    # no stored answers: nothing to vote on; the most competent member's outcome, and always escalate
    blind = replay(PlanKey((0, 3), (1,)), correct, COST, COMPETENCE, None)
    assert (blind.correct, blind.escalated) == (0.0, True)


def four_questions() -> PlanData:
    """Three experts of constant competence 0.6 / 0.5 / 0.4, each call costing 1."""
    preds = np.array([list("AAB"), list("BAA"), list("BBB"), list("ABC")], dtype=object)
    correct = (preds == "A").astype(float)  # the gold answer is always A
    competence = np.tile([0.6, 0.5, 0.4], (4, 1))
    cost = np.ones((4, 3))
    return PlanData(competence, cost, cost, correct, preds)


def test_gains_are_measured_against_the_most_competent_member() -> None:
    model = PlanModel.fit(four_questions(), max_experts=3, prior=0.0)
    # expert 0 alone: right on q0 and q3. Vote of 0+1: A,B,B,A -> 2 right: no gain. Vote of all three:
    # q1 A (2.197 + 1.792 > 2.603), so 3 right: +1/4. Escalation 0+1 then 2: q0 and q2 agree (A right,
    # B wrong), q1 and q3 escalate to the vote of all (A both): 3 right, +1/4.
    assert model.gain[PlanKey((0,))] == 0.0
    assert model.gain[PlanKey((0, 1))] == pytest.approx(0.0)
    assert model.gain[PlanKey((0, 1, 2))] == pytest.approx(0.25)
    assert model.gain[PlanKey((0, 1), (2,))] == pytest.approx(0.25)
    plans = {plan.key: plan for plan in model.estimate(np.array([0.6, 0.5, 0.4]), np.ones(3))}
    assert plans[PlanKey((0, 1, 2))].accuracy == pytest.approx(0.85)
    escalation = plans[PlanKey((0, 1), (2,))]
    assert escalation.escalation == pytest.approx(0.5, abs=0.01)  # two of four questions escalated
    assert escalation.cost == pytest.approx(2.0 + escalation.escalation)
    shrunk = PlanModel.fit(four_questions(), max_experts=3, prior=4.0)
    assert shrunk.gain[PlanKey((0, 1, 2))] == pytest.approx(1 / 8)  # as if four more questions had no gain


def test_lambda_is_the_smallest_penalty_within_the_mean_cost_cap() -> None:
    model = PlanModel.fit(four_questions(), max_experts=3, prior=0.0)
    # at lambda 0 the vote of all three (0.85, cost 3) ties the escalation (0.85, expected 2.5) and comes first
    assert model.mean_cost(0.0) == 3.0
    assert model.fit_lambda(3.0) == 0.0
    # any positive penalty prefers the escalation (real mean cost 2.5) ...
    assert model.fit_lambda(2.5) < 1e-6 and model.mean_cost(model.fit_lambda(2.5)) == 2.5
    # ... until 0.85 - 2.5 lambda < 0.6 - lambda, i.e. lambda > 1/6: then expert 0 alone (cost 1)
    assert model.fit_lambda(1.0) == pytest.approx(1 / 6, abs=1e-6)
    assert model.mean_cost(model.fit_lambda(1.0)) == 1.0
    # a cap below every plan: the cheapest choices
    assert model.mean_cost(model.fit_lambda(0.5)) == 1.0


def test_a_random_mix_serves_a_budget_where_the_optimiser_does_not_clearly_beat_it() -> None:
    # at a cap of 3 the optimiser takes the vote of all three: right on q0, q1, q3; expert 0 alone (the best mix
    # within the cap) on q0 and q3. The paired difference (0, 1, 0, 0) has mean 0.25 and standard error 0.25: under
    # two standard errors, so on four questions the mix serves
    small = PlanModel.fit(four_questions(), max_experts=3, prior=0.0).budget_choice(3.0)
    assert small.mix == Mix(0, 0, 0.0, 0.5) and small.optimiser_accuracy == 0.75 and small.mix_accuracy == 0.5
    # the same questions 25 times over: the standard error falls to 0.044 and the optimiser serves
    data = four_questions()
    repeated = PlanData(
        *(
            np.tile(array, (25, 1))
            for array in (data.competence, data.expected_cost, data.actual_cost, data.correct, data.preds)
        )
    )
    large = PlanModel.fit(repeated, max_experts=3, prior=0.0).budget_choice(3.0)
    assert large.mix is None and large.penalty == 0.0 and large.optimiser_accuracy == pytest.approx(0.75)


def test_escalate_threshold_is_the_lowest_that_buys_the_most_accuracy_within_the_cap() -> None:
    # one question: the cheap pair agrees on a wrong B; the strong expert (0.9) would outvote them
    preds = np.array([list("BBA")], dtype=object)
    data = PlanData(
        np.array([[0.52, 0.4, 0.9]]),
        np.array([[1.0, 1.0, 5.0]]),
        np.array([[1.0, 1.0, 5.0]]),
        (preds == "A") * 1.0,
        preds,
    )
    assert fit_escalate_threshold(data, cap=None) == 0.0
    assert fit_escalate_threshold(data, cap=6.0) == 0.0  # escalating (cost 7) does not fit
    # mean competence 0.46: thresholds from 0.5 escalate, and the vote of all three is right
    assert fit_escalate_threshold(data, cap=7.0) == pytest.approx(0.5)


TOPICS = ["orbits of planets", "chemical bonds", "prime numbers", "roman history"]


def synthetic_table(questions: int = 400, seed: int = 3, specialists: bool = False) -> OutcomeTable:
    """A dear expert right 80% of the time and two cheap ones with independent errors: right 55% of the time,
    or (``specialists``) right 90% on one topic each and 40% on the others."""
    rng = np.random.default_rng(seed)
    topic = np.arange(questions) % 4
    texts = [f"question {n} about {TOPICS[topic[n]]} and detail {rng.integers(100)}" for n in range(questions)]
    unit = np.array([60.0, 8.0, 7.0])
    accuracy = np.tile([0.8, 0.55, 0.55], (questions, 1))
    if specialists:
        accuracy[:, 1] = np.where(topic == 2, 0.9, 0.4)
        accuracy[:, 2] = np.where(topic == 3, 0.9, 0.4)
    correct = (rng.random((questions, 3)) < accuracy).astype(float)
    wrong = rng.choice(list("BCD"), size=(questions, 3))
    preds = np.where(correct == 1.0, "A", wrong).astype(object)
    return OutcomeTable(
        source="<synthetic>",
        ids=[f"q{n}" for n in range(questions)],
        texts=texts,
        experts=["dear", "cheap-1", "cheap-2"],
        correct=correct,
        categories=[TOPICS[t] for t in topic],
        answers=["A"] * questions,
        preds=preds,
        cost=np.tile(unit, (questions, 1)),
    )


def test_at_a_budget_of_one_the_optimiser_is_not_below_the_best_single_expert() -> None:
    # reachable: each cheap specialist beats the dear expert on its topic
    train, test = synthetic_table(800, seed=3, specialists=True), synthetic_table(400, seed=4, specialists=True)
    report = evaluate(train, test, EvalOptions(policy="cost", budget_factor=1.0))
    assert report["best_single_expert"] == "dear"
    assert report["accuracy"] >= report["best_single_accuracy"]
    assert report["mean_cost"] <= 1.02 * report["best_single_cost"]  # the budget, up to the split's noise
    assert not math.isnan(report["cost_lambda"])


def test_escalate_policy_offline_reports_its_threshold_and_escalation_share() -> None:
    train, test = synthetic_table(600, seed=3), synthetic_table(300, seed=4)
    report = evaluate(train, test, EvalOptions(policy="escalate", settings=PolicySettings()))
    # cheap pair agree when both are right (~30%) or wrong alike (~7%): the rest escalate
    assert 0.5 < report["escalation_share"] < 0.8
    assert report["escalate_threshold"] == 0.0
    assert report["mean_cost"] < report["best_single_cost"] + 15.0
    assert 1.0 < report["mean_experts"] < 3.0


@pytest.mark.parametrize("policy", ["cost", "escalate"])
def test_eval_router_plans_are_deterministic(tmp_path: Path, policy: str) -> None:
    path = shared_slice(tmp_path, "mmlu_pro_dev.parquet", 600)
    args = ("eval-router", "--outcomes", str(path), "--pool", "mixed", "--policy", policy, "--budget", "0.5")
    first, second = run_json(*args), run_json(*args)
    assert first == second
    if policy == "cost":
        assert first["cost_lambda"] > 0 and first["cost_vs_best_single"] <= 0.6
    else:
        assert 0.0 <= first["escalation_share"] <= 1.0
