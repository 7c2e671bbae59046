"""Shared, real fixtures: one local Ray per session, the embedded pool, uvicorn servers.

Ray takes seconds to start and the embedded experts take longer to load, so both are
session-scoped and shared by every test that needs them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# the session's Ray workers log every expert batch (DEBUG), so tests can follow a request id into the actors
os.environ.setdefault("MOESAIC_LOG_LEVEL", "DEBUG")

from experts.config._pool_spec import PoolSpec, load_pool, parse_pool  # noqa: E402
from experts.runtime._pool import ExpertPool  # noqa: E402
from orchestrator.pipeline.orchestrator import Orchestrator  # noqa: E402
from tests.browser import browser, page  # noqa: E402, F401 (the console's browser fixtures, for every module)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace="moesaic-tests", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def default_pool_spec() -> PoolSpec:
    """The default pool on our engine, whatever ``engine: auto`` picks on this machine (vLLM on a GPU or a CPU with
    native bf16): the suite's shared pool behaves the same everywhere; tests/test_vllm_engine.py runs it on vLLM."""
    document = load_pool("default").document()
    for expert in document["experts"]:
        if expert["backend"] == "local":
            expert["options"] = {**expert.get("options", {}), "engine": "native"}
    return parse_pool(document, "<the default pool on our engine>")


@pytest.fixture(scope="session")
async def embedded_pool(ray_session: None, default_pool_spec: PoolSpec) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(default_pool_spec)
    health = await pool.start()
    failed = {name: h.get("error") for name, h in health.items() if h["state"] != "ready"}
    assert not failed, f"embedded experts failed to start: {failed}"
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="session")
def orchestrator(embedded_pool: ExpertPool) -> Orchestrator:
    return Orchestrator(embedded_pool)


def echo_pool_spec(name: str, **options: Any) -> PoolSpec:
    """A two-expert pool on the echo backend (fault injection), with ``options`` on both experts."""
    return parse_pool(
        {
            "name": name,
            "roles": {"aggregator": "b"},
            "experts": [
                {
                    "name": "a",
                    "backend": "echo",
                    "model": "echo",
                    "skills": ["math"],
                    "options": options,
                    "resources": {"num_cpus": 0},
                },
                {
                    "name": "b",
                    "backend": "echo",
                    "model": "echo",
                    "skills": ["writing"],
                    "options": options,
                    "resources": {"num_cpus": 0},
                },
            ],
        },
        f"<test pool {name}>",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """Real uvicorn on 127.0.0.1 in a background thread, serving ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._prepare()

    def _prepare(self) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        for attempt in range(3):  # a port free when picked can be taken before uvicorn binds it (Ray opens ports)
            self.thread.start()
            deadline = time.monotonic() + 30
            while not self.server.started:
                if not self.thread.is_alive() and attempt < 2:
                    break
                if time.monotonic() > deadline or not self.thread.is_alive():
                    raise RuntimeError("uvicorn did not start")
                time.sleep(0.05)
            else:
                return self
            self._prepare()
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def api_server(orchestrator: Orchestrator) -> Iterator[ServerThread]:
    from orchestrator.server.api.app import create_app

    with ServerThread(create_app(orchestrator=orchestrator)) as server:
        yield server


@pytest.fixture(scope="session")
def openai_client(api_server: ServerThread) -> Any:
    import openai

    return openai.OpenAI(base_url=api_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on 127.0.0.1, without persistence, for the session."""
    import shutil
    import subprocess

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `bash deploy/ensure_redis.sh` (`make test` does it first)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


class RedisServer:
    """A private redis-server a test may stop and start again on the same port (Redis outages)."""

    def __init__(self) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `bash deploy/ensure_redis.sh` (`make test` does it first)")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Any = None

    def start(self) -> RedisServer:
        import subprocess

        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                client.close()
                return self
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded_residency_spec(budget_gb: float = 1.1) -> PoolSpec:
    """Three local experts on the embedded model (~0.5 GB each in fp32) under a budget that holds two."""
    prompts = {
        "maths": ("You are a careful mathematician.", "math"),
        "writer": ("You are a skilled writer.", "writing"),
        "helper": ("You are a knowledgeable assistant.", "general_knowledge"),
    }
    experts = [
        {
            "name": name,
            "backend": "local",
            "model": "embedded:smollm2-135m-instruct",
            "system_prompt": prompt,
            "skills": [skill],
            "generation": {"max_tokens": 8, "temperature": 0.0},
            "batching": {"max_batch_size": 16, "max_wait_ms": 10},
            "resources": {"num_cpus": 0, "torch_threads": 1},
        }
        for name, (prompt, skill) in prompts.items()
    ]
    return parse_pool(
        {
            "name": "residency-test",
            "roles": {"aggregator": "helper"},
            "aggregation": {"strategy": "synthesize", "max_tokens": 8},
            "residency": {"budget_gb": budget_gb, "max_running": 1, "latency_bound_s": 30},
            "experts": experts,
        },
        "<embedded residency pool>",
    )


@pytest.fixture(scope="session")
async def residency_pool(ray_session: None) -> AsyncIterator[Any]:
    """The embedded residency pool's ``Dispatcher``, shared by the tests (it owns the view of what is resident)."""
    from experts.runtime.dispatch._dispatcher import dispatching

    pool = ExpertPool(embedded_residency_spec())
    health = await pool.start()
    assert all(h["state"] == "ready" for h in health.values()), health
    yield dispatching(pool)
    await pool.shutdown()


# issue 27's priced echo pool, one per security module; imported last: the module uses ServerThread from here
from tests.security_setup import security_pool  # noqa: E402, F401 (issue 27's priced echo pool)
