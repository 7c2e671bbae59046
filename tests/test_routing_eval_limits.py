"""``POST /v1/routing/evaluate`` is bounded (issue 27): the service config's ``routing_evaluation`` section caps the
table's rows, columns and decoded bytes before it is materialised (413 naming the setting), the evaluation runs in a
worker process that is killed when ``timeout_s`` passes, when it outgrows its memory allowance or when the client
leaves, and a second evaluation is refused at once (429) instead of waiting behind the first.

One server for the module (its worker started once by ``warm``); the caps are the defaults but a small
``max_table_bytes`` (a body over it still fits ``limits.max_body_bytes``) and a short ``timeout_s``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api import routing_eval
from orchestrator.server.api.app import create_app
from orchestrator.server.service.routing_worker import RoutingEvaluator
from orchestrator.server.service.service_config import ServiceConfig
from router.offline._outcomes import (
    NAMED_POOLS,
    OutcomeFileError,
    TableLimits,
    TableTooLarge,
    check_limits,
    read_outcomes,
)
from tests.conftest import ServerThread, echo_pool_spec

pytestmark = pytest.mark.ray
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "mmlu_pro_dev.parquet"
MODELS = ["Meta-Llama-3_1-8B-Instruct", "mathstral-7B", "Phi-3-mini-4k-instruct", "gemma-7b"]
MAX_ROWS, MAX_COLUMNS, MAX_BYTES, TIMEOUT_S = 20_000, 512, 1024 * 1024, 3.0
SECTION = {"max_table_bytes": MAX_BYTES, "timeout_s": TIMEOUT_S}  # rows and columns: the defaults


def real_table(rows: int, models: list[str]) -> str:
    """The first ``rows`` MMLU-Pro questions answered by ``models``, as a base64 Parquet file."""
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: the shared data folder must sit beside the checkout")
    frame = pd.read_parquet(DATA).head(rows)
    keep = ["question_id", "question", "options", "answer", "category", "src"]
    frame = frame[keep + [c for c in frame.columns if c.split("|")[0] in models and "|" in c]]
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def small() -> str:
    """A table evaluated in well under a second: 120 questions, two models."""
    return real_table(120, MODELS[:2])


@pytest.fixture(scope="module")
def slow() -> str:
    """A table that takes far longer than ``TIMEOUT_S`` (with the default policy, ``cost``, and its four budgets:
    14 s on a busy 2-core machine): 2,000 questions, the seven models of ``open-small`` (587 KB)."""
    return real_table(2000, NAMED_POOLS["open-small"])


@pytest.fixture(scope="module")
async def pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("routing-limits"))
    await pool.start()
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def server(pool: ExpertPool) -> Iterator[ServerThread]:
    service = ServiceConfig.model_validate({"routing_evaluation": SECTION})
    with ServerThread(create_app(orchestrator=Orchestrator(pool), service=service)) as running:
        yield running
    assert evaluator(running).worker_pid is None  # the app's shutdown stopped its worker


@pytest.fixture(scope="module")
def warm(server: ServerThread, small: str) -> ServerThread:
    """The server with its worker started (by one evaluation that works)."""
    answer = evaluate(server, table=small, format="parquet", policy="skills", budgets=[1.0])
    assert answer.status_code == 200, answer.text
    assert evaluator(server).worker_pid is not None
    return server


def evaluator(server: ServerThread) -> RoutingEvaluator:
    return server.app.state.routing_evaluations


def evaluate(server: ServerThread, timeout: float = 120, **body: object) -> httpx.Response:
    return httpx.post(server.url + "/v1/routing/evaluate", json=body, timeout=timeout)


def refusal(answer: httpx.Response, status: int, code: str, setting: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and f"routing_evaluation.{setting}" in error["message"], error
    return str(error["message"])


def memory(field: str = "VmRSS") -> int:
    """This process's resident bytes (``VmHWM``: the peak), from /proc: the server runs in it (a thread)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:"))) * 1024


