"""The ``litellm`` backend's failures: coded from LiteLLM's exception classes and HTTP status, each call sent once.

A scripted OpenAI-compatible server on 127.0.0.1 answers each model name with one failure (429, 503, 401, a
context-length 400, a stall) and counts what it received, so the test sees both the code the pool will act on and
that neither LiteLLM nor the OpenAI SDK retried underneath the pool's own retries.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from experts.backends.litellm_backend import LiteLLMBackend
from experts.config._pool_spec import ExpertSpec
from experts.errors import ErrorCode
from experts.types import GenerationRequest, Message
from tests.conftest import ServerThread, free_port

FAILURES: dict[str, tuple[int, dict[str, Any]]] = {
    "rate-limited": (429, {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}),
    "overloaded": (503, {"message": "the model is overloaded", "type": "server_error", "code": None}),
    "broken": (500, {"message": "boom", "type": "server_error", "code": None}),
    "bad-key": (401, {"message": "invalid api key", "type": "invalid_request_error", "code": "invalid_api_key"}),
    "too-long": (
        400,
        {
            "message": "This model's maximum context length is 8 tokens. However, your messages resulted in 50 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    ),
}


def scripted_app(received: Counter[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        model = (await request.json())["model"]
        received[model] += 1
        if model == "stalls":
            await asyncio.sleep(5)
        status, error = FAILURES[model]
        return JSONResponse({"error": {**error, "param": None}}, status_code=status)

    return app


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ServerThread, Counter[str]]]:
    received: Counter[str] = Counter()
    with ServerThread(scripted_app(received)) as server:
        yield server, received


async def failure_of(api_base: str, model: str, sdk_client: bool, **options: Any) -> tuple[str | None, str]:
    """Ask one model of the scripted server through the backend; returns (error code, error text)."""
    settings: dict[str, Any] = {"api_base": api_base, **options}
    if sdk_client:
        settings["api_key_env"] = "MOESAIC_TEST_API_KEY"  # the backend's own openai client for this endpoint
    spec = ExpertSpec.model_validate(
        {"name": "scripted", "backend": "litellm", "model": f"openai/{model}", "options": settings}
    )
    backend = LiteLLMBackend(spec)
    await backend.load()
    ask = GenerationRequest([Message("user", "hello")], max_tokens=4, temperature=0.0)
    [completion] = await backend.generate([ask])
    assert completion.error is not None
    return completion.error_code, completion.error


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOESAIC_TEST_API_KEY", "sk-local-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")  # LiteLLM's own client, when the pool names no key


@pytest.mark.parametrize("sdk_client", [True, False], ids=["own-sdk-client", "litellm-client"])
@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("rate-limited", ErrorCode.RATE_LIMITED),
        ("overloaded", ErrorCode.UPSTREAM_UNAVAILABLE),
        ("broken", ErrorCode.UPSTREAM_UNAVAILABLE),
        ("too-long", ErrorCode.CONTEXT_LENGTH_EXCEEDED),
        ("bad-key", None),  # the expert's own fault: not retried, counted by its breaker
    ],
)
async def test_provider_failures_are_coded_by_class_and_sent_once(
    scripted: tuple[ServerThread, Counter[str]], model: str, code: ErrorCode | None, sdk_client: bool
) -> None:
    server, received = scripted
    before = received[model]
    found, text = await failure_of(server.url + "/v1", model, sdk_client)
    assert found == code, text
    assert received[model] - before == 1  # no retries under the pool's: LiteLLM's and the SDK's are off


async def test_a_stalled_provider_is_an_upstream_timeout(scripted: tuple[ServerThread, Counter[str]]) -> None:
    server, received = scripted
    found, text = await failure_of(server.url + "/v1", "stalls", sdk_client=False, timeout=0.5)
    assert found == ErrorCode.UPSTREAM_TIMEOUT, text
    assert received["stalls"] == 1


async def test_nobody_listening_is_a_connection_error() -> None:
    found, text = await failure_of(f"http://127.0.0.1:{free_port()}/v1", "anything", sdk_client=True)
    assert found == ErrorCode.CONNECTION_ERROR, text
