"""Each expert scaled on its own: a burst at one slow expert scales its replicas up and back down, the others stay.

One Ray node (``bench/ray_cluster.py``'s ``LocalCluster``) serving three echo experts in Serve's ``experts`` layout,
each with short autoscaling delays: ``busy`` (half a second per request, one at a time) and ``calm`` between one and
three replicas, ``idle`` between zero and one (it starts with none: its first call is a cold start). About two
minutes on two cores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from bench.ray_cluster import LocalCluster, free_port, wait_until

pytestmark = pytest.mark.cluster

QUICK = {"upscale_delay_s": 1, "downscale_delay_s": 4, "look_back_period_s": 2, "metrics_interval_s": 0.5}


@dataclass
class Served:
    cluster: LocalCluster
    url: str


def pool(http: int) -> dict[str, object]:
    one_at_a_time = {"batching": {"max_batch_size": 1}, "resources": {"num_cpus": 0}}
    scaled = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 1, **QUICK}
    return {
        "name": "autoscaled",
        "roles": {"aggregator": "calm"},
        "serve": {"num_replicas": 1, "ingress_resources": {"num_cpus": 0.25}, "http": {"port": http}},
        "experts": [
            {
                "name": "busy",
                "backend": "echo",
                "model": "echo",
                "skills": ["math"],
                "options": {"delay_s": 0.5},
                **one_at_a_time,
                "serve": {"autoscaling_config": scaled, "max_ongoing_requests": 2},
            },
            {
                "name": "calm",
                "backend": "echo",
                "model": "echo",
                "skills": ["writing"],
                **one_at_a_time,
                "serve": {"autoscaling_config": scaled},
            },
            {
                "name": "idle",
                "backend": "echo",
                "model": "echo",
                "skills": ["code"],
                **one_at_a_time,
                "serve": {"autoscaling_config": {"min_replicas": 0, "max_replicas": 1, **QUICK}},
            },
        ],
    }


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with LocalCluster(head_cpus=2) as cluster:
        yield Served(cluster, cluster.serve_pool(pool(free_port()), "autoscaled"))


def running(served: Served) -> dict[str, int]:
    status = served.cluster.serve_status()["moesaic"]
    return {name.removeprefix("expert-"): states.get("RUNNING", 0) for name, states in status.items()}


def ask(url: str, model: str, text: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


def test_a_burst_scales_one_expert_up_and_back_down_while_the_others_stay(served: Served) -> None:
    assert running(served) == {"MoesaicIngress": 1, "busy": 1, "calm": 1, "idle": 0}
    stop = threading.Event()
    answered: list[int] = []

    def burst() -> None:
        while not stop.is_set():
            reply = ask(served.url, "expert/busy", "slowly")
            answered.append(reply.status_code)

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    seen: dict[str, int] = {}
    try:

        def scaled_up() -> bool:
            seen.update(running(served))
            return seen["busy"] >= 2

        wait_until(scaled_up, "the busy expert's replicas scaling up", 90)
        assert seen["calm"] == 1 and seen["idle"] == 0  # no load on them: at their minimum
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
    assert answered and set(answered) == {200}
    wait_until(lambda: running(served)["busy"] == 1, "the busy expert's replicas scaling back down", 120)
    assert running(served)["calm"] == 1


def test_an_expert_at_zero_replicas_answers_after_a_cold_start(served: Served) -> None:
    assert running(served)["idle"] == 0
    ready = httpx.get(served.url + "/readyz", timeout=10).json()
    assert "idle" not in ready.get("missing", [])  # routable at zero: its first call starts a replica
    started = time.monotonic()
    reply = ask(served.url, "expert/idle", "wake up")
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "wake up"
    assert time.monotonic() - started < 120
    assert running(served)["idle"] == 1
