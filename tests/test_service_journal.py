"""The request journal: round trips in a Redis stream and in process, trimming, an outage that loses
nothing, and the ``moesaic journal tail|replay`` commands."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner

from orchestrator.cli.journal import app
from orchestrator.server.service.journal import JournalEntry, RequestJournal
from orchestrator.server.service.redis_link import RedisLink, connect_redis
from tests.conftest import RedisServer, ServerThread, echo_pool_spec, free_port


def entry(number: int, **changes: Any) -> JournalEntry:
    values: dict[str, Any] = {
        "request_id": f"req-{number}",
        "key_name": "alice",
        "model": "moesaic",
        "request": {"model": "moesaic", "messages": [{"role": "user", "content": f"question {number}"}]},
        "status": 200,
        "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {number}"}}]},
        "started": 1_700_000_000.0 + number,
        "duration_ms": 12.5,
    }
    values.update(changes)
    return JournalEntry(**values)


def stream_name() -> str:
    return f"test:journal:{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["redis", "memory"])
async def link(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[RedisLink]:
    link = await connect_redis(redis_url if request.param == "redis" else None)
    yield link
    await link.close()


def without_ids(entries: list[JournalEntry]) -> list[JournalEntry]:
    return [JournalEntry(**{**entry.__dict__, "entry_id": None}) for entry in entries]


async def test_round_trip(link: RedisLink) -> None:
    journal = RequestJournal(link, stream=stream_name())
    written = [entry(1), entry(2, status=502, response=None, error="every expert failed"), entry(3, cache_hit=True)]
    ids = [await journal.append(item) for item in written]
    assert all(ids) and len(set(ids)) == 3
    everything = await journal.read(10)
    assert without_ids(everything) == without_ids(written)
    assert [item.entry_id for item in everything] == ids
    after_first = await journal.read(10, after=str(ids[0]))
    assert [item.request_id for item in after_first] == ["req-2", "req-3"]
    assert [item.request_id for item in await journal.read(1, after=str(ids[0]))] == ["req-2"]
    assert [item.request_id for item in await journal.latest(2)] == ["req-2", "req-3"]
    assert await journal.read(0) == [] and await journal.latest(0) == []
    with pytest.raises(ValueError, match="ids look like"):
        await journal.read(10, after="yesterday")
    assert link.status in ("connected", "disabled")  # a caller's mistake is not a Redis outage
    assert ("redis stream" in journal.where) == (link.client is not None)


async def test_the_stream_is_trimmed_approximately(redis_url: str) -> None:
    link = await connect_redis(redis_url)
    stream = stream_name()
    journal = RequestJournal(link, stream=stream, maxlen=10)
    for number in range(300):
        await journal.append(entry(number))
    assert link.client is not None
    length = await link.client.xlen(stream)
    assert 10 <= length < 300  # MAXLEN ~ trims whole macro nodes: cheap, at least maxlen kept
    latest = await journal.latest(3)
    assert [item.request_id for item in latest] == ["req-297", "req-298", "req-299"]
    await link.close()


async def test_in_process_journal_is_bounded_and_says_so() -> None:
    journal = RequestJournal(RedisLink(None, None), memory_maxlen=3)
    for number in range(5):
        await journal.append(entry(number))
    assert [item.request_id for item in await journal.read(10)] == ["req-2", "req-3", "req-4"]
    assert journal.dropped == 2 and "lost at exit" in journal.where


async def test_unreadable_entries_are_skipped(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    link = await connect_redis(redis_url)
    stream = stream_name()
    journal = RequestJournal(link, stream=stream)
    await journal.append(entry(1))
    assert link.client is not None
    await link.client.xadd(stream, {"entry": "{not json"})
    await link.client.xadd(stream, {"other": "field"})
    await journal.append(entry(2))
    with caplog.at_level(logging.WARNING, logger="orchestrator.server.service.journal"):
        assert [item.request_id for item in await journal.read(10)] == ["req-1", "req-2"]
    assert sum("not readable" in record.getMessage() for record in caplog.records) == 2
    await link.close()


async def test_redis_stopping_mid_run_loses_nothing() -> None:
    with RedisServer() as server:
        link = await connect_redis(server.url, retry_interval_s=0.3)
        journal = RequestJournal(link, stream="moesaic:journal")
        await journal.append(entry(1))
        server.stop()
        assert await journal.append(entry(2))  # kept in process, with an id, no error
        assert await journal.append(entry(3))
        assert link.status.startswith("fallback: ") and "until Redis answers (2 waiting)" in journal.where
        assert [item.request_id for item in await journal.latest(5)] == ["req-2", "req-3"]
        server.start()  # a fresh Redis: entry 1 went down with the old one (no persistence)
        await asyncio.sleep(0.35)
        await journal.append(entry(4))
        assert link.status == "connected" and "redis stream" in journal.where
        raw = redis.Redis.from_url(server.url, decode_responses=True)
        stored = [json.loads(fields["entry"])["request_id"] for _, fields in raw.xrange("moesaic:journal")]
        raw.close()
        assert stored == ["req-2", "req-3", "req-4"]  # the outage's entries first, in order
        await link.close()


def append_sync(url: str, stream: str, entries: list[JournalEntry]) -> list[str]:
    async def run() -> list[str]:
        link = await connect_redis(url, required=True)
        journal = RequestJournal(link, stream=stream)
        ids = [str(await journal.append(item)) for item in entries]
        await link.close()
        return ids

    return asyncio.run(run())


def test_tail_command(redis_url: str) -> None:
    stream = stream_name()
    ids = append_sync(redis_url, stream, [entry(1), entry(2, status=429, response=None, error="rate limited")])
    runner = CliRunner()
    table = runner.invoke(app, ["tail", "--redis", redis_url, "--stream", stream], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "req-1" in table.output and "answer 1" in table.output and "rate limited" in table.output
    latest = runner.invoke(app, ["tail", "--redis", redis_url, "--stream", stream, "--json", "-n", "1"])
    assert latest.exit_code == 0, latest.output
    [only] = json.loads(latest.stdout)  # stdout is one JSON document: the entries
    assert only["id"] == ids[1] and only["status"] == 429 and only["error"] == "rate limited"
    since = runner.invoke(app, ["tail", "--redis", redis_url, "--stream", stream, "--since", ids[0], "--json"])
    assert [entry["request_id"] for entry in json.loads(since.stdout)] == ["req-2"]
    wrong = runner.invoke(app, ["tail", "--redis", redis_url, "--stream", stream, "--since", "yesterday"])
    assert wrong.exit_code == 2 and "is not a journal entry id" in wrong.output


def test_the_journal_commands_are_part_of_moesaic() -> None:
    from orchestrator.cli.main import app as moesaic

    result = CliRunner().invoke(moesaic, ["journal", "--help"])
    assert result.exit_code == 0 and "tail" in result.output and "replay" in result.output


def test_commands_say_what_to_do_when_something_is_not_there(redis_url: str) -> None:
    result = CliRunner().invoke(app, ["tail", "--redis", RedisServer().url])
    assert result.exit_code == 2 and "cannot reach Redis" in result.output
    stream = stream_name()
    append_sync(redis_url, stream, [entry(1)])
    nobody = f"http://127.0.0.1:{free_port()}"  # no server there
    result = CliRunner().invoke(app, ["replay", "--url", nobody, "--redis", redis_url, "--stream", stream])
    assert result.exit_code == 2 and "is `moesaic serve` running there?" in result.output


@pytest.fixture(scope="module")
async def echo_server(ray_session: None) -> AsyncIterator[ServerThread]:
    """A real server on the echo pool: ``expert/a`` answers with the question's words."""
    from experts.runtime._pool import ExpertPool
    from orchestrator.pipeline.orchestrator import Orchestrator
    from orchestrator.server.api.app import create_app

    pool = ExpertPool(echo_pool_spec("journal-replay"))
    await pool.start()
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as server:
        yield server
    await pool.shutdown()


