"""The Ray Serve side without a cluster: the pool's ``serve`` section, ``moesaic deploy render``, ``build``.

The rendered Serve config is checked against Ray's own schema; the checked-in files
(deploy/serve.yaml, deploy/kuberay/rayservice.yaml) must equal a fresh render of the default pool.
The real deployment (``ray start``, ``serve run``, the HTTP proxy) is tests/test_serve_cluster.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from experts.config import EngineEnvironment
from experts.config._pool_spec import PoolFileError, load_pool, parse_pool
from experts.runtime import deployment_options, deployment_plan
from experts.runtime._placement import bundles_for
from orchestrator.cli.deploy import ray_service, render, render_files, serve_config
from orchestrator.frameworks.serve_app import INGRESS_NAME, build

ROOT = Path(__file__).resolve().parent.parent
PLANTED = "PLANTED-s3cret-pw"
REDIS_URL = f"redis://:{PLANTED}@redis.internal:6379/0"


def pool(**top: Any) -> dict[str, Any]:
    experts = top.pop("experts", None) or [
        {"name": "big", "backend": "local", "model": "/models/m", "resources": {"num_cpus": 2, "num_gpus": 2}},
        {
            "name": "hosted",
            "backend": "litellm",
            "model": "openai/gpt-4.1-mini",
            "options": {"api_key_env": "OPENAI_API_KEY"},
            "resources": {"num_cpus": 0.25, "memory_gb": 2},
        },
    ]
    return {"name": "Prod Pool", "experts": experts, **top}


def test_checked_in_files_are_the_default_pool_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the header names the pool file relative to the working directory
    serve_path, service_path = render_files("default", tmp_path)
    assert serve_path.read_text() == (ROOT / "deploy" / "serve.yaml").read_text(), "run: moesaic deploy render"
    assert service_path.read_text() == (ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text()


def test_rendered_serve_config_passes_rays_schema() -> None:
    spec = parse_pool(pool(serve={"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}}), "p.yaml")
    config = serve_config(spec, "p.yaml")
    schema = ServeDeploySchema.model_validate(config)
    [application] = schema.applications
    assert application.import_path == "orchestrator.frameworks.serve_app:build"
    deployment, *experts = application.deployments
    assert deployment.name == INGRESS_NAME
    assert [expert.name for expert in experts] == ["expert-big", "expert-hosted"]
    assert deployment.autoscaling_config["max_replicas"] == 3
    assert parse_pool(config["applications"][0]["args"]["pool_spec"], "inline") == spec  # the pool round-trips


def test_ray_service_sizes_the_cluster_from_the_pool() -> None:
    serve = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}, "ingress_resources": {"num_cpus": 1}}
    spec = parse_pool(pool(serve=serve), "p.yaml")
    manifest = ray_service(spec, serve_config(spec, "p.yaml", host="0.0.0.0"), "registry/moesaic:1", "keys")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert manifest["metadata"]["name"] == "moesaic-prod-pool"
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert embedded["http_options"]["host"] == "0.0.0.0"
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["enableInTreeAutoscaling"] is True
    # the experts layout: the ingress and the CPU-only expert on CPU pods, the two-GPU expert on a GPU group
    cpu, gpu = cluster["workerGroupSpecs"]
    assert cpu["groupName"] == "cpu" and (cpu["replicas"], cpu["minReplicas"], cpu["maxReplicas"]) == (1, 1, 4)
    [worker] = cpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}  # the ingress's 1 + hosted's 0.25 CPUs
    assert gpu["groupName"] == "gpu2" and (gpu["replicas"], gpu["minReplicas"], gpu["maxReplicas"]) == (1, 1, 1)
    [gpu_worker] = gpu["template"]["spec"]["containers"]
    assert gpu_worker["resources"]["limits"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"}  # one replica
    assert worker["image"] == gpu_worker["image"] == "registry/moesaic:1"
    assert worker["env"] == [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "auth_token"}}},
        {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "OPENAI_API_KEY"}}},
    ]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no replica or expert on the head
    assert {"containerPort": 8000, "name": "serve"} in head["template"]["spec"]["containers"][0]["ports"]


def test_the_pool_layout_sizes_one_group_for_a_whole_pool_per_ingress_replica() -> None:
    serve = {
        "layout": "pool",
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
        "ingress_resources": {"num_cpus": 1},
    }
    spec = parse_pool(pool(serve=serve), "p.yaml")
    manifest = ray_service(spec, serve_config(spec, "p.yaml", host="0.0.0.0"), "registry/moesaic:1", "keys")
    [group] = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert group["groupName"] == "pool" and (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 1, 4)
    [worker] = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}  # 1 + 2 + 0.25 CPUs
    assert [d["name"] for d in serve_config(spec, "p.yaml")["applications"][0]["deployments"]] == [INGRESS_NAME]


def test_experts_are_deployments_of_their_own_with_their_own_scaling() -> None:
    experts = [
        {"name": "big", "backend": "echo", "model": "echo", "resources": {"num_gpus": 2, "custom": {"gpu_node": 1}}},
        {"name": "small", "backend": "echo", "model": "echo", "serve": {"num_replicas": 3}},
        {"name": "idle", "backend": "echo", "model": "echo", "serve": {"autoscaling_config": {"min_replicas": 0}}},
    ]
    serve = {"num_replicas": 2, "experts": {"num_replicas": 1, "max_ongoing_requests": 8}}
    spec = parse_pool(pool(experts=experts, serve=serve), "p.yaml")
    config = serve_config(spec, "p.yaml")
    ServeDeploySchema.model_validate(config)
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert deployments[INGRESS_NAME]["num_replicas"] == 2
    assert deployments["expert-big"] == {"name": "expert-big", "max_ongoing_requests": 8, "num_replicas": 1}
    assert deployments["expert-small"]["num_replicas"] == 3  # its own count over the pool's
    assert deployments["expert-idle"]["autoscaling_config"]["min_replicas"] == 0  # scales to zero: a cold start
    assert "ray_actor_options" not in deployments["expert-big"]  # resources stay in the code's options (API keys)
    options = deployment_options(spec.expert("big"), spec)
    assert options["ray_actor_options"] == {"num_cpus": 0.25, "num_gpus": 2.0, "resources": {"gpu_node": 1.0}}
    assert options["placement_group_bundles"] == [{"GPU": 2.0, "CPU": 0.25}]
    groups = {
        g["groupName"]: g
        for g in ray_service(spec, config, "img", "keys")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    }
    assert groups["gpu2-gpu-node"]["rayStartParams"] == {"resources": '"{\\"gpu_node\\": 1.0}"'}
    assert (groups["cpu"]["replicas"], groups["cpu"]["maxReplicas"]) == (3, 3)  # small's 3 replicas need room


def test_the_experts_layout_refuses_what_it_cannot_run() -> None:
    residency = {"residency": {"budget_gb": 1}, "experts": [{"name": "a", "backend": "echo", "model": "echo"}]}
    with pytest.raises(ValueError, match="residency section needs the experts' actors"):
        build({"pool_spec": pool(**residency)})
    personas = [_persona("a"), _persona("b", serve={"num_replicas": 2})]
    with pytest.raises(ValueError, match=r"experts a, b share one vLLM engine .* b ask\(s\) for other serve settings"):
        deployment_plan(parse_pool(pool(experts=personas), "p.yaml"), ENGINE, frozenset())


ENGINE = EngineEnvironment("/opt/engine/bin/python", "a test's engine environment")


def _persona(name: str, **entry: Any) -> dict[str, Any]:
    """A local expert on vLLM: personas of one model with the same resources share one engine."""
    resources = {"num_cpus": 2, "memory_gb": 4}
    return {
        "name": name,
        "backend": "local",
        "model": "/models/m",
        "options": {"engine": "vllm"},
        "resources": resources,
        **entry,
    }


def test_experts_on_one_vllm_engine_are_one_deployment_sized_once() -> None:
    experts = [_persona("a"), _persona("b"), _persona("c"), {"name": "e", "backend": "echo", "model": "echo"}]
    spec = parse_pool(pool(experts=experts, serve={"experts": {"autoscaling_config": {"max_replicas": 3}}}), "p.yaml")
    units = deployment_plan(spec, ENGINE, frozenset())
    assert [(unit.name, [m.name for m in unit.members]) for unit in units] == [
        ("engine-m", ["a", "b", "c"]),
        ("expert-e", ["e"]),
    ]
    group = units[0]
    assert group.options["ray_actor_options"] == {"num_cpus": 0}  # the replica asks for nothing: its engine does
    assert group.options["placement_group_bundles"] == [{"CPU": 2.0, "memory": float(4 * 1024**3)}]
    assert group.options["max_ongoing_requests"] == 3 * 4 * 8  # each persona's calls per replica (batch 8)
    assert group.engine_options is not None and group.engine_options["num_cpus"] == 2
    assert group.engine_options["runtime_env"]["py_executable"] == "/opt/engine/bin/python"
    # rendered with the image's engine environment: the same deployments, the pods told where vLLM is
    config = serve_config(spec, "p.yaml", host="0.0.0.0", engine_python=ENGINE.python)
    ServeDeploySchema.model_validate(config)
    names = [d["name"] for d in config["applications"][0]["deployments"]]
    assert names == [INGRESS_NAME, "engine-m", "expert-e"]
    manifest = ray_service(spec, config, "img", "keys", engine_python=ENGINE.python)
    [cpu] = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    [worker] = cpu["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["cpu"] == "3"  # the ingress's 0.5, the engine's 2 once, echo's 0.25
    assert {"name": "MOESAIC_VLLM_PYTHON", "value": "/opt/engine/bin/python"} in worker["env"]
    # rendered for an image without vLLM (the default): each persona is a deployment of its own, as the cluster runs it
    plain = serve_config(spec, "p.yaml")
    assert [d["name"] for d in plain["applications"][0]["deployments"]][1:] == [
        "expert-a",
        "expert-b",
        "expert-c",
        "expert-e",
    ]


def _secret_ref(secret: str, key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _ray_containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [container for group in groups for container in group["template"]["spec"]["containers"]]


def _render_with_service(tmp_path: Path, service: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    """``moesaic deploy render`` of ``pool()`` with ``service`` as its service config, into tmp_path/out."""
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool()), encoding="utf-8")
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(service), encoding="utf-8")
    command = [sys.executable, "-m", "orchestrator.cli", "deploy", "render", "--pool", str(tmp_path / "pool.yaml")]
    command += ["--out", str(tmp_path / "out"), "--service-config", str(tmp_path / "service.yaml"), "--secret", "s"]
    done = subprocess.run(command + list(flags), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_render_without_out_refuses_to_replace_the_checked_in_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "serve.yaml").write_text("checked in\n", encoding="utf-8")
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool()), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    command = [sys.executable, "-m", "orchestrator.cli", "deploy", "render", "--pool", "pool.yaml"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "--out DIR" in refused.stderr and "--force" in refused.stderr
    assert (tmp_path / "deploy" / "serve.yaml").read_text() == "checked in\n"  # untouched
    forced = subprocess.run(command + ["--force"], capture_output=True, text=True, timeout=120, env=env)
    assert forced.returncode == 0, forced.stderr
    assert "MoesaicIngress" in (tmp_path / "deploy" / "serve.yaml").read_text()


def test_no_secret_in_any_rendered_file(tmp_path: Path) -> None:
    service = {"redis": {"url": REDIS_URL, "required": True}, "auth": {"mode": "on"}}
    done = _render_with_service(tmp_path, service)
    written = sorted(path for path in (tmp_path / "out").rglob("*") if path.is_file())
    assert [path.relative_to(tmp_path / "out").as_posix() for path in written] == [
        "kuberay/rayservice.yaml",
        "serve.yaml",
    ]
    for path in written:
        assert PLANTED not in path.read_text(encoding="utf-8"), path
    assert PLANTED not in done.stdout + done.stderr
    serve_text = (tmp_path / "out" / "serve.yaml").read_text()
    manifest = yaml.safe_load((tmp_path / "out" / "kuberay" / "rayservice.yaml").read_text())
    for config in (yaml.safe_load(serve_text), yaml.safe_load(manifest["spec"]["serveConfigV2"])):
        embedded = config["applications"][0]["args"]["service"]
        assert embedded["redis"] == {"url_env": "MOESAIC_REDIS_URL", "required": True}
        assert embedded["auth"] == {"mode": "on"}  # the rest of the config travels as it was
        build({"pool_spec": load_pool("default").document(), "service": embedded})  # still a valid service config
    for container in _ray_containers(manifest):  # head and workers read the URL from the Secret
        assert {"name": "MOESAIC_REDIS_URL", **_secret_ref("s", "MOESAIC_REDIS_URL")} in container["env"]
    # serve run: the nodes must have the variable; the file and the command say so, and name every Secret key
    assert "MOESAIC_REDIS_URL" in serve_text.splitlines()[1] and serve_text.splitlines()[1].startswith("#")
    assert "set MOESAIC_REDIS_URL" in done.stdout
    assert "--from-literal=auth_token=" in done.stdout and "--from-literal=MOESAIC_REDIS_URL=" in done.stdout
    assert "--from-literal=OPENAI_API_KEY=" in done.stdout


def test_a_url_env_of_the_users_own_is_kept(tmp_path: Path) -> None:
    _render_with_service(tmp_path, {"redis": {"url_env": "TEAM_REDIS"}})
    manifest = yaml.safe_load((tmp_path / "out" / "kuberay" / "rayservice.yaml").read_text())
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]["service"]
    assert embedded == {"redis": {"url_env": "TEAM_REDIS"}}
    for container in _ray_containers(manifest):
        assert {"name": "TEAM_REDIS", **_secret_ref("s", "TEAM_REDIS")} in container["env"]
        assert not any(variable["name"] == "MOESAIC_REDIS_URL" for variable in container["env"])


def test_ray_service_refuses_an_inline_redis_url() -> None:
    spec = parse_pool(pool(), "p.yaml")
    config = serve_config(spec, "p.yaml", host="0.0.0.0")
    config["applications"][0]["args"]["service"] = {"redis": {"url": REDIS_URL}}
    with pytest.raises(ValueError, match="redis.url inline"):
        ray_service(spec, config, "img", "keys")


@pytest.mark.parametrize("ray_client", [False, True])
def test_the_ray_cluster_answers_only_with_the_token(ray_client: bool) -> None:
    """KubeRay's operator reaches the dashboard (Serve's REST API), so it listens on the pod network: token auth on."""
    spec = parse_pool(pool(serve={"http": {"port": 9000}}), "p.yaml")
    manifest = ray_service(spec, serve_config(spec, "p.yaml", host="0.0.0.0"), "img", "keys", ray_client=ray_client)
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "keys"}  # the operator sends the token
    containers = _ray_containers(manifest)
    assert [container["name"] for container in containers] == ["ray-head", "ray-worker", "ray-worker"]  # cpu, gpu2
    for container in containers:
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in container["env"]
        assert {"name": "RAY_AUTH_TOKEN", **_secret_ref("keys", "auth_token")} in container["env"]
    ports = {port["name"]: port["containerPort"] for port in containers[0]["ports"]}
    expected = {"gcs": 6379, "dashboard": 8265, "serve": 9000} | ({"client": 10001} if ray_client else {})
    assert ports == expected
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_render_reports_the_secret_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    rendered = render("default", tmp_path, secret="prod-keys")
    assert (rendered.secret, rendered.secret_keys, rendered.node_env) == ("prod-keys", ["auth_token"], [])
    header = rendered.paths[1].read_text().splitlines()[1]
    assert header.startswith("# Needs KubeRay >= 1.6.0 and the Secret prod-keys holding the keys auth_token")


@pytest.mark.parametrize(
    ("serve", "problem"),
    [
        ({"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}, "serve: give num_replicas or autoscaling"),
        ({"autoscaling_config": {"min_replicas": 5, "max_replicas": 2}}, "serve.autoscaling_config: min_replicas (5)"),
        ({"autoscaling_config": {"max_replicas": 2, "initial_replicas": 3}}, "initial_replicas (3) must lie"),
        ({"http": {"port": 0}}, "serve.http.port: Input should be greater than or equal to 1"),
        ({"replicas": 2}, "serve.replicas: Extra inputs are not permitted"),
    ],
)
def test_bad_serve_sections_name_the_field(serve: dict[str, Any], problem: str) -> None:
    with pytest.raises(PoolFileError, match="pool.yaml: invalid pool file") as error:
        parse_pool(pool(serve=serve), "pool.yaml")
    assert problem in str(error.value)


def test_fractional_gpus_above_one_are_refused() -> None:
    experts = [{"name": "x", "backend": "local", "model": "m", "resources": {"num_gpus": 1.5}}]
    with pytest.raises(PoolFileError, match=r"experts\[0\] \(name: 'x'\).resources.num_gpus: above 1"):
        parse_pool(pool(experts=experts), "pool.yaml")


def test_placement_bundles_only_for_multi_gpu_experts() -> None:
    spec = parse_pool(pool(), "p.yaml")
    assert bundles_for(spec.expert("big")) == [{"GPU": 2.0, "CPU": 2.0}]
    assert bundles_for(spec.expert("hosted")) is None


def test_build_applies_the_serve_section() -> None:
    document = load_pool("default").document() | {"serve": {"num_replicas": 3}}
    app = build({"pool_spec": document, "engine_python": "none"})
    deployment = app._bound_deployment  # the ingress
    assert deployment.name == INGRESS_NAME
    assert deployment.num_replicas == 3
    assert deployment.ray_actor_options["num_cpus"] == 0.5
    experts = deployment.init_args[4]  # layout experts: a bound deployment per expert, one replica each
    assert sorted(experts) == ["coder", "conductor", "generalist", "math", "writer"]
    deployed = {name: route.deployment._bound_deployment for name, route in experts.items()}
    assert {d.name for d in deployed.values()} == {f"expert-{name}" for name in experts}
    assert all(d.num_replicas == 1 for d in deployed.values())
    assert all(route.persona is None for route in experts.values())
    # with an engine environment on the nodes, the five personas are one engine group: one deployment, each persona
    # reached by name in it
    experts = build({"pool_spec": document, "engine_python": "/opt/engine/bin/python"})._bound_deployment.init_args[4]
    [group] = {route.deployment._bound_deployment.name for route in experts.values()}
    assert group == "engine-smollm2-135m-instruct"
    assert {name: route.persona for name, route in experts.items()} == {name: name for name in experts}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({}, "give exactly one of 'pool'"),
        ({"pool": "default", "pool_spec": {}}, "give exactly one of 'pool'"),
        ({"pool": "default", "replicas": 2}, "args.replicas: Extra inputs are not permitted"),
    ],
)
def test_build_refuses_bad_args(args: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match="invalid Moesaic Serve args") as error:
        build(args)
    assert problem in str(error.value)


def test_build_names_the_pool_file_and_field() -> None:
    with pytest.raises(PoolFileError, match=r"<serve config: pool_spec>: invalid pool file"):
        build({"pool_spec": {"experts": [{"name": "a", "backend": "nope", "model": "m"}]}})
    with pytest.raises(ValueError, match="auth"):
        build({"pool": "default", "service": {"auth": {"mode": "sometimes"}}})


def test_render_command(tmp_path: Path) -> None:
    source = tmp_path / "pool.yaml"
    source.write_text(yaml.safe_dump(pool()), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "deploy", "render", "--pool", str(source), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "serve.yaml").exists() and (tmp_path / "kuberay" / "rayservice.yaml").exists()
    source.write_text(yaml.safe_dump(pool(serve={"num_replicas": 0})), encoding="utf-8")
    failed = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "deploy", "render", "--pool", str(source), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2 and "serve.num_replicas" in failed.stderr


@pytest.mark.ray
def test_placement_group_created_once_and_removed(ray_session: None) -> None:
    from ray.util import placement_group_table

    from experts.runtime._placement import ExpertPlacement

    spec = parse_pool(pool(), "p.yaml")
    placement = ExpertPlacement("prod")
    assert placement.actor_options(spec.expert("hosted")) == {}
    first = placement.actor_options(spec.expert("big"))["scheduling_strategy"]
    again = placement.actor_options(spec.expert("big"))["scheduling_strategy"]  # a restarted actor: same group
    assert first.placement_group == again.placement_group
    group_id = first.placement_group.id.hex()
    table = placement_group_table()
    assert table[group_id]["strategy"] == "STRICT_PACK" and table[group_id]["name"].startswith("moesaic-prod-big-")
    placement.release()
    assert placement_group_table()[group_id]["state"] == "REMOVED"


def test_a_replica_is_replaced_only_when_every_model_failed_to_load() -> None:
    from orchestrator.frameworks.serve_app import MoesaicIngress, replica_problem

    failed = {"state": "failed", "error": "out of memory"}
    assert replica_problem({"a": failed, "b": {**failed, "error": "no such file"}}) == (
        "every expert of this replica failed to load (a: out of memory; b: no such file)"
    )
    # an open breaker (upstream down), a restarting actor or one good expert: a new replica would not help
    assert replica_problem({"a": failed, "b": {"state": "ready", "breaker": "open"}}) is None
    assert replica_problem({"a": {"state": "restarting"}}) is None
    assert replica_problem({}) is None
    assert callable(MoesaicIngress.check_health)  # the hook Serve calls on the ingress
