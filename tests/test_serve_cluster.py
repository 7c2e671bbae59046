"""A real local Ray cluster: ``ray start --head``, ``moesaic deploy render``, ``serve run``, the openai client.

Everything runs in subprocesses in a process group of its own, with its own temporary directory,
ports and cluster token, so the session's in-process Ray instance is untouched. The pool is served in Serve's
``experts`` layout: two ingress replicas and one deployment per expert, one replica each. The head declares
four logical GPUs, so the expert that asks for two gets a placement group (nothing uses a GPU: the
experts are echo experts). A second application, behind API keys, is served under the route prefix ``/p``:
Serve hands its replicas the prefix as ``root_path``, and the keys must hold there too. The cluster is
``bench/ray_cluster.py``'s ``LocalCluster``; teardown: Ctrl-C to ``serve run`` (it deletes the applications and
their deployments), then SIGTERM to ``ray start --block``, then SIGKILL to whatever of its group is left. About a
minute on two cores.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
import yaml

from bench.ray_cluster import LocalCluster, free_port, healthy, wait_until

pytestmark = pytest.mark.cluster
PLACEMENT_SCRIPT = """
import json, sys, ray
from ray.util import placement_group_table
ray.init(address=sys.argv[1], log_to_driver=False)
groups = [{"name": g["name"], "strategy": g["strategy"], "state": g["state"], "bundles": g["bundles"]}
          for g in placement_group_table().values()]