@pytest.mark.ray
def test_replay_against_a_running_server(redis_url: str, echo_server: ServerThread) -> None:
    stream = stream_name()
    recorded = []
    for number, question in enumerate(["one two three", "four five"]):
        body = {"model": "expert/a", "messages": [{"role": "user", "content": question}], "temperature": 0}
        reply = httpx.post(echo_server.url + "/v1/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200
        recorded.append(entry(number, model="expert/a", request=body, response=reply.json()))
    # what a changed service would look like: the journal remembers another answer for the second
    recorded[1].response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "something else"}}]}
    bad = {"model": "expert/nobody", "messages": [{"role": "user", "content": "hi"}]}
    recorded.append(entry(9, model="expert/nobody", request=bad, status=404, response=None, error="no such model"))
    append_sync(redis_url, stream, recorded)

    result = CliRunner().invoke(
        app,
        ["replay", "--url", echo_server.url, "--redis", redis_url, "--stream", stream, "--json"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "req-0" in result.stderr and "same answer" in result.stderr  # the table, for people: on stderr
    summary = json.loads(result.stdout)  # stdout is the JSON document alone
    assert summary["replayed"] == 3 and summary["same_status"] == 3 and summary["errors"] == 0
    assert (summary["same_answer"], summary["different_answer"], summary["not_compared"]) == (1, 1, 1)
    assert [row["same_answer"] for row in summary["rows"]] == [True, False, None]
    assert [row["replay_status"] for row in summary["rows"]] == [200, 200, 404]
