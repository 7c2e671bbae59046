"""``moesaic mcp`` driven by the official MCP Python client, over stdio and streamable HTTP.

Each transport runs the real command in a subprocess (its own local Ray instance) over an echo
pool written to a temporary file, so what is checked is the command a user would run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port

pytestmark = pytest.mark.cluster  # each server starts a Ray instance of its own

ECHO_POOL = {
    "name": "mcp-echo",
    "roles": {"aggregator": "b"},
    "experts": [
        {"name": "a", "backend": "echo", "model": "echo", "skills": ["math"], "resources": {"num_cpus": 0}},
        {"name": "b", "backend": "echo", "model": "echo", "skills": ["writing"], "resources": {"num_cpus": 0}},
    ],
}
QUESTION = "What is 12 times 7"


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "echo-pool.yaml"
    path.write_text(yaml.safe_dump(ECHO_POOL), encoding="utf-8")
    return path


def _server_env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


async def _exercise(session) -> None:  # type: ignore[no-untyped-def]
    """The same checks over either transport: the three tools and a tool error."""
    await session.initialize()
    listed = await session.list_tools()
    assert {tool.name for tool in listed.tools} == {"ask", "route", "experts"}
    ask_schema = next(tool for tool in listed.tools if tool.name == "ask").inputSchema
    assert ask_schema["required"] == ["question"]

    answer = await session.call_tool("ask", {"question": QUESTION, "experts": ["a", "b"], "strategy": "vote"})
    assert not answer.isError, answer.content
    body = answer.structuredContent
    assert body["answer"] == QUESTION  # the echo experts repeat the question; the vote keeps it
    assert body["moesaic"]["decision"]["experts"] == ["a", "b"]
    assert body["moesaic"]["strategy"] == "vote"
    assert body["usage"]["completion_tokens"] == 2 * len(QUESTION.split())
    assert answer.content[0].text == QUESTION

    routed = await session.call_tool("route", {"question": "Solve the equation for x", "k": 1})
    assert not routed.isError, routed.content
    decision = routed.structuredContent["decision"]
    assert decision["experts"] == ["a"]  # "equation" is a math word; a declares math
    assert "experts: a" in routed.content[0].text
    assert {score["name"] for score in decision["scores"]} == {"a", "b"}

    experts = await session.call_tool("experts", {})
    listed_experts = experts.structuredContent["experts"]
    assert [(e["name"], e["healthy"], e["roles"]) for e in listed_experts] == [
        ("a", True, []),
        ("b", True, ["aggregator"]),
    ]
    assert experts.structuredContent["pool"] == "mcp-echo"

    bad = await session.call_tool("ask", {"question": "hi", "experts": ["nobody"]})
    assert bad.isError
    assert "nobody" in bad.content[0].text
    invalid = await session.call_tool("ask", {"question": "hi", "k": 0})
    assert invalid.isError
    assert "k" in invalid.content[0].text


async def test_stdio_transport(pool_file: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator.cli", "mcp", "--pool", str(pool_file)],
        env=_server_env(),
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await _exercise(session)


def _start_http_server(pool_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``moesaic mcp --transport http`` listening; a fresh port when the first was taken meanwhile.

    The port is free when picked, but the server starts Ray (which opens ports of its own)
    before it binds, so another process can take it in between: that start is retried."""
    for attempt in range(3):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "mcp", "--pool", str(pool_file), "--transport", "http"]
            + ["--host", "127.0.0.1", "--port", str(port)],
            env=_server_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: Ray's processes go with it
        )
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
                if "address already in use" in error and attempt < 2:
                    break  # someone took the port between picking and binding: another one
                raise RuntimeError(f"moesaic mcp exited: {error}")
            try:
                httpx.get(url, timeout=1)  # any HTTP answer means uvicorn listens
                return process, url
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    _stop(process)
                    raise RuntimeError("moesaic mcp --transport http did not listen within 120 s") from None
                time.sleep(0.25)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)  # uvicorn's graceful exit, then the pool and Ray stop
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def http_server(pool_file: Path) -> Iterator[str]:
    process, url = _start_http_server(pool_file)
    try:
        yield url
    finally:
        _stop(process)


async def test_streamable_http_transport(http_server: str) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(http_server) as (read, write, _):
        async with ClientSession(read, write) as session:
            await _exercise(session)


def test_http_refuses_foreign_host_header(http_server: str) -> None:
    """A local server refuses requests whose Host is not local (DNS rebinding protection)."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    reply = httpx.post(
        http_server,
        content=json.dumps(request),
        headers={"host": "evil.example:80", "content-type": "application/json", "accept": "application/json"},
    )
    assert reply.status_code == 421


def test_bad_pool_file_names_the_field(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("experts: [{name: a, backend: nope, model: m}]\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "mcp", "--pool", str(broken)],
        env=_server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "experts[0] (name: 'a').backend" in done.stderr
