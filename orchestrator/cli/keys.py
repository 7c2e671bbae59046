"""``moesaic keys create | list | revoke``: API keys for the service.

A key is shown once, when it is made; only its sha256 is kept. Keys live either in the service
config (``auth.keys``: ``create`` prints the record to paste there) or in Redis (``--redis``: the
hash ``moesaic:keys``, read by every replica within ``auth.refresh_s`` seconds, revocable at once).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Optional

import typer
import yaml
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.output import console, errors, fail
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.service_config import KeyRecord, ServiceConfig, ServiceConfigError, load_service_config
from orchestrator.server.service.spend import dollars

app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)

RedisOption = typer.Option(
    None, "--redis", help="the service's Redis (default: the config's redis.url, or $MOESAIC_REDIS_URL)"
)
ConfigOption = typer.Option(None, "--config", help="the service config file (default: $MOESAIC_CONFIG)")


def _config(path: str | None) -> tuple[str | None, ServiceConfig | None]:
    path = path or os.environ.get("MOESAIC_CONFIG") or None
    if path is None:
        return None, None
    try:
        return path, load_service_config(path)
    except ServiceConfigError as error:
        fail(str(error))
    return None, None  # unreachable: _fail exits


def _config_redis(service: ServiceConfig | None) -> str | None:
    """The config's Redis URL (``redis.url``, or the variable ``redis.url_env`` names)."""
    if service is None:
        return None
    try:
        return service.redis.resolved_url()
    except ServiceConfigError as error:
        fail(str(error))
    return None  # unreachable: fail exits


def _redis(url: str) -> Any:
    client, problem = _reach_redis(url)
    if client is None:
        fail(f"{problem}. Start redis-server there or fix --redis")
    return client


def _reach_redis(url: str) -> tuple[Any, str]:
    """A client of the Redis at ``url`` that answered a ping, or None and why not (the URL without its password)."""
    import redis

    from orchestrator.server.service.redis_link import redact

    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        return None, f"cannot reach Redis at {redact(url)}: {error}"
    return client, ""


def _redis_records(client: Any, hash_name: str) -> list[KeyRecord]:
    records = []
    for name, text in sorted(client.hgetall(hash_name).items()):
        try:
            records.append(KeyRecord.model_validate_json(text))
        except ValidationError as error:
            errors.print(
                f"[yellow]skipping unreadable key {name!r} in {hash_name}:[/yellow] {error.errors()[0]['msg']}"
            )
    return records


@app.command()
def create(
    name: str = typer.Argument(..., help="who the key is for (letters, digits, _ . @ -)"),
    models: Optional[list[str]] = typer.Option(
        None, "--models", "-m", help="models it may use, patterns allowed (repeat or comma-separate; default: all)"
    ),
    rpm: Optional[int] = typer.Option(None, "--rpm", help="requests per minute (default: the config's rate_limits)"),
    tpm: Optional[int] = typer.Option(None, "--tpm", help="tokens per minute (default: the config's rate_limits)"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="the most max_tokens one request may ask"),
    budget: Optional[float] = typer.Option(
        None, "--budget-usd-per-day", help="dollars it may spend per UTC day (default: the config's rate_limits)"
    ),
    permissions: Optional[list[str]] = typer.Option(
        None, "--permission", "-P", help="what it may do beyond models: routing.evaluate (repeat or comma-separate)"
    ),
    redis_url: Optional[str] = typer.Option(None, "--redis", help="store the key in this Redis instead of printing"),
    config: Optional[str] = ConfigOption,
) -> None:
    """Make a key: print it once, and the record for the config (or store it in Redis)."""
    _, service = _config(config)
    patterns = [part.strip() for item in models or [] for part in item.split(",") if part.strip()] or ["*"]
    key = new_key()
    try:
        record = KeyRecord(
            name=name,
            hash=hash_key(key),
            models=patterns,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            max_tokens=max_tokens,
            budget_usd_per_day=budget,
            permissions=[part.strip() for item in permissions or [] for part in item.split(",") if part.strip()],
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors())
        fail(f"invalid key: {problems.replace('Value error, ', '')}")
    fields = record.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    if not fields.get("permissions"):
        fields.pop("permissions", None)
    if redis_url:
        client = _redis(redis_url)
        hash_name = service.auth.redis_hash if service else "moesaic:keys"
        if not client.hsetnx(hash_name, name, record.model_dump_json(exclude_none=True)):
            fail(f"a key named {name!r} exists in {hash_name}; revoke it first (moesaic keys revoke {name})")
        console.print(f"stored key {name!r} in Redis hash {hash_name} at {redis_url}")
    else:
        console.print("add this under auth.keys in the service config, then restart the service:")
        console.print(yaml.safe_dump([fields], sort_keys=False).rstrip(), highlight=False, markup=False)
    console.print("\nthe key (shown only now; store it where the client reads it):", highlight=False)
    print(key)


@app.command("list")
def list_keys(redis_url: Optional[str] = RedisOption, config: Optional[str] = ConfigOption) -> None:
    """The keys of the config file and of Redis (names, models, limits; never the keys)."""
    path, service = _config(config)
    redis_url = redis_url or _config_redis(service) or os.environ.get("MOESAIC_REDIS_URL")
    if service is None and not redis_url:
        fail("nothing to list: give --config FILE (or set MOESAIC_CONFIG) and/or --redis URL")
    rows: list[tuple[str, KeyRecord]] = [
        (f"config {path}", record) for record in (service.auth.keys if service else [])
    ]
    if redis_url:
        hash_name = service.auth.redis_hash if service else "moesaic:keys"
        client, problem = _reach_redis(redis_url)
        if client is None and service is None:
            fail(f"{problem}. Start redis-server there or fix --redis")
        if client is None:  # the file's keys are still worth seeing; say that Redis' are missing
            errors.print(f"[yellow]warning:[/yellow] {escape(problem)}; listing {path}'s keys only", soft_wrap=True)
        else:
            rows += [(f"redis {hash_name}", record) for record in _redis_records(client, hash_name)]
    table = Table(title=f"{len(rows)} API key{'s' if len(rows) != 1 else ''}")
    for column in ("name", "source", "models", "rpm", "tpm", "max_tokens", "budget/day", "created", "hash"):
        table.add_column(column)
    for source, record in rows:
        limits = (record.requests_per_minute, record.tokens_per_minute, record.max_tokens)
        table.add_row(
            record.name,
            source,
            ", ".join(record.models),
            *("default" if value is None else str(value) for value in limits),
            "default" if record.budget_usd_per_day is None else dollars(record.budget_usd_per_day),
            record.created or "",
            record.hash[:12] + "...",
        )
    console.print(table)


@app.command()
def revoke(
    name: str = typer.Argument(..., help="the key's name"),
    redis_url: Optional[str] = RedisOption,
    config: Optional[str] = ConfigOption,
) -> None:
    """Delete a key from Redis (replicas stop accepting it within auth.refresh_s seconds)."""
    path, service = _config(config)
    redis_url = redis_url or _config_redis(service) or os.environ.get("MOESAIC_REDIS_URL")
    if service is not None and any(record.name == name for record in service.auth.keys):
        fail(f"key {name!r} is in {path}: delete its entry under auth.keys and restart the service")
    if not redis_url:
        fail("give --redis URL (or a --config whose redis.url is set): keys in a config file are removed by editing it")
    hash_name = service.auth.redis_hash if service else "moesaic:keys"
    if not _redis(redis_url).hdel(hash_name, name):
        fail(f"no key named {name!r} in Redis hash {hash_name} at {redis_url}", code=1)
    console.print(f"revoked key {name!r} (deleted from {hash_name})")
