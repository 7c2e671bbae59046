"""``moesaic bench-aggregators``: measure which model aggregates best, per category, and store the choice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from aggregator import AggregatorChoice, SyntheticCase
from experts import is_ready
from experts.config import PoolSpec
from orchestrator.cli.options import pool_option, ray_address_option
from orchestrator.cli.output import console, fail, json_output


def bench_aggregators(
    dataset: Path = typer.Option(..., "--dataset", help="the labelled questions (.jsonl) the pool was profiled on"),
    results: Path = typer.Option(..., "--results", help="graded answers from `moesaic profile --dataset --results`"),
    pool: str = pool_option(),
    candidates: Optional[str] = typer.Option(
        None, "--candidates", help="comma-separated aggregator experts (default: the pool's aggregator and judge)"
    ),
    per_category: int = typer.Option(20, "--per-category", help="synthetic cases per category"),
    max_tokens: int = typer.Option(256, help="each aggregator's token budget per case"),
    seed: int = typer.Option(0, help="case sampling seed"),
    redis_url: Optional[str] = typer.Option(None, "--redis", help="store the choice beside the pool's profiles"),
    name: Optional[str] = typer.Option(None, "--name", help="key space in the store (default: the pool's name)"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the choice as JSON here"),
    ray_address: Optional[str] = ray_address_option(),
    as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object (tables to stderr)"),
) -> None:
    """Score candidate aggregators on synthetic cases (one right + two wrong answers) and keep the best."""
    import asyncio

    from aggregator import build_cases
    from experts.config import PoolFileError, load_pool
    from router.offline import OutcomeFileError, load_dataset, read_results

    try:
        spec = load_pool(pool)
        questions = load_dataset(dataset)
    except (PoolFileError, OutcomeFileError) as error:
        fail(str(error))
    names = _candidates(spec, candidates)
    graded = read_results(results)
    if graded and not any(answer.text for answer in graded):
        fail(f"{results}: the answers carry no text (written by an older moesaic); profile again with --results")
    cases = build_cases(questions, graded, per_category, seed)
    if not cases:
        fail(f"{results}: no question has one right and two different wrong answers; profile more questions or experts")
    with json_output(as_json):  # what it prints for people: on stderr with --json
        console.print(f"{len(cases)} synthetic cases x {len(names)} aggregators ({', '.join(names)})")
        choice = asyncio.run(_measure(spec, cases, names, max_tokens, ray_address))
        _print_table(choice, names)
        _store(choice, name or spec.name, redis_url, out)
    if as_json:
        figures = {
            "cases": len(cases),
            "default": choice.default,
            "per_category": choice.per_category,
            "recovery": {n: _clean(choice.rate(n)) for n in names},
            "recovered": choice.recovered,
        }
        print(json.dumps(figures))


def _candidates(spec: PoolSpec, given: str | None) -> list[str]:
    experts = [expert.name for expert in spec.experts]
    if given:
        names = [name.strip() for name in given.split(",") if name.strip()]
    else:
        roles = spec.roles
        names = list(dict.fromkeys(n for n in (roles.aggregator, roles.judge) if n))
    unknown = [name for name in names if name not in experts]
    if unknown:
        fail(f"--candidates names unknown experts: {', '.join(unknown)}; the pool has {', '.join(experts)}")
    if not names:
        fail("the pool names no aggregator; pass --candidates a,b")
    return names


async def _measure(
    spec: PoolSpec, cases: list[SyntheticCase], names: list[str], max_tokens: int, ray: str | None
) -> AggregatorChoice:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from aggregator import Sampling, measure
    from experts.runtime import ExpertPool

    pool = ExpertPool(spec, ray_address=ray)
    try:
        health = await pool.start()
        down = [name for name in names if not is_ready(health[name])]
        if down:
            fail(f"aggregators did not start: {', '.join(down)}; see `moesaic experts`")
        columns = [BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress("[progress.description]{task.description}", *columns, console=console) as progress:
            task = progress.add_task("aggregating", total=len(cases) * len(names))
            sampling = Sampling(max_tokens=max_tokens, temperature=0.0, seed=0)
            return await measure(pool, cases, names, sampling, on_progress=lambda n: progress.advance(task, n))
    finally:
        await pool.shutdown()


def _print_table(choice: AggregatorChoice, names: list[str]) -> None:
    categories = sorted({c for cells in choice.recovered.values() for c in cells})
    table = Table(title="share of synthetic cases where the aggregator recovered the right answer")
    table.add_column("category")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("chosen")
    for category in [*categories, None]:
        row = []
        for name in names:
            cells = [choice.recovered[name].get(category, [0, 0])] if category else choice.recovered[name].values()
            right, total = sum(cell[0] for cell in cells), sum(cell[1] for cell in cells)
            row.append(f"{right / total:.2f} ({right}/{total})" if total else "-")
        chosen = choice.per_category.get(category, "") if category else choice.default
        table.add_row(category or "all", *row, chosen)
    console.print(table)


def _store(choice: AggregatorChoice, key_space: str, redis_url: str | None, out: Path | None) -> None:
    from router import ProfileStore, ProfileStoreError

    document = choice.to_dict()
    if redis_url is not None:
        try:
            ProfileStore(redis_url, key_space).save_document("aggregators", document)
        except ProfileStoreError as error:
            fail(str(error))
        console.print(f"stored the aggregator choice for {key_space!r} in {redis_url}")
    if out is not None:
        out.write_text(json.dumps(document), encoding="utf-8")
        console.print(f"wrote {out}")


def _clean(value: float) -> float | None:
    return None if value != value else round(value, 4)
