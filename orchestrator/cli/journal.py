"""``moesaic journal tail`` and ``moesaic journal replay``: read the request journal, re-send it.

Replay answers "does the service still answer these requests the same way?": each journaled
request body is POSTed again to a running server (non-streamed, bypassing the response cache
unless ``--use-cache``), and the table compares the status codes and the answers' texts.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from typing import Any, Optional

import typer
from rich.table import Table

from orchestrator.cli.output import console, fail, json_output
from orchestrator.server.service.journal import JournalEntry, RequestJournal
from orchestrator.server.service.redis_link import RedisUnavailable, connect_redis

app = typer.Typer(help="The request journal (a Redis stream): show it, replay it.", no_args_is_help=True)

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
RedisOption = typer.Option(
    None, "--redis", help=f"the service's Redis (default: $MOESAIC_REDIS_URL or {DEFAULT_REDIS})"
)
StreamOption = typer.Option("moesaic:journal", "--stream", help="the journal's stream key")


class ReplayAborted(RuntimeError):
    """The server cannot be reached at all: replaying the rest would only repeat the error."""


async def _entries(redis_url: str | None, stream: str, count: int, since: str | None) -> list[JournalEntry]:
    link = await connect_redis(redis_url or os.environ.get("MOESAIC_REDIS_URL") or DEFAULT_REDIS, required=True)
    try:
        journal = RequestJournal(link, stream=stream)
        entries = await (journal.read(count, after=since) if since else journal.latest(count))
        if link.status != "connected":
            raise RedisUnavailable(f"the journal could not be read: {link.status}")
        return entries
    finally:
        await link.close()


def _load(redis_url: str | None, stream: str, count: int, since: str | None) -> list[JournalEntry]:
    if count < 1:
        fail(f"--count must be at least 1, got {count}")
    try:
        return asyncio.run(_entries(redis_url, stream, count, since))
    except (RedisUnavailable, ValueError) as error:  # ValueError: a malformed --since
        fail(str(error))


def answer_texts(response: dict[str, Any] | None) -> list[str] | None:
    """The choices' message texts of an OpenAI response body; None when there is no answer to compare."""
    if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
        return None
    texts = []
    for choice in response["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        texts.append(str(message.get("content") or "") if isinstance(message, dict) else "")
    return texts


def _clip(text: str | None, width: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def tail(
    count: int = typer.Option(20, "--count", "-n", help="how many of the latest entries"),
    since: Optional[str] = typer.Option(None, "--since", help="entries after this entry id instead of the latest"),
    redis_url: Optional[str] = RedisOption,
    stream: str = StreamOption,
    as_json: bool = typer.Option(False, "--json", help="the entries as one JSON array instead of the table"),
) -> None:
    """Show the latest journal entries: who asked what, the status, how long it took, cache hits."""
    entries = _load(redis_url, stream, count, since)
    if as_json:  # one JSON document: the entries, oldest first
        print(json.dumps([{"id": e.entry_id, **json.loads(e.to_json())} for e in entries], ensure_ascii=False))
        return
    table = Table(title=f"journal {stream!r}: {len(entries)} entries")
    for column in ("id", "time", "request id", "key", "model", "status", "ms", "cache", "answer / error"):
        table.add_column(column, justify="right" if column in ("status", "ms") else "left")
    for entry in entries:
        texts = answer_texts(entry.response)
        table.add_row(
            entry.entry_id or "",
            datetime.fromtimestamp(entry.started).strftime("%Y-%m-%d %H:%M:%S"),
            entry.request_id,
            entry.key_name,
            entry.model,
            str(entry.status),
            f"{entry.duration_ms:.0f}",
            "hit" if entry.cache_hit else "",
            _clip(entry.error) if entry.error else _clip(texts[0] if texts else ""),
        )
    console.print(table)


async def _replay_all(
    entries: list[JournalEntry], url: str, api_key: str | None, timeout_s: float, use_cache: bool
) -> list[dict[str, Any]]:
    import httpx

    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    if not use_cache:
        headers["cache-control"] = "no-cache"
    rows = []
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s) as client:
        for entry in entries:
            body = {key: value for key, value in entry.request.items() if key not in ("stream", "stream_options")}
            row: dict[str, Any] = {"entry_id": entry.entry_id, "request_id": entry.request_id, "status": entry.status}
            try:
                reply = await client.post(
                    "/v1/chat/completions", json=body, headers={**headers, "x-request-id": f"{entry.request_id}-replay"}
                )
            except httpx.ConnectError as error:
                raise ReplayAborted(f"cannot reach {url}: {error}; is `moesaic serve` running there?") from None
            except httpx.HTTPError as error:
                row.update(replay_status=None, same_answer=None, error=f"{type(error).__name__}: {error}")
                rows.append(row)
                continue
            try:
                replayed = reply.json()
            except ValueError:
                replayed = None
            before, after = answer_texts(entry.response), answer_texts(replayed)
            same = None if before is None or after is None else before == after
            row.update(replay_status=reply.status_code, same_answer=same, error=None)
            rows.append(row)
    return rows


@app.command()
def replay(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="the running server to re-send the requests to"),
    count: int = typer.Option(20, "--count", "-n", help="how many entries (the latest, or the first after --since)"),
    since: Optional[str] = typer.Option(None, "--since", help="replay the entries after this entry id"),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="MOESAIC_API_KEY", help="sent as Authorization: Bearer"
    ),
    redis_url: Optional[str] = RedisOption,
    stream: str = StreamOption,
    timeout: float = typer.Option(120.0, "--timeout", help="seconds per request"),
    use_cache: bool = typer.Option(False, "--use-cache", help="let the server answer from its cache"),
    as_json: bool = typer.Option(False, "--json", help="print a summary JSON object (the table to stderr)"),
) -> None:
    """Re-send journaled requests and compare the status codes and answers with the recorded ones."""
    entries = _load(redis_url, stream, count, since)
    try:
        rows = asyncio.run(_replay_all(entries, url, api_key, timeout, use_cache))
    except ReplayAborted as error:
        fail(str(error))
    table = Table(title=f"replay of {len(rows)} journaled requests against {url}")
    for column in ("entry", "request id", "status", "replay status", "same answer"):
        table.add_column(column)
    for row in rows:
        same = {True: "yes", False: "[red]no[/red]", None: "-"}[row["same_answer"]]
        replayed = str(row["replay_status"]) if row["replay_status"] is not None else f"[red]{row['error']}[/red]"
        table.add_row(row["entry_id"] or "", row["request_id"], str(row["status"]), replayed, same)
    with json_output(as_json):  # the table for people: on stderr with --json
        console.print(table)
    if as_json:
        summary = {
            "replayed": len(rows),
            "same_status": sum(row["replay_status"] == row["status"] for row in rows),
            "same_answer": sum(row["same_answer"] is True for row in rows),
            "different_answer": sum(row["same_answer"] is False for row in rows),
            "not_compared": sum(row["same_answer"] is None for row in rows),
            "errors": sum(row["error"] is not None for row in rows),
            "rows": rows,
        }
        print(json.dumps(summary))
