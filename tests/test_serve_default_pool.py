"""The default pool (five SmolLM2 experts) rendered with two ingress replicas and served by Ray Serve on a local
cluster: one deployment per expert with one replica each, whatever the ingress count, and an answer through the
proxy; where the engine environment is built (``make engine-env``), the five personas share one vLLM engine and are
one deployment, ``engine-smollm2-135m-instruct``. A minute or so on two cores (the model dequantised once, cached)."""

from __future__ import annotations

import openai
import pytest

from bench.ray_cluster import LocalCluster, free_port
from experts.config import load_pool
from experts.runtime import deployment_plan

pytestmark = [pytest.mark.cluster, pytest.mark.model]


def test_the_default_pool_is_one_deployment_per_expert_behind_two_ingress_replicas() -> None:
    with LocalCluster(head_cpus=4) as cluster:  # 2 x 0.5 for the ingress, 5 x 0.25 for the experts
        pool = load_pool("default").document()
        pool["serve"] = {**(pool.get("serve") or {}), "num_replicas": 2, "http": {"port": free_port()}}
        url = cluster.serve_pool(pool, "default", 600)
        experts = ("math", "coder", "writer", "generalist", "conductor")
        units = deployment_plan(load_pool("default"))
        one_engine = len(units) == 1
        expected = ["engine-smollm2-135m-instruct"] if one_engine else [f"expert-{name}" for name in experts]
        assert [unit.name for unit in units] == expected
        assert cluster.serve_status()["moesaic"] == {
            "MoesaicIngress": {"RUNNING": 2},
            **{name: {"RUNNING": 1} for name in expected},
        }
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        answer = client.chat.completions.create(
            model="moesaic", messages=[{"role": "user", "content": "What is 12 * 7?"}], max_tokens=8
        )
        assert answer.choices[0].message.content and answer.model_extra["moesaic"]["decision"]["experts"][0] == "math"
        if one_engine:  # every persona answers from the one engine: ask each by name
            for name in experts[1:]:
                reply = client.chat.completions.create(
                    model=f"expert/{name}", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
                )
                assert reply.choices[0].message.content and reply.model_extra["moesaic"]["expert"] == name
            cards = {card.id: card for card in client.models.list().data}
            assert cards["expert/writer"].model_extra["engine"] == "vllm"
