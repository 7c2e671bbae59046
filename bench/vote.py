"""Weighted vote against plain majority vote, for the same experts, on the shared outcome tables.

For each pool and split seed the router (``skills`` policy) picks k experts per test
question; their stored answers are combined twice: weighted by the router's competence
estimates (log-odds, what the live ``vote`` strategy and short-cut use) and one expert, one
vote. Same experts, same questions: the difference is the weighting alone. The best single
expert of the run is printed as the baseline.

    .venv/bin/python bench/vote.py [--k 3 5 7] [--seeds 0 1 2] [--split 0.3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router._policies import PolicySettings  # noqa: E402
from router.offline._evaluate import EvalOptions, evaluate  # noqa: E402
from router.offline._outcomes import load_outcomes  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing"


def compare(pools: list[str], ks: list[int], seeds: list[int], split: float) -> list[dict[str, object]]:
    rows = []
    for pool in pools:
        table = load_outcomes(DATA / "mmlu_pro_dev.parquet", pool)["all"]
        for k in ks:
            for seed in seeds:
                train, test = table.split(split, seed)
                settings = PolicySettings(k=k, max_experts=k)
                report = evaluate(train, test, EvalOptions("skills", settings, seed=seed))
                rows.append(
                    {
                        "pool": pool,
                        "k": k,
                        "seed": seed,
                        "weighted": round(float(report["weighted_vote_accuracy"]), 4),
                        "majority": round(float(report["majority_vote_accuracy"]), 4),
                        "best_single": round(float(report["best_single_accuracy"]), 4),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", nargs="+", default=["open-small", "mixed"])
    parser.add_argument("--k", nargs="+", type=int, default=[3, 5, 7])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--split", type=float, default=0.3)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    rows = compare(args.pools, args.k, args.seeds, args.split)
    print(f"{'pool':<11} {'k':>2} {'seed':>4} {'weighted':>9} {'majority':>9} {'w - m':>7} {'best single':>12}")
    for row in rows:
        gain = row["weighted"] - row["majority"]  # type: ignore[operator]
        print(
            f"{row['pool']:<11} {row['k']:>2} {row['seed']:>4} {row['weighted']:>9.4f} {row['majority']:>9.4f}"
            f" {gain:>+7.4f} {row['best_single']:>12.4f}"
        )
    wins = sum(row["weighted"] >= row["majority"] for row in rows)  # type: ignore[operator]
    mean_gain = sum(row["weighted"] - row["majority"] for row in rows) / len(rows)  # type: ignore[operator]
    print(f"weighted >= majority in {wins} of {len(rows)} runs; mean gain {mean_gain:+.4f}")
    if args.json:
        summary = {"weighted_at_least_majority": wins, "total": len(rows), "mean_gain": round(mean_gain, 5)}
        print(json.dumps({"runs": rows, **summary}))


if __name__ == "__main__":
    main()
