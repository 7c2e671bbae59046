"""Structured logs: one JSON object per line, and one request id from the HTTP edge to the expert actors.

The end-to-end test sends a request with its own ``x-request-id`` through uvicorn, the gate,
the graph and the Ray actors of an echo pool, then finds that id in the API process's access
line and in the batch lines the actors wrote (Ray keeps each worker's stderr in its log files).
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from experts.actor.expert_actor import ExpertActor
from experts.runtime._pool import ExpertPool
from experts.types import GenerationRequest, Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.observability import context
from orchestrator.server.observability.logs import configure_logging
from tests.conftest import ServerThread, echo_pool_spec

CHAT = "/v1/chat/completions"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The root logger writes JSON lines into a buffer for the test; the previous set-up comes back after."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    configure_logging("json", "INFO", stream=buffer)
    yield buffer
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def lines_of(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_context_request_id_extras_and_tracebacks(log_output: io.StringIO) -> None:
    log = logging.getLogger("moesaic.test")
    token = context.enter(context.RequestScope("req-from-context"))
    try:
        log.info("inside %s", "a request", extra={"expert": "a", "batch_size": 2, "ids": ["x", "y"]})
        try:
            raise ValueError("broken")
        except ValueError:
            log.exception("failed")
    finally:
        context.leave(token)
    log.warning("outside", extra={"request_id": "req-explicit"})
    log.warning("no request")
    inside, failed, explicit, outside = lines_of(log_output)
    assert set(inside) >= {"ts", "level", "logger", "message", "request_id"}
    assert inside["message"] == "inside a request" and inside["level"] == "INFO" and inside["logger"] == "moesaic.test"
    assert inside["request_id"] == "req-from-context"
    assert (inside["expert"], inside["batch_size"], inside["ids"]) == ("a", 2, ["x", "y"])
    assert str(inside["ts"]).endswith("+00:00")
    assert failed["request_id"] == "req-from-context" and "ValueError: broken" in str(failed["exc"])
    assert explicit["request_id"] == "req-explicit"
    assert outside["request_id"] is None


def test_text_format_for_people() -> None:
    buffer = io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        configure_logging("text", "INFO", stream=buffer)
        token = context.enter(context.RequestScope("req-text"))
        logging.getLogger("moesaic.test").info("hello", extra={"status": 200})
        context.leave(token)
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    line = buffer.getvalue().strip()
    assert " INFO moesaic.test [req-text] hello status=200" in line and not line.startswith("{")


async def test_actor_logs_each_batch_with_its_request_ids(caplog: pytest.LogCaptureFixture) -> None:
    actor = ExpertActor(echo_pool_spec("log-actor").expert("a").model_dump())
    await actor.start()
    with caplog.at_level(logging.INFO, logger="experts.actor.expert_actor"):  # the service's default level: no line
        await actor.generate_batch([GenerationRequest([Message("user", "hi")], request_id="req-0")])
    assert not [r for r in caplog.records if r.name == "experts.actor.expert_actor"]
    with caplog.at_level(logging.DEBUG, logger="experts.actor.expert_actor"):
        await actor.generate_batch(
            [GenerationRequest([Message("user", "hi")], request_id=rid) for rid in ("req-1", "req-2")]
        )
    [record] = [r for r in caplog.records if r.name == "experts.actor.expert_actor"]
    assert record.request_ids == ["req-1", "req-2"] and record.batch_size == 2  # type: ignore[attr-defined]
    assert record.request_id is None and record.outcome == "ok"  # type: ignore[attr-defined]  # two requests
    assert record.levelno == logging.DEBUG


async def test_a_failed_batch_is_a_warning_with_its_request_ids(caplog: pytest.LogCaptureFixture) -> None:
    spec = echo_pool_spec("log-actor-fails", fail_generate=True, error_code="rate_limited").expert("a")
    actor = ExpertActor(spec.model_dump())
    await actor.start()
    with caplog.at_level(logging.INFO, logger="experts.actor.expert_actor"):
        await actor.generate_batch([GenerationRequest([Message("user", "hi")], request_id="req-9")])
    [record] = [r for r in caplog.records if r.name == "experts.actor.expert_actor"]
    assert record.levelno == logging.WARNING and record.request_id == "req-9"  # type: ignore[attr-defined]
    assert record.outcome == "1 of 1 failed"  # type: ignore[attr-defined]


# -- end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def echo_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("logs-live"))
    await pool.start()
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def server(echo_pool: ExpertPool) -> Iterator[ServerThread]:
    with ServerThread(create_app(orchestrator=Orchestrator(echo_pool))) as running:
        yield running


def actor_lines(request_id: str, expected: int, timeout_s: float = 20.0) -> list[dict[str, object]]:
    """JSON batch lines naming ``request_id`` in the Ray workers' log files (they are written as they happen)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            json.loads(line[line.index("{") :])
            for path in logs.glob("worker-*")
            for line in path.read_text(errors="replace").splitlines()
            if request_id in line and "{" in line
        ]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.mark.ray
def test_request_id_from_header_to_access_log_and_every_expert_call(
    server: ServerThread, log_output: io.StringIO
) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    body = {
        "model": "moesaic",
        "messages": [{"role": "user", "content": "trace me"}],
        "moesaic": {"experts": ["a", "b"], "strategy": "synthesize", "shortcut": False},
    }
    with httpx.Client(base_url=server.url, timeout=30) as client:
        reply = client.post(CHAT, json=body, headers={"x-request-id": request_id})
    assert reply.status_code == 200 and reply.headers["x-request-id"] == request_id
    [access] = [line for line in lines_of(log_output) if line["logger"] == "moesaic.access"]
    assert access["request_id"] == request_id and access["status"] == 200
    assert (access["method"], access["path"], access["model"]) == ("POST", CHAT, "moesaic")
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] > 0
    assert access["key_name"] == "anonymous"  # the front door's principal when auth is off
    # experts a and b, then the aggregator (b again): three batches, each naming the request
    batches = actor_lines(request_id, expected=3)
    assert sorted(str(line["expert"]) for line in batches) == ["a", "b", "b"]
    assert all(line["request_ids"] == [request_id] and line["request_id"] == request_id for line in batches)
    assert all(line["logger"] == "experts.actor.expert_actor" and line["level"] == "DEBUG" for line in batches)
