"""The ``moesaic`` command: serve the API, ask a question, list experts, prepare models."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from experts import configure_tracing, is_ready
from experts.config import PoolFileError, PoolSpec, load_pool
from orchestrator.cli.options import pool_option, ray_address_option, version_text
from orchestrator.cli.output import console, errors

app = typer.Typer(help="Moesaic: several LLM experts answer together.", no_args_is_help=True)


def _print_version(asked: bool) -> None:
    if asked:
        console.print(version_text(), highlight=False)
        raise typer.Exit()


@app.callback()
def _moesaic(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the installed version and exit"
    ),
) -> None:
    """Moesaic: several LLM experts answer together."""


PoolOption = pool_option()
RayOption = ray_address_option()


def _load(pool: str) -> PoolSpec:
    try:
        return load_pool(pool)
    except PoolFileError as error:
        errors.print(f"[red]error:[/red] {error}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    pool: str = PoolOption,
    host: str = typer.Option("127.0.0.1", envvar="MOESAIC_HOST", help="address to listen on"),
    port: int = typer.Option(8000, envvar="MOESAIC_PORT", help="port to listen on"),
    ray_address: Optional[str] = RayOption,
    num_cpus: Optional[int] = typer.Option(
        None, envvar="MOESAIC_NUM_CPUS", help="CPUs for a local Ray instance (default: all)"
    ),
    config: Optional[str] = typer.Option(
        None, "--config", envvar="MOESAIC_CONFIG", help="service config: Redis, API keys, limits (deploy/service.yaml)"
    ),
    log_format: str = typer.Option(
        "json", "--log-format", envvar="MOESAIC_LOG_FORMAT", help="json (one object per line) or text (for people)"
    ),
    log_level: str = typer.Option(
        "info", "--log-level", envvar="MOESAIC_LOG_LEVEL", help="debug, info, warning or error"
    ),
) -> None:
    """Start the OpenAI-compatible API with the pool's experts in Ray actors."""
    import uvicorn

    from orchestrator.server.api.app import create_app
    from orchestrator.server.service.service_config import ServiceConfig, ServiceConfigError, load_service_config
    from orchestrator.server.settings import ServeSettings

    _load(pool)  # fail now, with the file and field, not inside the server's start-up
    _configure_logs(log_format, log_level)
    configure_tracing("moesaic")  # OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set (the otel extra)
    settings = ServeSettings.from_env(
        pool=pool, host=host, port=port, ray_address=ray_address, num_cpus=num_cpus, config=config
    )
    try:
        service = load_service_config(settings.config) if settings.config else ServiceConfig()
        service.redis.resolved_url()  # a redis.url_env naming an unset variable stops here, not in the server
    except ServiceConfigError as error:
        errors.print(f"[red]error:[/red] {error}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        create_app(settings, service=service, plugins=_plugins(service, settings.host)),
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (JSON or text)
        access_log=False,  # ours carries the request id, the route's model and the API key's name
        timeout_graceful_shutdown=service.limits.shutdown_grace_s,  # in-flight requests finish, then the pool
    )


def _plugins(service: Any, host: str) -> list[Any]:
    """What ``serve`` mounts beside the API: MCP at /mcp, when the mcp extra is installed and not switched off."""
    from orchestrator.frameworks.mcp_endpoint import McpEndpoint, mcp_available

    return [McpEndpoint(host)] if service.mcp.enabled and mcp_available() else []


def _configure_logs(log_format: str, level: str) -> None:
    """Logs of this process and of the Ray workers it starts, in one format; bad values stop with a clear error."""
    from orchestrator.server.observability.logs import configure_logging, export_for_workers

    if log_format not in ("json", "text"):
        errors.print(f"[red]error:[/red] --log-format must be json or text, not {log_format!r}")
        raise typer.Exit(2)
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        errors.print(f"[red]error:[/red] --log-level must be debug, info, warning or error, not {level!r}")
        raise typer.Exit(2)
    configure_logging(log_format, level)  # type: ignore[arg-type]
    export_for_workers(log_format, level)  # type: ignore[arg-type]


@app.command()
def experts(pool: str = PoolOption) -> None:
    """List the pool's experts, their models, skills and roles."""
    spec = _load(pool)
    roles = {name: role for role, name in spec.roles.model_dump().items() if name}
    table = Table(title=f"pool {spec.name!r}: {spec.description}")
    for column in ("name", "backend", "model", "skills", "routed", "role"):
        table.add_column(column)
    for expert in spec.experts:
        skills = ", ".join(f"{skill} {score:g}" for skill, score in expert.skills.items()) or "-"
        table.add_row(
            expert.name,
            expert.backend,
            expert.model,
            skills,
            "yes" if expert.routable else "no",
            roles.get(expert.name, ""),
        )
    console.print(table)


@app.command()
def prepare(pool: str = PoolOption) -> None:
    """Dequantise and cache the pool's GGUF models once, so actors start fast."""
    from experts.config import dequantised_dir, resolve_model
    from experts.engine import prepare_model

    spec = _load(pool)
    models = sorted({expert.model for expert in spec.experts if expert.backend == "local"})
    for model in models:
        source = resolve_model(model)
        if source.gguf_file is None:
            console.print(f"{model}: safetensors checkpoint, nothing to prepare")
            continue
        if (dequantised_dir(source) / "config.json").exists():
            console.print(f"{model}: cached at {dequantised_dir(source)}")
            continue
        with console.status(f"dequantising {model} (about 20 s, once)..."):
            directory = prepare_model(source)
        console.print(f"{model}: prepared at {directory}")


