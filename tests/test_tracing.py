"""OpenTelemetry traces: a span per HTTP request (FastAPI's) and per pipeline step, and the trace carried into
expert actors.

Spans are collected with the SDK's in-memory exporter in this process: the HTTP server, the graph and an
``ExpertActor`` run in-process here, and a pool that records what it sends shows the ``traceparent`` leaving the
driver for the Ray actors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from experts._tracing import configure_from_env, span, traceparent
from experts.actor.expert_actor import ExpertActor
from experts.runtime._pool import ExpertPool
from experts.types import Completion, GenerationRequest, Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.conftest import ServerThread, echo_pool_spec

CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER = f"00-{CALLER_TRACE:032x}-00f067aa0ba902b7-01"  # a client's span, W3C trace context
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """This process's spans, in memory (one SDK provider per process: installed once, reused if present)."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


class RecordingPool(ExpertPool):
    """A real echo pool that keeps every request it sends to an actor."""

    sent: list[GenerationRequest]

    async def generate(self, name: str, request: GenerationRequest) -> Completion:
        self.sent.append(request)
        return await super().generate(name, request)

    async def stream(self, name: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        self.sent.append(request)
        async for item in super().stream(name, request):
            yield item


@pytest.fixture(scope="module")
async def traced_server(ray_session: None) -> AsyncIterator[tuple[ServerThread, RecordingPool]]:
    pool = RecordingPool(echo_pool_spec("traced"))
    pool.sent = []
    await pool.start()
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as server:
        yield server, pool
    await pool.shutdown()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


@pytest.mark.ray
def test_a_request_is_one_trace_from_the_http_edge_to_every_expert_call(
    exporter: InMemorySpanExporter, traced_server: tuple[ServerThread, RecordingPool]
) -> None:
    server, pool = traced_server
    exporter.clear()
    pool.sent.clear()
    body = {"model": "moesaic", "messages": [{"role": "user", "content": "hello"}], "moesaic": {"experts": ["a", "b"]}}
    answer = httpx.post(server.url + CHAT, json=body, headers={"traceparent": CALLER}, timeout=30)
    assert answer.status_code == 200
    spans = exporter.get_finished_spans()
    # the HTTP edge's span is FastAPI's own (its OpenTelemetry support): the caller's trace continues there
    [edge] = [s for s in spans if s.kind == trace.SpanKind.SERVER and s.attributes.get("http.route") == CHAT]
    assert edge.attributes["http.response.status_code"] == 200
    assert edge.context.trace_id == CALLER_TRACE and edge.parent is not None and edge.parent.is_remote
    steps = {name: by_name(spans, f"moesaic.{name}") for name in ("route", "ask_expert", "aggregate")}
    assert len(steps["route"]) == len(steps["aggregate"]) == 1
    assert sorted(s.attributes["moesaic.expert"] for s in steps["ask_expert"]) == ["a", "b"]
    for step in [s for group in steps.values() for s in group]:
        assert step.context.trace_id == CALLER_TRACE
    ask_ids = {f"{s.context.span_id:016x}" for s in steps["ask_expert"]}
    carried = [request.traceparent for request in pool.sent]
    assert len(carried) >= 2 and all(tp.startswith(f"00-{CALLER_TRACE:032x}-") for tp in carried)
    assert {tp.split("-")[2] for tp in carried} & ask_ids  # the expert calls carry their ask_expert span


async def test_the_actor_opens_its_span_in_the_callers_trace(exporter: InMemorySpanExporter) -> None:
    actor = ExpertActor(echo_pool_spec("traced-actor").expert("a").model_dump())
    await actor.start()
    exporter.clear()
    with span("caller") as caller:
        request = GenerationRequest([Message("user", "hi")], traceparent=traceparent())
    [completion] = await actor.generate_batch([request])
    assert isinstance(completion, Completion) and completion.error is None
    [generated] = by_name(exporter.get_finished_spans(), "moesaic.expert.generate")
    assert generated.parent is not None and generated.parent.span_id == caller.get_span_context().span_id
    assert generated.context.trace_id == caller.get_span_context().trace_id
    assert generated.attributes["moesaic.expert"] == "a" and generated.attributes["moesaic.batch_size"] == 1


def test_without_an_endpoint_nothing_is_configured(monkeypatch: pytest.MonkeyPatch, exporter: Any) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert configure_from_env("moesaic") is False
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert configure_from_env("moesaic") is False  # a provider is configured already (this module's): left alone
