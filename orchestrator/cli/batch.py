"""``moesaic batch IN.jsonl OUT.jsonl``: the offline batch mode on the command line (``pipeline/batch.py``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from experts import is_ready
from experts.config import PoolFileError, PoolSpec, load_pool
from orchestrator.cli.options import pool_option, ray_address_option
from orchestrator.cli.output import console, errors
from orchestrator.pipeline.batch import BatchReport, BatchRunner
from orchestrator.pipeline.batch_io import BatchInputError, read_items

SHOWN_BAD_LINES = 20


def batch(
    source: Path = typer.Argument(..., metavar="IN.jsonl", help="input: a JSON object per line (question or messages)"),
    out: Path = typer.Argument(..., metavar="OUT.jsonl", help="output: one line per input line, in input order"),
    pool: str = pool_option(),
    max_tokens: Optional[int] = typer.Option(None, help="token budget per expert call (default: each expert's)"),
    temperature: Optional[float] = typer.Option(None, help="sampling temperature (default: each expert's)"),
    ray_address: Optional[str] = ray_address_option(),
) -> None:
    """Answer every line of IN: route all items, run each expert once over all its items, aggregate per item.

    Resumable: progress is kept in OUT.progress.jsonl; run the same command again to continue.
    """
    try:
        spec = load_pool(pool)
        lines, _ = read_items(source)
    except (PoolFileError, BatchInputError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    bad = [line for line in lines if line.error is not None]
    for line in bad[:SHOWN_BAD_LINES]:
        errors.print(f"[yellow]skipped[/yellow] {line.error}", highlight=False, soft_wrap=True)
    if len(bad) > SHOWN_BAD_LINES:
        errors.print(f"... and {len(bad) - SHOWN_BAD_LINES} more bad lines (each has its error in {out})")
    try:
        report = asyncio.run(_run(spec, source, out, max_tokens, temperature, ray_address))
    except BatchInputError as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    how = f"{report.calls_made} calls made, {report.calls_reused} reused from an earlier run"
    console.print(
        f"{report.items} lines -> {out}: {report.items - report.failed} answered, {report.failed} with an error; "
        f"{how}; {report.seconds:.1f} s"
    )


async def _run(
    spec: PoolSpec,
    source: Path,
    out: Path,
    max_tokens: Optional[int],
    temperature: Optional[float],
    ray_address: Optional[str],
) -> BatchReport:
    from experts.runtime import ExpertPool, dispatching
    from orchestrator.pipeline.orchestrator import Orchestrator

    pool = ExpertPool(spec, ray_address=ray_address)
    try:
        with errors.status(f"starting {len(spec.experts)} experts..."):
            health = await pool.start()
        for name, facts in health.items():
            if not is_ready(facts):
                errors.print(f"[yellow]expert {name} did not start:[/yellow] {facts.get('error')}")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=errors, transient=False) as bar:
            tasks = {
                "experts": bar.add_task("expert calls", total=None),
                "aggregation": bar.add_task("aggregator calls", total=None),
            }

            def stages(experts: int, aggregation: int) -> None:
                if experts:
                    bar.update(tasks["experts"], total=experts)
                if aggregation or experts == 0:
                    bar.update(tasks["aggregation"], total=aggregation)

            runner = BatchRunner(
                Orchestrator(dispatching(pool, always=True)),
                max_tokens=max_tokens,
                temperature=temperature,
                advance=lambda stage, count: bar.advance(tasks[stage], count),
                stages=stages,
            )
            return await runner.run(source, out)
    finally:
        await pool.shutdown()