@app.command()
def ask(
    question: str = typer.Argument(..., help="the question"),
    pool: str = PoolOption,
    k: Optional[int] = typer.Option(None, "-k", help="how many experts answer (default: the pool's k)"),
    policy: Optional[str] = typer.Option(
        None, "--policy", help="skills | category | cost | cascade | escalate (all but skills need profiles)"
    ),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="passthrough | vote | synthesize | rank"),
    max_tokens: Optional[int] = typer.Option(None, help="token budget per model call"),
    temperature: Optional[float] = typer.Option(None, help="sampling temperature (0 = greedy)"),
    explain: bool = typer.Option(False, "--explain", help="show routing, each expert's answer and timings"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
    ray_address: Optional[str] = RayOption,
) -> None:
    """Answer one question with the pool (starts the experts, answers, stops them)."""
    from aggregator import STRATEGIES

    spec = _load(pool)
    if strategy is not None and strategy not in STRATEGIES:
        errors.print(f"[red]error:[/red] --strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        raise typer.Exit(2)
    result, not_started = asyncio.run(_ask(spec, question, k, policy, strategy, max_tokens, temperature, ray_address))
    fewer = _fewer_experts(k, result, spec, not_started)
    if as_json:
        print(json.dumps({"answer": result.text, **result.metadata(), **({"fewer_experts": fewer} if fewer else {})}))
        return
    if fewer:
        errors.print(f"[yellow]note:[/yellow] {escape(fewer)}", soft_wrap=True)
    if explain:
        _explain(result)
    how = result.strategy + (", consensus short-cut" if result.verdict.shortcut else "")
    console.print(Panel(result.text or "(empty answer)", title=f"answer ({how})", border_style="green"))
    if explain:
        usage = result.usage
        console.print(f"tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out; cost {usage.cost:.6f}")


async def _ask(spec: PoolSpec, question: str, k, policy, strategy, max_tokens, temperature, ray_address):  # type: ignore[no-untyped-def]
    from experts.runtime import ExpertPool
    from experts.types import GenerationRequest, Message
    from orchestrator.pipeline.orchestrator import Orchestrator
    from orchestrator.pipeline.state import PipelineRequest

    pool = ExpertPool(spec, ray_address=ray_address)
    try:
        with console.status(f"starting {len(spec.experts)} experts..."):
            health = await pool.start()
        failed = {name: h.get("error") for name, h in health.items() if not is_ready(h)}
        for name, error in failed.items():
            errors.print(f"[yellow]expert {name} did not start:[/yellow] {error}")
        generation = GenerationRequest([Message("user", question)], max_tokens=max_tokens, temperature=temperature)
        request = PipelineRequest(generation, k=k, policy=policy, strategy=strategy)
        with console.status("answering..."):
            return await Orchestrator(pool).run(request), list(failed)
    except Exception as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    finally:
        await pool.shutdown()


def _fewer_experts(k: int | None, result: Any, spec: PoolSpec, not_started: list[str]) -> str | None:
    """Why the answer came from fewer experts than ``-k`` asked for; None when it did not."""
    decision = result.decision
    if k is None or len(decision.experts) >= k:
        return None
    routable = [expert.name for expert in spec.experts if expert.routable]
    reasons = []
    if len(routable) < k:
        reasons.append(f"the pool has {len(routable)} routable expert(s) ({', '.join(routable)})")
    down = [name for name in not_started if name in routable]
    if down:
        reasons.append(f"{', '.join(down)} did not start")
    unchosen = [score for score in decision.scores if not score.chosen and score.name in routable]
    reasons += [f"{score.name} was not chosen: {score.reason}" for score in unchosen if score.name not in down]
    if not reasons:
        reasons.append(f"the {decision.policy} router settled on k={decision.k}")
    return f"answered by {len(decision.experts)} of the {k} experts asked for (-k {k}): " + "; ".join(reasons)


def _explain(result) -> None:  # type: ignore[no-untyped-def]
    decision = result.decision
    needs = ", ".join(f"{skill} {need:.2f}" for skill, need in decision.skills.items()) or "none found"
    console.print(f"[bold]skills[/bold]: {needs}" + (" (generalist fallback)" if decision.fallback else ""))
    table = Table(title=f"routing ({decision.policy}, k={decision.k})")
    for column in ("rank", "expert", "score", "chosen", "why"):
        table.add_column(column)
    for score in decision.scores:
        table.add_row(
            str(score.rank or "-"), score.name, f"{score.score:.2f}", "yes" if score.chosen else "", score.reason
        )
    console.print(table)
    for answer in result.answers:
        body = answer.text if answer.error is None else f"[red]{answer.error}[/red]"
        console.print(Panel(body or "(empty)", title=f"expert {answer.expert}", border_style="blue"))
    timings = Table(title="timings (ms)")
    timings.add_column("step")
    timings.add_column("ms", justify="right")
    for step, value in result.timings_ms.items():
        timings.add_row(step, f"{value:.1f}")
    console.print(timings)


from orchestrator.cli.aggregators import bench_aggregators  # noqa: E402
from orchestrator.cli.batch import batch  # noqa: E402
from orchestrator.cli.deploy import app as deploy_app  # noqa: E402
from orchestrator.cli.journal import app as journal_app  # noqa: E402
from orchestrator.cli.keys import app as keys_app  # noqa: E402
from orchestrator.cli.routing import eval_router, profile, route  # noqa: E402
from orchestrator.frameworks.mcp_command import mcp_command  # noqa: E402

app.command("profile")(profile)
app.command("eval-router")(eval_router)
app.command("route")(route)
app.command("bench-aggregators")(bench_aggregators)
app.command("batch")(batch)
app.add_typer(journal_app, name="journal")
app.command("mcp")(mcp_command)
app.add_typer(deploy_app, name="deploy")
app.add_typer(keys_app, name="keys")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
