"""``GET /metrics``: the exposition parses with Prometheus' own parser, and counters move with real requests.

The app runs under uvicorn on 127.0.0.1 over a two-expert echo pool in Ray actors; requests go
through the whole stack (middlewares, gate, graph, actors), then ``/metrics`` is read back
with ``prometheus_client``'s parser, an implementation independent of ours.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import CallRecord
from orchestrator.server.api.app import create_app
from orchestrator.server.observability.metrics import LATENCY_BUCKETS, ServiceMetrics
from tests.conftest import ServerThread, echo_pool_spec

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CHAT = "/v1/chat/completions"


def parse(text: str) -> Samples:
    """Every sample by (name, labels); the parser raises on anything that is not valid exposition text.

    An empty label value is left out, as Prometheus reads it (absent).
    """
    return {
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if v != "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- the exposition itself ----------------------------------------------------------------------
def test_histograms_are_cumulative_and_labels_escaped() -> None:
    metrics = ServiceMetrics()
    for seconds in (0.0004, 0.003, 0.003, 7.0, 500.0):  # the last is past every bound: only +Inf holds it
        metrics.observe_request('/odd"route\\', "moesaic", 200, seconds)
    samples = parse(generate_latest(metrics.registry).decode())
    route = '/odd"route\\'
    name = "moesaic_http_request_duration_seconds"
    assert value(samples, f"{name}_bucket", route=route, le="0.0005") == 1
    assert value(samples, f"{name}_bucket", route=route, le="0.005") == 3
    assert value(samples, f"{name}_bucket", route=route, le=str(float(LATENCY_BUCKETS[-1]))) == 4
    assert value(samples, f"{name}_bucket", route=route, le="+Inf") == 5
    assert value(samples, f"{name}_count", route=route) == 5
    assert value(samples, f"{name}_sum", route=route) == pytest.approx(507.0064)
    assert value(samples, "moesaic_http_requests_total", route=route, model="moesaic", status="200") == 5


def test_calls_count_tokens_cost_and_failures() -> None:
    metrics = ServiceMetrics()
    metrics.observe_calls(
        "moesaic",
        [
            CallRecord("a", "expert", 7, 3, 0.25, 0.01),
            CallRecord("b", "aggregator", 11, 5, 0.5, 0.02),
            CallRecord.failure("a", "expert", "timed out", 1.0),
        ],
    )
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "moesaic_tokens_total", model="moesaic", expert="a", role="expert", kind="prompt") == 7
    assert (
        value(samples, "moesaic_tokens_total", model="moesaic", expert="b", role="aggregator", kind="completion") == 5
    )
    assert value(samples, "moesaic_cost_total", model="moesaic", expert="b", role="aggregator") == 0.5
    assert value(samples, "moesaic_model_calls_total", model="moesaic", expert="a", role="expert", outcome="ok") == 1
    assert value(samples, "moesaic_model_calls_total", model="moesaic", expert="a", role="expert", outcome="error") == 1


# -- live: counters move with real requests -------------------------------------------------------
@pytest.fixture(scope="module")
async def echo_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("metrics-live", delay_s=0.0))
    await pool.start()
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def server(echo_pool: ExpertPool) -> Iterator[ServerThread]:
    with ServerThread(create_app(orchestrator=Orchestrator(echo_pool))) as running:
        yield running


def ask(text: str, model: str = "moesaic", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16, **extra}


@pytest.mark.ray
def test_counters_move_with_requests(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        before = parse(client.get("/metrics").text)
        both = {"moesaic": {"experts": ["a", "b"], "strategy": "synthesize", "shortcut": False}}
        replies = [client.post(CHAT, json=ask("one two three", **both)) for _ in range(3)]
        replies.append(client.post(CHAT, json=ask("four five", "expert/a")))
        streaming = ask("six seven", stream=True, stream_options={"include_usage": True}, **both)
        with client.stream("POST", CHAT, json=streaming) as streamed:
            events = [line.removeprefix("data: ") for line in streamed.iter_lines() if line.startswith("data: ")]
        assert streamed.status_code == 200 and events[-1] == "[DONE]"
        missing = client.post(CHAT, json=ask("x", "no-such-model"))
        deterministic = ask("same question", temperature=0, moesaic={"experts": ["a"]})
        cached = [client.post(CHAT, json=deterministic) for _ in range(2)]  # the second is a cache hit
        after_text = client.get("/metrics")
    assert [reply.status_code for reply in replies] == [200] * 4 and missing.status_code == 404
    assert [reply.headers.get("x-moesaic-cache") for reply in cached] == ["miss", "hit"]
    assert after_text.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = parse(after_text.text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("moesaic_http_requests_total", route=CHAT, model="moesaic", status="200") == 6  # 3, streamed, cached
    assert moved("moesaic_http_requests_total", route=CHAT, model="expert/a", status="200") == 1
    assert moved("moesaic_http_requests_total", route=CHAT, model="other", status="404") == 1  # bounded label
    assert moved("moesaic_http_requests_total", route="/metrics", status="200") == 1  # no model: no label
    assert moved("moesaic_http_request_duration_seconds_count", route=CHAT) == 8
    # the pipeline's steps: five pipelines ran (three, the streamed one, the cache miss; the hit ran none)
    for step, expert in (("understand", ""), ("recruit", ""), ("aggregate", ""), ("total", ""), ("expert", "a")):
        labels = {"step": step, **({"expert": expert} if expert else {})}
        assert moved("moesaic_pipeline_step_duration_seconds_count", **labels) == 5, labels
    assert moved("moesaic_pipeline_step_duration_seconds_count", step="expert", expert="b") == 4
    # every call: two experts and the aggregator per forced pair, expert a alone for the miss, and the direct call
    assert moved("moesaic_model_calls_total", model="moesaic", expert="a", role="expert", outcome="ok") == 5
    assert moved("moesaic_model_calls_total", model="moesaic", expert="b", role="aggregator", outcome="ok") == 4
    assert moved("moesaic_model_calls_total", model="expert/a", expert="a", role="direct", outcome="ok") == 1
    usage = [reply.json()["usage"] for reply in (*replies, cached[0])] + [json.loads(events[-2])["usage"]]
    billed = sum(
        moved("moesaic_tokens_total", model=model, expert=expert, role=role, kind="completion")
        for model, expert, role in (
            ("moesaic", "a", "expert"),
            ("moesaic", "b", "expert"),
            ("moesaic", "b", "aggregator"),
            ("expert/a", "a", "direct"),
        )
    )
    assert billed == sum(u["completion_tokens"] for u in usage)
    # the pool's series and the front door's are in the same scrape
    assert value(after, "moesaic_expert_up", expert="a") == 1
    assert value(after, "moesaic_expert_breaker_state", expert="a", state="closed") == 1
    assert value(after, "moesaic_expert_breaker_state", expert="a", state="open") == 0
    assert ("moesaic_expert_restarts_total", frozenset({("expert", "a")})) in after
    assert moved("moesaic_cache_requests_total", result="hit") == 1
    assert moved("moesaic_cache_stores_total") == 1 and moved("moesaic_cache_requests_total", result="miss") == 1
    assert ("moesaic_limits_in_flight", frozenset()) in after
    assert ("moesaic_redis_up", frozenset()) in after


@pytest.mark.ray
def test_openmetrics_when_the_scraper_asks_for_it(server: ServerThread) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    accept = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    reply = httpx.get(server.url + "/metrics", headers={"accept": accept}, timeout=30)
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.text.endswith("# EOF\n")
    families = {family.name: family.type for family in openmetrics_families(reply.text)}
    assert families["moesaic_http_requests"] == "counter" and families["moesaic_expert_up"] == "gauge"
    assert families["moesaic_http_request_duration_seconds"] == "histogram"


@pytest.mark.ray
def test_client_request_id_is_echoed_and_a_bad_one_replaced(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        kept = client.get("/v1/models", headers={"x-request-id": "trace-42.a:b"})
        replaced = client.get("/v1/models", headers={"x-request-id": 'has spaces and "quotes"'})
        fresh = client.post(CHAT, content=b"not json", headers={"content-type": "application/json"})
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    for response in (replaced, fresh):
        rid = response.headers["x-request-id"]
        assert rid.startswith("req-") and len(rid) == 4 + 32 and int(rid[4:], 16) >= 0
    assert fresh.status_code == 400 and fresh.json()["error"]["code"] == "invalid_json"
