"""``moesaic profile`` and ``moesaic eval-router``: build expert profiles, judge routers offline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from experts import is_ready
from orchestrator.cli.options import pool_option
from orchestrator.cli.output import console, fail, json_output


def profile(
    outcomes: Optional[Path] = typer.Option(None, "--outcomes", help="outcome table (.parquet/.csv/.jsonl)"),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="labelled questions (.jsonl): run the experts"),
    pool: Optional[str] = typer.Option(
        None, "--pool", help="with --outcomes: open-small | mixed | expert names; with --dataset: the pool file"
    ),
    name: Optional[str] = typer.Option(None, "--name", help="key space in the store (default: the pool's name)"),
    redis_url: Optional[str] = typer.Option(None, "--redis", help="store the profiles in this Redis (redis://...)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the profiles as JSON here"),
    results: Optional[Path] = typer.Option(None, "--results", help="--dataset: graded answers, appended (resumable)"),
    max_tokens: int = typer.Option(256, help="--dataset: token budget per answer"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="--dataset: join this Ray cluster"),
    smoothing: float = typer.Option(10.0, help="prior strength, in questions, toward overall accuracy"),
) -> None:
    """Build expert profiles from an outcome table, or by running the pool on labelled questions."""
    from router import build_profiles
    from router.offline import OutcomeFileError, load_outcomes

    if (outcomes is None) == (dataset is None):
        fail("give exactly one of --outcomes FILE or --dataset FILE.jsonl")
    if redis_url is None and out is None:
        fail("nowhere to put the profiles: give --redis URL and/or --out FILE.json")
    try:
        if outcomes is not None:
            tables = load_outcomes(outcomes, pool)
            space = name or "default"
        else:
            assert dataset is not None
            space, table = _profile_dataset(dataset, pool or "default", results, max_tokens, ray_address)
            space = name or space
            tables = {"all": table}
    except OutcomeFileError as error:
        fail(str(error))
    for benchmark, table in tables.items():
        key_space = space if len(tables) == 1 else f"{space}.{benchmark}"
        profiles = build_profiles(table, pool=key_space, smoothing=smoothing)
        _print_profiles(key_space, profiles)
        _store(
            profiles,
            key_space,
            redis_url,
            out if len(tables) == 1 or out is None else out.with_name(f"{out.stem}.{benchmark}{out.suffix}"),
        )


def _store(profiles: object, key_space: str, redis_url: str | None, out: Path | None) -> None:
    from router import ProfileStore, ProfileStoreError, export_json

    if redis_url is not None:
        try:
            version = ProfileStore(redis_url, key_space).save(profiles)  # type: ignore[arg-type]
        except ProfileStoreError as error:
            fail(str(error))
        console.print(f"stored pool {key_space!r} profiles as version {version} in {redis_url}")
    if out is not None:
        export_json(profiles, out)  # type: ignore[arg-type]
        console.print(f"wrote {out}")


def _profile_dataset(
    dataset: Path, pool_name: str, results: Path | None, max_tokens: int, ray_address: str | None
) -> tuple[str, object]:
    """Run the pool's routable experts on every question (resuming from ``results``); return the table."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from experts.config import PoolFileError, cache_root, load_pool
    from experts.runtime import ExpertPool
    from router.offline import OutcomeFileError, load_dataset, read_results, results_table, run_profiling

    try:
        spec = load_pool(pool_name)
    except PoolFileError as error:
        fail(str(error))
    questions = load_dataset(dataset)
    results = results or cache_root() / "profiling" / f"{dataset.stem}.{spec.name}.jsonl"
    experts = [expert.name for expert in spec.routable_experts]
    total = len(questions) * len(experts)
    already = len({(r.question_id, r.expert) for r in read_results(results)})
    console.print(f"{len(questions)} questions x {len(experts)} experts; {already} answers already in {results}")

    async def run() -> list[object]:
        pool = ExpertPool(spec, ray_address=ray_address)
        try:
            health = await pool.start()
            failed = [n for n in experts if not is_ready(health[n])]
            if failed:
                raise OutcomeFileError(f"experts did not start: {', '.join(failed)}; see `moesaic experts`")
            columns = [BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
            with Progress("[progress.description]{task.description}", *columns, console=console) as progress:
                task = progress.add_task("profiling", total=total, completed=min(already, total))
                return await run_profiling(
                    pool, questions, results, max_tokens, on_progress=lambda n: progress.advance(task, n)
                )
        finally:
            await pool.shutdown()

    graded = asyncio.run(run())
    return spec.name, results_table(questions, graded, experts, str(dataset))  # type: ignore[arg-type]


def _print_profiles(space: str, profiles: object) -> None:
    from router import ProfileSet

    assert isinstance(profiles, ProfileSet)
    table = Table(title=f"{space}: accuracy per category ({len(profiles.query_ids)} profiled questions)")
    table.add_column("category")
    for expert in profiles.experts:
        table.add_column(expert[:18], justify="right")
    for category, row in zip(profiles.categories, profiles.accuracy):
        table.add_row(category, *(f"{value:.2f}" for value in row))
    console.print(table)
    if profiles.skills:
        console.print(f"  plus {len(profiles.skills)} finer skills (counts, accuracy, +-1 skill score per expert)")


def eval_router(
    outcomes: Optional[Path] = typer.Option(None, "--outcomes", help="one outcome table, split by --split"),
    train: Optional[Path] = typer.Option(None, "--train", help="training outcome table"),
    test: Optional[Path] = typer.Option(None, "--test", help="test outcome table"),
    split: float = typer.Option(0.3, "--split", help="test share when splitting --outcomes"),
    pool: Optional[str] = typer.Option(None, "--pool", help="open-small | mixed | comma-separated expert names"),
    policy: str = typer.Option("skills", "--policy", help="skills | category | cost | cascade | escalate"),
    max_experts: int = typer.Option(3, "--max-experts", help="most experts called per query"),
    k: Optional[int] = typer.Option(None, "-k", help="a fixed number of experts (default: adaptive)"),
    target: float = typer.Option(0.9, help="adaptive k: stop adding experts at this estimated success"),
    budget: Optional[float] = typer.Option(None, "--budget", help="cap cost at F x the best single expert's"),
    cascade_threshold: float = typer.Option(0.5, help="cascade: defer when the weak expert's competence is lower"),
    escalate_threshold: float = typer.Option(
        0.0, help="escalate: stop on agreement only above this mean competence (--budget fits it instead)"
    ),
    vote: str = typer.Option("weighted", "--vote", help="combine the called experts: weighted | majority"),
    seed: int = typer.Option(0, help="split and sampling seed"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="save the cost-quality curve (PNG)"),
    frontier: bool = typer.Option(
        False, "--frontier", help="the policy at several budgets against the random-mix hull of single models"
    ),
    budgets: str = typer.Option("0.25,0.5,0.75,1.0", "--budgets", help="--frontier: budgets, x the best single's cost"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object (tables to stderr)"),
) -> None:
    """Route a labelled test table with profiles from a training table; no model is called."""
    from router import POLICIES, PolicySettings
    from router.offline import EvalOptions, OutcomeFileError, evaluate_pairs, json_figures, load_outcomes, split_tables

    if policy not in POLICIES:
        fail(f"--policy {policy!r} is not one of {', '.join(POLICIES)}")
    if vote not in ("weighted", "majority"):
        fail(f"--vote {vote!r} is not one of weighted, majority")
    if (outcomes is None) == (train is None or test is None):
        fail("give either --outcomes FILE (with --split) or both --train FILE and --test FILE")
    if plot is not None:
        _pyplot()  # before the evaluation: a missing matplotlib stops here, not after minutes of work
    try:
        if outcomes is not None:
            pairs = split_tables(load_outcomes(outcomes, pool), split, seed)
        else:
            assert train is not None and test is not None
            train_tables, test_tables = load_outcomes(train, pool), load_outcomes(test, pool)
            missing = sorted(set(test_tables) - set(train_tables))
            if missing:
                fail(f"{train}: no training rows for benchmark(s) {', '.join(missing)} present in {test}")
            pairs = {name: (train_tables[name], table) for name, table in test_tables.items()}
    except (OutcomeFileError, ValueError) as error:
        fail(str(error))
    budget_list = _budgets(budgets) if frontier else ()
    settings = PolicySettings(
        max_experts=max_experts,
        k=k,
        target=target,
        cascade_threshold=cascade_threshold,
        escalate_threshold=escalate_threshold,
    )
    options = EvalOptions(policy=policy, settings=settings, budget_factor=budget, vote=vote, seed=seed)
    with json_output(as_json):  # the tables for people: on stderr with --json
        try:
            with console.status("profiling and routing..."):
                reports = evaluate_pairs(pairs, options, budget_list)
        except ValueError as error:
            fail(str(error))
        for name, report in reports.items():
            _print_report(name, report)
            if frontier:
                _print_frontier(name, report)
        if plot is not None:
            (_plot_frontier if frontier else _plot)(reports, plot)
            console.print(f"wrote {plot}")
    if as_json:
        payload = next(iter(reports.values())) if len(reports) == 1 else {"benchmarks": reports}
        print(json.dumps(json_figures(payload)))


def route(
    query: str = typer.Argument(..., help="the question to route"),
    pool: str = pool_option(),
    policy: Optional[str] = typer.Option(
        None, "--policy", help="skills | category | cost | cascade | escalate (default: pool's)"
    ),
    k: Optional[int] = typer.Option(None, "-k", help="a fixed number of experts"),
    budget: Optional[float] = typer.Option(
        None, "--budget", help="cost/escalate: mean cost <= F x the best single expert's (default: pool's)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the decision as one JSON object"),
) -> None:
    """Show which experts would answer a question, and why (no model is called)."""
    from experts.config import PoolFileError, load_pool
    from router import PolicyUnavailable, RouterSetupError, build_router

    try:
        spec = load_pool(pool)
        router = build_router(spec)
        if budget is not None and budget <= 0:
            raise ValueError(f"--budget must be above 0, got {budget}")
        decision = router.recruit(router.understand(query), k=k, policy=policy, budget=budget)
    except (PoolFileError, RouterSetupError, PolicyUnavailable, ValueError) as error:
        fail(str(error))
    if as_json:
        print(json.dumps(decision.model_dump()))
        return
    needs = ", ".join(f"{skill} {need:.2f}" for skill, need in decision.skills.items()) or "none found"
    console.print(f"[bold]skills[/bold]: {needs}" + (" (fallback)" if decision.fallback else ""))
    table = Table(title=f"routing: policy {decision.policy}, {decision.k} expert(s), {decision.elapsed_ms:.2f} ms")
    for column in ("expert", "score", "chosen", "why"):
        table.add_column(column)
    for score in decision.scores:
        table.add_row(score.name, f"{score.score:.3f}", "yes" if score.chosen else "", score.reason)
    console.print(table)
    if decision.plans:
        _print_plans(decision)
    if decision.escalation is not None:
        console.print(
            f"second stage: {', '.join(decision.escalation.then)}, asked if the first stage disagrees"
            f" or its mean competence is below {decision.escalation.threshold:.2f}"
        )


def _print_plans(decision: object) -> None:
    from router import RoutingDecision

    assert isinstance(decision, RoutingDecision)
    budget = "" if decision.budget is None else f", budget {decision.budget:g}x the best single expert's cost"
    table = Table(title=f"plans weighed: lambda {decision.cost_lambda:.3g}{budget}")
    for column in ("plan", "kind", "est. accuracy", "exp. cost", "value", "why"):
        table.add_column(column, justify="right" if column in ("est. accuracy", "exp. cost", "value") else "left")
    for plan in decision.plans:
        then = f", then {' + '.join(plan.then)}" if plan.then else ""
        table.add_row(
            " + ".join(plan.experts) + then,
            plan.kind,
            f"{plan.estimated_accuracy:.3f}",
            f"{plan.expected_cost:.1f}",
            f"{plan.value:.4f}",
            plan.reason,
        )
    console.print(table)


def _print_report(name: str, report: dict[str, object]) -> None:
    table = Table(title=f"{name}: policy {report['policy']}, {report['test_questions']} test questions")
    for column in ("router", "accuracy", "experts/query", "cost/query"):
        table.add_column(column, justify="right" if column != "router" else "left")

    def cell(value: object, digits: int = 4) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    table.add_row(
        "router (weighted vote)",
        cell(report["weighted_vote_accuracy"]),
        cell(report["mean_experts"], 2),
        cell(report["mean_cost"], 0),
    )
    table.add_row("router (majority vote)", cell(report["majority_vote_accuracy"]), "", "")
    table.add_row("router (top expert only)", cell(report["top1_accuracy"]), "1.00", "")
    table.add_row(
        f"best single: {report['best_single_expert']}",
        cell(report["best_single_accuracy"]),
        "1.00",
        cell(report["best_single_cost"], 0),
    )
    table.add_row("best expert per category", cell(report["category_oracle_accuracy"]), "1.00", "")
    table.add_row("random expert", cell(report["random_accuracy"]), "1.00", "")
    table.add_row("per-question oracle", cell(report["oracle_accuracy"]), "", "")
    console.print(table)
    if "cost_lambda" in report:
        console.print(f"  cost policy: lambda {report['cost_lambda']:.4g} per unit of expected cost")
    if "escalate_threshold" in report:
        console.print(
            f"  escalate: threshold {report['escalate_threshold']:.2f}, "
            f"second stage asked on {report['escalation_share']:.1%} of the questions"
        )
    if "apgr" in report:
        console.print(
            f"  RouteLLM: APGR {report['apgr']:.3f}, CPT(50%) {report['cpt50']:.3f}, CPT(80%) {report['cpt80']:.3f}"
        )


def _pyplot() -> Any:
    """matplotlib's pyplot on the file backend, or a clear stop: ``--plot`` is the only user of the ``plot`` extra."""
    try:
        import matplotlib
    except ImportError:
        fail("--plot needs matplotlib: pip install 'moesaic[plot]' (or leave out --plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(reports: dict[str, dict[str, object]], path: Path) -> None:
    plt = _pyplot()

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, report in reports.items():
        curve = report.get("quality_curve")
        if not curve:
            continue
        shares = [i / (len(curve) - 1) for i in range(len(curve))]
        axis.plot(shares, curve, label=f"{name} (APGR {report['apgr']:.2f})")
        axis.plot([0, 1], [curve[0], curve[-1]], linestyle=":", color="grey")
    axis.set_xlabel("share of queries sent to the strong model")
    axis.set_ylabel("accuracy")
    axis.set_title("cost-quality curve (dotted: random routing)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _budgets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        fail(f"--budgets {text!r} must be numbers separated by commas, like 0.25,0.5,1.0")
    if not values or any(value <= 0 for value in values):
        fail(f"--budgets {text!r} must be positive numbers (x the best single model's mean cost)")
    return values


def _print_frontier(name: str, report: dict[str, object]) -> None:
    table = Table(title=f"{name}: cost-quality frontier (pool APGR {report['pool_apgr']:.3f}; 0.5 = random-mix hull)")
    for column in ("budget", "accuracy", "mean cost", "random-mix hull", "over the hull"):
        table.add_column(column, justify="right")
    for row in report["frontier"]:  # type: ignore[attr-defined]
        gap = row["accuracy"] - row["hull_accuracy"]
        table.add_row(
            f"{row['budget']:.2f}x",
            f"{row['accuracy']:.4f}",
            f"{row['mean_cost']:.4g}",
            "-" if math.isnan(row["hull_accuracy"]) else f"{row['hull_accuracy']:.4f}",
            "-" if math.isnan(gap) else f"{gap:+.4f}",
        )
    console.print(table)


def _plot_frontier(reports: dict[str, dict[str, object]], path: Path) -> None:
    plt = _pyplot()

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, report in reports.items():
        points, hull = report["single_models"], report["hull"]  # type: ignore[assignment]
        rows = report["frontier"]  # type: ignore[assignment]
        axis.plot([r["mean_cost"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=f"{name} policy")
        axis.scatter([p["mean_cost"] for p in points], [p["accuracy"] for p in points], s=12, color="grey")
        axis.plot([h["mean_cost"] for h in hull], [h["accuracy"] for h in hull], linestyle=":", color="grey")
    axis.set_xlabel("mean cost per question")
    axis.set_ylabel("accuracy")
    axis.set_title("cost-quality frontier (grey: single models; dotted: random-mix hull)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
