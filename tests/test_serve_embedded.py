"""The service as ``make serve`` runs it: ``moesaic serve --pool default`` in its own process, no Redis.

One real server over the embedded SmolLM2 pool (its own Ray instance, five actors), asked through the
official ``openai`` client: a routed answer with its metadata and usage, a stream, an expert by name, the
model list, a client's mistake in OpenAI's error shape, the start-up line saying the stores are in process,
and a clean exit on SIGINT. The five personas run on one shared vLLM engine where the engine environment is there
(``make serve`` builds it; ``engine: auto``), else on ours. Slow, so it runs once per session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from experts.config._engine_choice import find_engine_environment
from tests.conftest import free_port

pytestmark = [pytest.mark.model, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent


class Served:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _start(log: Path) -> Served:
    for attempt in range(3):  # a port free when picked may be taken by Ray's own processes before the bind
        port = free_port()
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        env.pop("MOESAIC_REDIS_URL", None)
        command = [sys.executable, "-m", "orchestrator.cli", "serve", "--pool", "default"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-format", "text"]
        with open(log, "wb") as sink:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        served = Served(process, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(served.url + "/healthz", timeout=2).status_code == 200:
                    return served
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        if process.poll() is None:
            _stop(process)
            raise RuntimeError(f"moesaic serve did not become healthy in 300 s:\n{served.output()[-3000:]}")
        if "address already in use" not in served.output() or attempt == 2:
            raise RuntimeError(f"moesaic serve exited with {process.returncode}:\n{served.output()[-3000:]}")
    raise AssertionError("unreachable: the last attempt returns or raises")


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)  # uvicorn's graceful exit: drain, then the pool and Ray stop
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        raise


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = _start(tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        yield server
    finally:
        if server.process.poll() is None:
            _stop(server.process)


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_a_routed_answer_with_its_decision_usage_and_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="moesaic", messages=[{"role": "user", "content": "What is 12 * 7?"}], max_tokens=16, temperature=0
    )
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    metadata = reply.model_extra["moesaic"]
    chosen = metadata["decision"]["experts"]
    assert chosen and set(chosen) <= {"math", "coder", "writer", "generalist"}
    assert "math" in chosen  # the lexical router reads "12 * 7" as arithmetic
    calls = metadata["calls"]
    assert {call["expert"] for call in calls if call["role"] == "expert"} == set(chosen)
    prompt = sum(call["prompt_tokens"] for call in calls)
    completion = sum(call["completion_tokens"] for call in calls)
    assert reply.usage.prompt_tokens == prompt and reply.usage.completion_tokens == completion
    assert completion > 0 and metadata["cost"] == 0.0  # the embedded model is self-hosted


def test_a_stream_ends_with_the_metadata(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="moesaic",
            messages=[{"role": "user", "content": "Write one line about rain."}],
            max_tokens=12,
            stream=True,
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    final = [chunk for chunk in chunks if (chunk.model_extra or {}).get("moesaic")]
    assert text and len(final) == 1 and final[0].model_extra["moesaic"]["decision"]["experts"]


def test_one_expert_by_name_and_the_model_list(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="expert/generalist", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8
    )
    assert reply.choices[0].message.content and reply.model_extra["moesaic"]["expert"] == "generalist"
    cards = {card.id: card for card in client.models.list().data}
    assert {"moesaic", "expert/math", "expert/coder", "expert/writer", "expert/generalist"} <= set(cards)
    assert cards["expert/math"].model_extra["pricing"]["source"] == "self_hosted"
    if find_engine_environment().python is not None:  # as `make serve` runs it: one vLLM engine for the personas
        assert {cards[f"expert/{name}"].model_extra["engine"] for name in ("math", "coder", "writer")} == {"vllm"}


def test_a_clients_mistake_is_answered_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="moesaic", messages=[], max_tokens=8)
    error = caught.value
    assert 400 <= error.status_code < 500
    assert set(error.body) == {"message", "type", "param", "code"} and "messages" in error.body["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="expert/nobody", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"


def test_without_redis_the_start_up_line_says_so_and_sigint_exits_cleanly(served: Served) -> None:
    assert "no Redis configured: in-process cache, rate limits and journal" in served.output()
    if find_engine_environment().python is not None:
        assert "expert math runs on engine vllm: auto: 5 experts name this model" in served.output()
    assert "the console at http://127.0.0.1:" in served.output()  # where to point a browser
    assert _stop(served.process) == 0
    assert "Traceback" not in served.output()