def reset_peak() -> str:
    """Restart the peak's count (Linux: clear_refs 5); the field to read afterwards."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "VmRSS"  # no peak to read: the resident size after the request
    return "VmHWM"


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


# -- the caps, over HTTP -----------------------------------------------------------------------------------------
def csv_rows(rows: int, columns: int = 1) -> str:
    header = "question," + ",".join(f"m{j}|correct" for j in range(columns))
    return header + "\n" + "".join(f"q{i}," + ",".join(["true"] * columns) + "\n" for i in range(rows))


def jsonl_rows(rows: int) -> str:
    return "".join(json.dumps({"question": f"q{i}", "m|correct": True}) + "\n" for i in range(rows))


@pytest.mark.parametrize(("fmt", "make"), [("csv", csv_rows), ("jsonl", jsonl_rows)])
def test_a_table_over_max_rows_is_a_413_naming_it(warm: ServerThread, fmt: str, make: object) -> None:
    text = make(MAX_ROWS + 1)  # type: ignore[operator]
    assert len(text.encode()) <= MAX_BYTES  # the rows are what is refused, not the size
    message = refusal(evaluate(warm, table=text, format=fmt, name=f"big.{fmt}"), 413, "table_too_large", "max_rows")
    assert message.startswith(f"big.{fmt}: ") and "20,001 rows" in message and "20,000 allowed" in message
    assert evaluate(warm, table=make(40), format=fmt).status_code == 400  # a table within: read (too few to learn)


def test_a_table_over_max_columns_is_a_413_naming_it(warm: ServerThread) -> None:
    wide = csv_rows(3, columns=MAX_COLUMNS)  # question + 512 outcome columns
    message = refusal(evaluate(warm, table=wide), 413, "table_too_large", "max_columns")
    assert "513 columns" in message and "512 allowed" in message
    keys = "".join(json.dumps({"question": "q", f"m{i}|correct": True}) + "\n" for i in range(MAX_COLUMNS))
    message = refusal(evaluate(warm, table=keys, format="jsonl"), 413, "table_too_large", "max_columns")
    assert "513 columns" in message  # every record's keys count, not only the first record's


def test_a_parquet_bomb_is_refused_from_its_metadata_fast_and_small(warm: ServerThread) -> None:
    rows = 2_000_000
    bomb = pa.table({"question": pa.array(["q"]).take(pa.array([0] * rows)), "m|correct": pa.array([True] * rows)})
    buffer = io.BytesIO()
    pq.write_table(bomb, buffer)
    assert len(buffer.getvalue()) < 64 * 1024  # a few tens of KB
    table = base64.b64encode(buffer.getvalue()).decode()
    peak = reset_peak()
    before, start = memory(), time.monotonic()
    answer = evaluate(warm, table=table, format="parquet", name="bomb.parquet")
    elapsed, grown = time.monotonic() - start, memory(peak) - before
    message = refusal(answer, 413, "table_too_large", "max_rows")
    assert "its Parquet metadata says 2,000,000 rows" in message
    assert elapsed < 5.0, elapsed  # read into pandas in the server (before issue 27): 6 s and a +340 MiB peak
    assert grown < 100 * 2**20, f"the server grew by {grown / 2**20:.0f} MiB"


def test_a_base64_text_too_long_is_refused_before_it_is_decoded(warm: ServerThread) -> None:
    table = "QUJD" * (MAX_BYTES // 3 + 1) + "!"  # not even base64: decoding it first would answer 400
    message = refusal(evaluate(warm, table=table, format="parquet"), 413, "table_too_large", "max_table_bytes")
    assert "once decoded from base64" in message and "1,048,576 allowed" in message
    text = "question,a|correct\n" + "q,true\n" * (MAX_BYTES // 7 + 1)
    refusal(evaluate(warm, table=text), 413, "table_too_large", "max_table_bytes")


def test_turned_off_the_endpoint_is_a_404(pool: ExpertPool) -> None:
    service = ServiceConfig.model_validate({"routing_evaluation": {"enabled": False}})
    with ServerThread(create_app(orchestrator=Orchestrator(pool), service=service)) as off:
        answer = evaluate(off, table="x")
    assert answer.status_code == 404 and "routing_evaluation.enabled" in answer.json()["error"]["message"]


# -- the worker: memory, busy, disconnect, timeout ---------------------------------------------------------------
def test_a_worker_outgrowing_its_allowance_is_killed(
    warm: ServerThread, slow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backstop for a table whose metadata understates it: the worker's memory, watched while it works."""
    pid = evaluator(warm).worker_pid
    assert pid is not None
    monkeypatch.setattr(routing_eval, "memory_allowance", lambda section: 8 * 2**20)
    message = refusal(evaluate(warm, table=slow, format="parquet"), 413, "table_too_large", "max_table_bytes")
    assert "MiB of memory, more than the 8 MiB allowed" in message
    assert not alive(pid) and evaluator(warm).worker_pid is None


