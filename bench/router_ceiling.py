"""What could *any* subject-level router reach on the MMLU-Pro targets? Bounds chosen with hindsight.

The mixed-pool target asks for the best single expert's accuracy at no more than half its
cost. This computes the cheapest way to reach that accuracy when the strategy may change
with each question's finest label (``src``: the MMLU subject, or stemez-*, theoremqa,
scibench) and is chosen *with hindsight* on the very questions it is scored on. Strategies
per label: any one expert, or a consensus cascade (any two experts; when their answers
differ, or one gives none, any third expert answers). A knapsack over the labels finds the
cheapest mix whose accuracy is at least the best single expert's. A router that knows only
a question's subject cannot beat this, since it must choose before seeing the outcomes; a
per-question router could only through per-question signals beyond the subject, and on
this data ours reach the per-label level (bench/RESULTS.md).

For the open-small target (+4 points with three calls) the same kind of bound: per category
(and per ``src`` label), the three experts whose weighted vote is right most often on that
label's questions, again chosen on the questions scored.

    .venv/bin/python bench/router_ceiling.py [--pool mixed] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator._vote import weighted_vote  # noqa: E402
from router._outcome_table import OutcomeTable
from router.offline._outcomes import load_outcomes  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"


@dataclass(frozen=True)
class Strategy:
    """One way to answer the questions of one label: how many it gets right, at what total cost."""

    name: str
    correct: int
    cost: float


def strategies(table: OutcomeTable, rows: np.ndarray) -> list[Strategy]:
    """Every single expert and every consensus cascade (any pair, then any third expert) on ``rows``."""
    assert table.cost is not None and table.preds is not None
    correct = np.nan_to_num(table.correct[rows])
    cost = table.cost[rows]
    preds = table.preds[rows]
    found = [
        Strategy(expert, int(correct[:, e].sum()), float(cost[:, e].sum())) for e, expert in enumerate(table.experts)
    ]
    for first, second in itertools.combinations(range(len(table.experts)), 2):
        agree = np.array([isinstance(a, str) and a == b for a, b in zip(preds[:, first], preds[:, second])])
        pair_cost = cost[:, first] + cost[:, second]
        for third in range(len(table.experts)):
            if third in (first, second):
                continue
            right = np.where(agree, correct[:, first], correct[:, third]).sum()
            spent = (pair_cost + np.where(agree, 0.0, cost[:, third])).sum()
            name = f"{table.experts[first]}+{table.experts[second]}->{table.experts[third]}"
            found.append(Strategy(name, int(right), float(spent)))
    return found


def cheapest_mix(groups: list[list[Strategy]], needed: int) -> tuple[float, list[Strategy]]:
    """Minimum total cost over one strategy per group with at least ``needed`` correct (exact knapsack)."""
    best = np.full(needed + 1, np.inf)  # best[c]: least cost reaching min(correct, needed) = c
    best[0] = 0.0
    choices: list[np.ndarray] = []
    for options in groups:
        nxt = np.full(needed + 1, np.inf)
        pick = np.full(needed + 1, -1)
        for index, option in enumerate(options):
            target = np.minimum(np.arange(needed + 1) + option.correct, needed)
            candidate = best + option.cost
            for c in np.flatnonzero(np.isfinite(candidate)):
                if candidate[c] < nxt[target[c]]:
                    nxt[target[c]] = candidate[c]
                    pick[target[c]] = index * (needed + 1) + c
        choices.append(pick)
        best = nxt
    if not np.isfinite(best[needed]):
        return float("inf"), []
    chosen: list[Strategy] = []
    state = needed
    for options, pick in zip(reversed(groups), reversed(choices)):
        index, state = divmod(int(pick[state]), needed + 1)
        chosen.append(options[index])
    return float(best[needed]), chosen[::-1]


def best_triples(table: OutcomeTable, labels: list[str]) -> float:
    """Accuracy when each label's questions go to its best three experts (hindsight), weighted vote."""
    assert table.preds is not None and table.answers is not None
    right = 0
    for label in sorted(set(labels)):
        rows = [i for i, given in enumerate(labels) if given == label]
        accuracy = np.nanmean(table.correct[rows], axis=0)
        best = 0
        for triple in itertools.combinations(range(len(table.experts)), 3):
            ranked = sorted(triple, key=lambda e: -accuracy[e])
            votes = (
                weighted_vote([table.preds[i, e] for e in ranked], [float(accuracy[e]) for e in ranked]).answer
                == table.answers[i]
                for i in rows
            )
            best = max(best, sum(votes))
        right += best
    return right / len(table)


def ceiling(pool: str) -> dict[str, object]:
    table = load_outcomes(DATA / "mmlu_pro_dev.parquet", pool)["all"]
    assert table.skills is not None and table.cost is not None
    labels = sorted({skill[0] for skill in table.skills})
    groups = [strategies(table, np.array([s[0] == label for s in table.skills])) for label in labels]
    accuracy = np.nanmean(table.correct, axis=0)
    best = int(np.argmax(accuracy))
    needed = int(np.nan_to_num(table.correct[:, best]).sum())
    best_cost = float(table.cost[:, best].sum())
    cost, chosen = cheapest_mix(groups, needed)
    singles = [[option for option in options if "->" not in option.name] for options in groups]
    single_cost, _ = cheapest_mix(singles, needed)
    return {
        "pool": pool,
        "questions": len(table),
        "labels": len(labels),
        "best_single_expert": table.experts[best],
        "best_single_accuracy": needed / len(table),
        "cost_vs_best_single_with_cascades": cost / best_cost,
        "cost_vs_best_single_one_expert": single_cost / best_cost,
        "labels_not_on_best_single": sum(option.name != table.experts[best] for option in chosen),
        "best_triple_per_category_gain": best_triples(table, table.categories or []) - needed / len(table),
        "best_triple_per_src_gain": best_triples(table, [skill[0] for skill in table.skills]) - needed / len(table),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", action="append", help="named pool (default: mixed and open-small)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    rows = [ceiling(pool) for pool in args.pool or ["mixed", "open-small"]]
    print(f"{'pool':<12}{'best single':<30}{'acc':>7}{'one expert/label':>18}{'+ cascades':>12}{'k=3 gain':>20}")
    for row in rows:
        print(
            f"{row['pool']:<12}{row['best_single_expert']:<30}{row['best_single_accuracy']:>7.3f}"
            f"{row['cost_vs_best_single_one_expert']:>17.2f}x{row['cost_vs_best_single_with_cascades']:>11.2f}x"
            f"{row['best_triple_per_category_gain']:>+10.3f} /{row['best_triple_per_src_gain']:>+7.3f}"
        )
    print("cost: the cheapest per-src mix (hindsight) matching the best single's accuracy, x the best single's cost")
    print("k=3 gain: best three experts per category / per src (hindsight), weighted vote, over the best single")
    if args.json:
        print(json.dumps({"pools": rows}))


if __name__ == "__main__":
    main()