print(json.dumps(groups))
"""
PREFIX_KEY = "msk-" + secrets.token_urlsafe(32)


@dataclass
class Cluster:
    address: str
    http_url: str
    env: dict[str, str]
    metrics_url: str  # the head node's Ray metrics agent (--metrics-export-port)
    local: LocalCluster


def _add_prefixed_app(cluster: LocalCluster, http: int) -> None:
    """A second pool behind API keys, rendered like the first, joined to its serve.yaml under ``/p``."""
    pool = {
        "name": "serve-guarded",
        "serve": {"num_replicas": 1, "ingress_resources": {"num_cpus": 0.25}, "http": {"port": http}},
        "experts": [
            {"name": "g", "backend": "echo", "model": "echo", "skills": ["math"], "resources": {"num_cpus": 0}}
        ],
    }
    key_hash = hashlib.sha256(PREFIX_KEY.encode()).hexdigest()
    service = {"auth": {"mode": "on", "keys": [{"name": "prefix", "hash": key_hash}]}}
    (cluster.temp / "service.yaml").write_text(yaml.safe_dump(service), encoding="utf-8")
    second_path = cluster.render(pool, "guarded", "--service-config", str(cluster.temp / "service.yaml"))
    first = yaml.safe_load((cluster.temp / "out" / "serve.yaml").read_text(encoding="utf-8"))
    second = yaml.safe_load(second_path.read_text(encoding="utf-8"))
    first["applications"].append({**second["applications"][0], "name": "guarded", "route_prefix": "/p"})
    (cluster.temp / "out" / "serve.yaml").write_text(yaml.safe_dump(first), encoding="utf-8")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with LocalCluster(head_cpus=2, head_gpus=4) as local:
        http = free_port()
        pool = {
            "name": "serve-echo",
            "roles": {"aggregator": "b"},
            "serve": {"num_replicas": 2, "ingress_resources": {"num_cpus": 0.5}, "http": {"port": http}},
            "experts": [
                {"name": "a", "backend": "echo", "model": "echo", "skills": ["math"], "resources": {"num_gpus": 2}},
                {"name": "b", "backend": "echo", "model": "echo", "skills": ["writing"], "resources": {"num_cpus": 0}},
            ],
        }
        config = local.render(pool, "out")
        _add_prefixed_app(local, http)
        log = local.temp / "serve-run.log"
        serve_run = local.serve_run(config, log)
        url = f"http://127.0.0.1:{http}"
        try:
            wait_until(
                lambda: healthy(url) and healthy(url + "/p"), "the apps answering through Serve's proxy", 240, serve_run
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{log.read_text(errors='replace')[-3000:]}") from None
        yield Cluster(local.address, url, local.env, f"http://127.0.0.1:{local.metrics_port}/metrics", local)


def test_answers_through_the_serve_proxy(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=cluster.http_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    reply = client.chat.completions.with_raw_response.create(
        model="moesaic", messages=[{"role": "user", "content": "Write a poem about rain"}]
    )
    assert reply.headers["x-moesaic-experts"] == "b"
    completion = reply.parse()
    assert completion.choices[0].message.content == "Write a poem about rain"
    assert completion.model_extra["moesaic"]["decision"]["experts"] == ["b"]

    stream = client.chat.completions.create(
        model="moesaic",
        messages=[{"role": "user", "content": "Solve the equation for x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Solve the equation for x"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert {model.id for model in client.models.list()} >= {"moesaic", "expert/a", "expert/b"}


def test_multi_gpu_expert_runs_in_its_placement_group(cluster: Cluster) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PLACEMENT_SCRIPT, cluster.address],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    groups = [g for g in json.loads(done.stdout.strip().splitlines()[-1]) if g["state"] == "CREATED"]
    two_gpus = [g for g in groups if any(bundle.get("GPU") == 2.0 for bundle in g["bundles"].values())]
    assert len(two_gpus) == 1, groups  # expert a's one replica, whatever the ingress count
    assert two_gpus[0]["strategy"] == "STRICT_PACK"
    assert list(two_gpus[0]["bundles"].values()) == [{"GPU": 2.0, "CPU": 0.25}]  # the default 0.25 CPU
    health = httpx.get(cluster.http_url + "/healthz", timeout=10).json()
    assert health["experts"]["a"]["state"] == "ready"


def test_one_deployment_per_expert_whatever_the_ingress_count(cluster: Cluster) -> None:
    assert cluster.local.serve_status()["moesaic"] == {
        "MoesaicIngress": {"RUNNING": 2},
        "expert-a": {"RUNNING": 1},
        "expert-b": {"RUNNING": 1},
    }


def test_an_experts_replica_serves_every_ingress_replica(cluster: Cluster) -> None:
    """Both ingress replicas call expert b's one replica, so its count is every call, and /v1/pool lists it."""
    client = openai.OpenAI(base_url=cluster.http_url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def requests_of_b() -> int:
        view = httpx.get(cluster.http_url + "/v1/pool", timeout=10).json()
        [b] = [expert for expert in view["experts"] if expert["name"] == "b"]
        assert len(b["replicas"]) == 1 and b["replicas"][0]["state"] == "ready", b
        return int(b["replicas"][0]["requests"])

    before, sent = requests_of_b(), 16
    for i in range(sent):
        client.chat.completions.create(model="expert/b", messages=[{"role": "user", "content": f"call {i}"}])
    assert requests_of_b() - before == sent  # one replica answered them all, from both ingress replicas
    ready = httpx.get(cluster.http_url + "/readyz", timeout=10).json()
    assert ready["status"] == "ready" and "missing" not in ready


def _replicas_requests(cluster: Cluster, model: str) -> tuple[float, int]:
    """The chat requests for ``model`` the replicas counted through Ray's metrics agent: their sum, and how many
    workers counted some."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(cluster.metrics_url, timeout=10).text
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ray_moesaic_http_requests_total"
        and sample.labels.get("route") == "/v1/chat/completions"
        and sample.labels.get("model") == model
        and sample.labels.get("status") == "200"
    ]
    return sum(sample.value for sample in samples), len({sample.labels.get("WorkerId") for sample in samples})


def test_two_replicas_counts_add_up_through_rays_metrics(cluster: Cluster) -> None:
    """Serve's proxy spreads requests over both replicas; Ray's metrics agent has each one's count to sum.

    The requests name ``moesaic/skills``, a model no other test here uses, so the count starts at zero whenever the
    agent exports (it exports every few seconds)."""
    model, sent = "moesaic/skills", 12
    client = openai.OpenAI(base_url=cluster.http_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    for i in range(sent):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"poem {i}"}])
    counted: dict[str, float] = {}

    def all_counted() -> bool:
        counted["total"], counted["workers"] = _replicas_requests(cluster, model)
        return counted["total"] >= sent

    wait_until(all_counted, "Ray's metrics agent to export the replicas' counts", 90)
    assert counted["total"] == sent  # no replica's count lost or doubled
    assert counted["workers"] == 2  # both replicas served some (12 requests, a random proxy choice each)


def test_a_route_prefix_keeps_the_api_keys(cluster: Cluster) -> None:
    """Serve passes the prefix as ``root_path`` with the full path: the key checks see the routed path."""
    url = cluster.http_url + "/p"
    assert httpx.get(url + "/v1/pool", timeout=10).status_code == 401  # was 200: the middleware saw /p/v1/pool
    refused = httpx.post(url + "/v1/chat/completions", json={"model": "moesaic", "messages": []}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    client = openai.OpenAI(base_url=url + "/v1", api_key=PREFIX_KEY, max_retries=0, timeout=60)
    answer = client.chat.completions.create(model="expert/g", messages=[{"role": "user", "content": "under p"}])
    assert answer.choices[0].message.content == "under p"
    assert httpx.get(url + "/healthz", timeout=10).json()["pool"] == "serve-guarded"
