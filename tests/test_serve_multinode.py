"""Two Ray nodes on this machine, each expert a Serve deployment placed by its resources, and a node that goes away.

``bench/ray_cluster.py``'s ``LocalCluster``: a head (2 CPUs, custom resources ``head`` and one ``slot``) and a worker
node (``worker``, one ``slot``). The ingress stays on the head (``ingress_resources.custom``); expert ``spread`` has
two replicas that each need a ``slot``, so one runs on each node; expert ``far`` needs ``worker``, so it runs on the
worker node only. Under steady load the worker node is killed: every request is answered (a lost replica's calls
are tried again on the other replica) or refused cleanly (503 with Retry-After), none hangs; ``/readyz`` names
``far`` as missing meanwhile; a new worker node brings both replicas back. Two to three minutes on two cores.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from bench.ray_cluster import LocalCluster, free_port, wait_until

pytestmark = pytest.mark.cluster

NODE_IDS = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(json.dumps({n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}))
"""
REQUEST_TIMEOUT_S = 60.0  # a request still unanswered after this long counts as hung


@dataclass
class Setup:
    cluster: LocalCluster
    url: str
    worker: object


def pool(http: int) -> dict[str, object]:
    fast = {"timeout_s": 10, "retry": {"attempts": 4, "base_delay_s": 0.2}}
    echo = {"backend": "echo", "model": "echo", "resilience": fast}
    return {
        "name": "multinode",
        "roles": {"aggregator": "spread"},
        "serve": {
            "num_replicas": 1,
            "ingress_resources": {"num_cpus": 0.25, "custom": {"head": 1}},
            "http": {"port": http},
        },
        "experts": [
            {
                "name": "spread",
                **echo,
                "skills": ["math"],
                "resources": {"num_cpus": 0, "custom": {"slot": 1}},
                "serve": {"num_replicas": 2},
            },
            {"name": "far", **echo, "skills": ["writing"], "resources": {"num_cpus": 0, "custom": {"worker": 1}}},
        ],
    }


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with LocalCluster(head_cpus=2, head_resources={"head": 100, "slot": 1}) as cluster:
        worker = cluster.add_node(num_cpus=1, resources={"worker": 100, "slot": 1})
        # the proxy on the head only: on one machine the nodes' proxies would share the port, and stopping the
        # worker would cut the connections its proxy holds (in a cluster of machines clients reach a live node's)
        yield Setup(cluster, cluster.serve_pool(pool(free_port()), "multinode", head_proxy_only=True), worker)


def replicas(url: str) -> dict[str, list[dict[str, object]]]:
    view = httpx.get(url + "/v1/pool", timeout=10).json()
    return {expert["name"]: expert["replicas"] or [] for expert in view["experts"]}


def readyz(url: str) -> dict[str, object]:
    """``/readyz``'s body; {} when it did not answer in time (the probe loops ask again)."""
    try:
        return httpx.get(url + "/readyz", timeout=10).json()
    except httpx.HTTPError:
        return {}


def ask(url: str, model: str, text: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S)


def test_experts_run_on_the_nodes_their_resources_name(setup: Setup) -> None:
    import json

    nodes = json.loads(setup.cluster.python(NODE_IDS).stdout.strip().splitlines()[-1])
    worker = next(node for node, resources in nodes.items() if "worker" in resources)
    head = next(node for node, resources in nodes.items() if "head" in resources)
    placed = replicas(setup.url)
    assert sorted(str(r["node"]) for r in placed["spread"]) == sorted([head, worker])  # a slot on each node
    assert [r["node"] for r in placed["far"]] == [worker]
    assert ask(setup.url, "expert/far", "far away").json()["choices"][0]["message"]["content"] == "far away"


def test_a_node_that_goes_away_loses_no_request_and_its_replicas_come_back(setup: Setup) -> None:
    outcomes: Counter[str] = Counter()
    slowest = [0.0]
    stop = threading.Event()

    def load(worker_index: int) -> None:
        sent = 0
        while not stop.is_set():
            text = f"steady {worker_index} {sent}"
            started = time.monotonic()
            try:
                reply = ask(setup.url, "expert/spread", text)
            except httpx.TimeoutException:
                outcomes["hung"] += 1
                continue
            except httpx.TransportError as error:  # a connection lost: counted, so the assertion below says so
                outcomes[f"lost: {type(error).__name__}"] += 1
                continue
            slowest[0] = max(slowest[0], time.monotonic() - started)
            if reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == text:
                outcomes["answered"] += 1
            elif reply.status_code == 503 and reply.headers.get("retry-after"):
                outcomes["refused"] += 1
            else:
                outcomes[f"other {reply.status_code}: {reply.text[:200]}"] += 1
            sent += 1

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        answered_before = outcomes["answered"]
        setup.cluster.stop_node(setup.worker)  # the machine goes away: raylet and replicas killed at once

        def far_is_missing() -> bool:
            ready = readyz(setup.url)
            return ready.get("status") == "ready" and "far" in ready.get("missing", [])

        wait_until(far_is_missing, "/readyz naming far as missing", 90)
        refused = ask(setup.url, "expert/far", "anyone there?")
        assert refused.status_code == 503 and refused.headers["retry-after"]  # at once, not after timeouts
        time.sleep(5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 10)
    assert outcomes["answered"] > answered_before > 0, outcomes
    assert set(outcomes) <= {"answered", "refused"}, outcomes  # nothing lost, nothing hung, nothing else
    assert slowest[0] < REQUEST_TIMEOUT_S

    setup.cluster.add_node(num_cpus=1, resources={"worker": 100, "slot": 1})  # a new machine in its place

    def back() -> bool:
        try:
            placed = replicas(setup.url)
        except httpx.HTTPError:  # a slow answer while the node joins: ask again
            return False
        ready = readyz(setup.url)
        return (
            len(placed["spread"]) == 2
            and len(placed["far"]) == 1
            and ready.get("status") == "ready"
            and "missing" not in ready
        )

    wait_until(back, "both experts' replicas running again", 180)
    assert ask(setup.url, "expert/far", "back again").json()["choices"][0]["message"]["content"] == "back again"
    status = setup.cluster.serve_status()["moesaic"]
    assert status["expert-spread"] == {"RUNNING": 2} and status["expert-far"] == {"RUNNING": 1}
