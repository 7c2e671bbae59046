"""The default pool (five SmolLM2 experts) rendered with two ingress replicas and served by Ray Serve on a local
cluster: one deployment per expert with one replica each, whatever the ingress count, and an answer through the
proxy. A minute or so on two cores (the experts load the embedded model, dequantised once and cached)."""

from __future__ import annotations

import openai
import pytest

from bench.ray_cluster import LocalCluster, free_port
from experts.config import load_pool

pytestmark = [pytest.mark.cluster, pytest.mark.model]


def test_the_default_pool_is_one_deployment_per_expert_behind_two_ingress_replicas() -> None:
    with LocalCluster(head_cpus=4) as cluster:  # 2 x 0.5 for the ingress, 5 x 0.25 for the experts
        pool = load_pool("default").document()
        pool["serve"] = {**(pool.get("serve") or {}), "num_replicas": 2, "http": {"port": free_port()}}
        url = cluster.serve_pool(pool, "default", 600)
        experts = ("math", "coder", "writer", "generalist", "conductor")
        assert cluster.serve_status()["moesaic"] == {
            "MoesaicIngress": {"RUNNING": 2},
            **{f"expert-{name}": {"RUNNING": 1} for name in experts},
        }
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        answer = client.chat.completions.create(
            model="moesaic", messages=[{"role": "user", "content": "What is 12 * 7?"}], max_tokens=8
        )
        assert answer.choices[0].message.content and answer.model_extra["moesaic"]["decision"]["experts"][0] == "math"