def test_a_second_evaluation_is_refused_at_once_and_a_departed_client_stops_the_first(
    warm: ServerThread, slow: str, small: str
) -> None:
    warmed = evaluate(warm, table=small, format="parquet", policy="skills", budgets=[1.0])  # a worker, warm
    assert warmed.status_code == 200, warmed.text
    pid = evaluator(warm).worker_pid
    first: list[BaseException] = []

    def impatient() -> None:  # leaves after 2 s, long before the evaluation ends
        try:
            evaluate(warm, timeout=2.0, table=slow, format="parquet")
        except httpx.TimeoutException as error:
            first.append(error)

    caller = threading.Thread(target=impatient)
    caller.start()
    deadline = time.monotonic() + 60
    while not evaluator(warm).busy:
        assert time.monotonic() < deadline and caller.is_alive(), "the first evaluation never started"
        time.sleep(0.05)
    start = time.monotonic()
    second = evaluate(warm, table=small, format="parquet")
    assert time.monotonic() - start < 2.0  # at once: no waiting on the first
    refusal(second, 429, "evaluation_busy", "timeout_s")
    assert 1 <= int(second.headers["retry-after"]) <= 10
    caller.join(timeout=30)
    assert first, "the first evaluation should have outlasted its client"
    deadline = time.monotonic() + 10
    while pid is not None and alive(pid):  # the server notices the disconnect and kills the worker
        assert time.monotonic() < deadline, "the worker still runs after its client left"
        time.sleep(0.1)
    while evaluator(warm).busy:  # and frees the slot (right after the kill, on the server's loop)
        assert time.monotonic() < deadline, "the slot is still held after its client left"
        time.sleep(0.05)


def test_an_evaluation_past_timeout_s_is_stopped_and_the_next_one_works(
    warm: ServerThread, slow: str, small: str
) -> None:
    ready = evaluate(warm, table=small, format="parquet", policy="skills", budgets=[1.0])  # a worker, warm
    assert ready.status_code == 200, ready.text
    pid, starts = evaluator(warm).worker_pid, evaluator(warm).starts
    assert pid is not None
    start = time.monotonic()
    answer = evaluate(warm, table=slow, format="parquet", name="slow.parquet")
    assert TIMEOUT_S <= time.monotonic() - start < TIMEOUT_S + 5
    message = refusal(answer, 413, "evaluation_timeout", "timeout_s")
    assert f"stopped after {TIMEOUT_S:g} s" in message and "fewer questions" in message
    assert answer.json()["error"]["param"] == "table"
    assert not alive(pid)  # killed, not left computing
    again = evaluate(warm, table=small, format="parquet", policy="skills", budgets=[1.0])
    assert again.status_code == 200, again.text  # a fresh worker
    assert evaluator(warm).starts == starts + 1 and evaluator(warm).worker_pid not in (None, pid)
    assert again.json() == ready.json()


# -- the caps in router.offline._outcomes, without a server -------------------------------------------------------
LIMITS = TableLimits(max_rows=3, max_columns=3, max_table_bytes=10_000, section="s")


def test_the_caps_count_records_as_pandas_does() -> None:
    quoted = 'question,a|correct\n"two\nlines",true\n"two\nlines",false\n"x",true\n'  # 3 records over 7 lines
    check_limits(quoted.encode(), "csv", LIMITS)
    old_mac = "question,a|correct\r" + "q,true\r" * 4  # pandas ends records at a lone \r too
    with pytest.raises(TableTooLarge, match=r"at least 4 rows, more than the 3 allowed \(s\.max_rows\)"):
        check_limits(old_mac.encode(), "csv", LIMITS)
    packed = ",".join(json.dumps({"question": f"q{i}", "a|correct": True}) for i in range(5))  # pandas: 5 rows
    with pytest.raises(OutcomeFileError, match="line 1 is not one JSON record"):
        check_limits(packed.encode(), "jsonl", LIMITS)
    with pytest.raises(TableTooLarge, match=r"s\.max_table_bytes"):
        check_limits(b"x" * 10_001, "csv", LIMITS)


def test_the_cli_reads_without_limits_and_a_bomb_is_refused_before_it_is_read() -> None:
    rows = 200_000
    bomb = pa.table({"question": pa.array(["q"]).take(pa.array([0] * rows)), "a|correct": pa.array([True] * rows)})
    buffer = io.BytesIO()
    pq.write_table(bomb, buffer)
    with pytest.raises(TableTooLarge, match="its Parquet metadata says 200,000 rows") as refused:
        read_outcomes(buffer.getvalue(), "parquet", source="bomb", limits=TableLimits(max_rows=1000, section="s"))
    assert refused.value.setting == "s.max_rows"
    assert len(read_outcomes(buffer.getvalue(), "parquet")["all"]) == rows  # the CLI's default: unlimited
