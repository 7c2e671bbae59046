"""``moesaic deploy render``: a pool file as a Ray Serve config and a KubeRay ``RayService`` manifest.

The Serve config (``serve.yaml``) runs ``orchestrator.frameworks.serve_app:build`` with the pool inline, so
it needs no file on the cluster: ``serve run serve.yaml`` on a Ray cluster whose nodes have
Moesaic installed. The ``RayService`` (``kuberay/rayservice.yaml``) embeds the same config as its
``serveConfigV2`` and sizes a Ray cluster for it: a head pod (Serve's controller and proxy, no
experts) and worker groups. With ``serve.layout: experts`` the groups follow the deployments' shapes: one group per
GPU shape (its pods fit one replica of an expert with that many GPUs and those custom resources), and a CPU group
for the ingress and the CPU-only experts, each scaled between the replica bounds of the deployments it holds. With
``serve.layout: pool``, one group whose pod fits one ingress replica with all its experts (CPUs, GPUs, memory summed
from the pool), scaled between the ingress's replica bounds.

No secret is written into either file. The service config's ``redis.url`` (it may carry a password) is rendered as
``redis.url_env: MOESAIC_REDIS_URL``; the RayService's pods read that variable, the provider keys named by
``api_key_env`` and Ray's cluster token from one Kubernetes Secret (``--secret``), and ``serve.yaml``'s cluster
needs the variable set on its nodes. The RayService runs with Ray's token authentication on (``authOptions``, and
``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN`` on every Ray container): KubeRay's operator deploys ``serveConfigV2`` through
the head's dashboard (port 8265), so the dashboard listens on the pod network, and with the token its job API and
the GCS refuse anyone without it. The Ray Client port (10001) is declared only with ``--ray-client``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
import yaml

from experts.config import (
    AutoscalingSpec,
    EngineEnvironment,
    PoolFileError,
    PoolSpec,
    load_pool,
    resolve_pool_path,
)
from orchestrator.cli.options import pool_option

if TYPE_CHECKING:
    from experts.runtime import DeploymentUnit

app = typer.Typer(help="Deploy on a Ray cluster: render the Serve config and the KubeRay RayService.")

RAY_VERSION = "2.60.0"
DEFAULT_IMAGE = "moesaic:0.1.0"  # built from deploy/kuberay/Dockerfile
DEFAULT_OUT = Path("deploy")  # where the default pool's rendering is checked in
APP_NAME = "moesaic"
IMPORT_PATH = "orchestrator.frameworks.serve_app:build"
POD_HOST = "0.0.0.0"
DEFAULT_SECRET = "moesaic-api-keys"
# the head's ports on the pod network: workers join the GCS; KubeRay's operator deploys and watches serveConfigV2
# through the dashboard's REST API (both refuse requests without Ray's token); Serve's proxy ("serve", the pool's
# http.port) is added per pool. Ray Client (10001) only with --ray-client.
HEAD_PORTS = [("gcs", 6379), ("dashboard", 8265)]
CLIENT_PORT = ("client", 10001)
MIN_KUBERAY = "1.6.0"  # authOptions.secretName: the operator reads the token from our Secret
RAY_TOKEN_KEY = "auth_token"  # the Secret key KubeRay's authOptions.secretName reads (fixed by KubeRay)
REDIS_URL_ENV = "MOESAIC_REDIS_URL"  # where the render moves an inline redis.url
ENGINE_PYTHON_ENV = "MOESAIC_VLLM_PYTHON"  # where the pods find the engine environment (--engine-python)


def engine_environment(engine_python: str | None) -> EngineEnvironment:
    """The engine environment the cluster's nodes have: ``--engine-python`` (the image's Python with vLLM, set as
    ``MOESAIC_VLLM_PYTHON`` on the pods), else none (deploy/kuberay/Dockerfile's image has no vLLM): it decides
    which experts share a vLLM engine, so the rendered deployments are the ones the cluster builds."""
    if engine_python:
        return EngineEnvironment(engine_python, "--engine-python")
    return EngineEnvironment(None, "rendered without --engine-python: the image has no vLLM")


def serve_config(
    spec: PoolSpec,
    source: str,
    service: dict[str, Any] | None = None,
    host: str | None = None,
    engine_python: str | None = None,
) -> dict[str, Any]:
    """Ray Serve's config for the pool: one application, its ingress deployment set from ``spec.serve`` and (layout
    experts) each expert's deployment with its replicas or autoscaling, where an operator can change them. The
    experts' resources stay in the code's options (``experts.runtime.deployment_options``): a config that named
    ``ray_actor_options`` would replace them whole, the API-key environment included.

    ``host`` overrides the pool's ``serve.http.host`` (the KubeRay manifest listens on 0.0.0.0). ``service`` (the
    service config as read from its file) is embedded without its secrets: see ``service_without_secrets``.
    ``engine_python``: see ``engine_environment`` (experts sharing a vLLM engine are one deployment).
    """
    http = spec.serve.http
    host = host or http.host
    args: dict[str, Any] = {"pool_spec": spec.document(), "pool_source": source, "http_host": host}
    if spec.serve.layout == "experts":  # the build plans the deployments with the environment the render assumed
        args["engine_python"] = engine_python or "none"
    if service is not None:
        args["service"] = service_without_secrets(service)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": http.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": args,
                "deployments": [
                    {"name": "MoesaicIngress", **spec.serve.deployment_options()},
                    *_expert_entries(spec, engine_python),
                ],
            }
        ],
    }


def _expert_entries(spec: PoolSpec, engine_python: str | None) -> list[dict[str, Any]]:
    """The experts' deployments as the Serve config lists them (layout experts): name, scaling, calls per replica."""
    if spec.serve.layout == "pool":
        return []
    from experts.runtime import deployment_plan

    keep = ("name", "num_replicas", "autoscaling_config", "max_ongoing_requests")
    units = deployment_plan(spec, engine_environment(engine_python), frozenset())
    return [{key: value for key, value in unit.options.items() if key in keep} for unit in units]


def service_without_secrets(service: dict[str, Any]) -> dict[str, Any]:
    """The service config with its one secret-bearing field, ``redis.url``, replaced by ``redis.url_env``.

    ``redis.url: redis://:PASSWORD@HOST/DB`` becomes ``redis.url_env: MOESAIC_REDIS_URL`` (in the same place); a
    ``url_env`` of the user's own is kept. API key records hold only sha256 hashes of the keys: not secrets.
    """
    redis = service.get("redis")
    if not isinstance(redis, dict) or redis.get("url") is None:
        return service
    moved = {
        ("url_env" if key == "url" else key): (REDIS_URL_ENV if key == "url" else value) for key, value in redis.items()
    }
    return {**service, "redis": moved}


def service_env(config: dict[str, Any]) -> list[str]:
    """The environment variables the Serve config's service section reads (``redis.url_env``)."""
    return sorted({str(redis["url_env"]) for redis in _service_redis(config) if redis.get("url_env")})


def _service_redis(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``redis`` section of each application's service config (empty ones left out)."""
    sections = [((app.get("args") or {}).get("service") or {}).get("redis") for app in config.get("applications", [])]
    return [section for section in sections if isinstance(section, dict)]


def secret_keys(spec: PoolSpec, config: dict[str, Any]) -> list[str]:
    """The keys the RayService's Secret must hold: Ray's token, then every variable the pods read from it."""
    return [RAY_TOKEN_KEY, *_secret_names(spec, config)]


def ray_service(
    spec: PoolSpec,
    config: dict[str, Any],
    image: str,
    secret: str,
    ray_client: bool = False,
    engine_python: str | None = None,
) -> dict[str, Any]:
    """A KubeRay ``RayService`` (ray.io/v1) running ``config`` on a cluster sized for the pool.

    ``config`` must listen on 0.0.0.0 (``serve_config(..., host=POD_HOST)``): the Service reaches the pods. Ray's
    token authentication is on, with the token in ``secret`` (key ``auth_token``); ``ray_client`` also declares
    the head's Ray Client port. ``engine_python`` (the image's Python with vLLM) is set as ``MOESAIC_VLLM_PYTHON``
    on the pods; render ``config`` with the same.
    """
    if any(redis.get("url") is not None for redis in _service_redis(config)):
        raise ValueError("the Serve config carries redis.url inline; build it with serve_config (url_env)")
    serve = spec.serve
    env = _ray_auth_env(secret) + _secret_env(_secret_names(spec, config), secret)
    if engine_python:
        env.append({"name": ENGINE_PYTHON_ENV, "value": engine_python})
    groups = worker_groups(spec, engine_python)
    head = _container("ray-head", image, {"cpu": "2", "memory": "8Gi"}, env)
    ports = [*HEAD_PORTS, *([CLIENT_PORT] if ray_client else []), ("serve", serve.http.port)]
    head["ports"] = [{"containerPort": port, "name": name} for name, port in ports]
    cluster: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        # Ray's token authentication (KubeRay >= 1.6.0): the operator reads the token from the Secret to reach the
        # dashboard, and sets it on the containers it adds (autoscaler, wait-gcs-ready); ours set it themselves
        "authOptions": {"mode": "token", "secretName": secret},
        "headGroupSpec": {
            # the head runs Serve's controller and proxy; experts and ingress replicas go to the workers. The
            # dashboard listens on the pod network for the operator (Serve's REST API), behind the token
            "rayStartParams": {"dashboard-host": POD_HOST, "num-cpus": "0"},
            "template": {"spec": {"containers": [head]}},
        },
        "workerGroupSpecs": [
            {
                "groupName": group.name,
                "replicas": group.replicas.initial,
                "minReplicas": group.replicas.low,
                "maxReplicas": group.replicas.high,
                "rayStartParams": group.ray_start_params(),
                "template": {"spec": {"containers": [_container("ray-worker", image, group.pod, env)]}},
            }
            for group in groups
        ],
    }
    if any(group.replicas.low != group.replicas.high for group in groups):
        cluster["enableInTreeAutoscaling"] = True  # replicas the autoscaler adds need pods to land on
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": _k8s_name(f"moesaic-{spec.name}")},
        "spec": {"serveConfigV2": _dump(config), "rayClusterConfig": cluster},
    }


@dataclass(frozen=True)
class Replicas:
    """How many replicas a deployment starts with and may scale between."""

    initial: int
    low: int
    high: int

    @classmethod
    def of(cls, num_replicas: int | None, scaling: AutoscalingSpec | None) -> Replicas:
        if scaling is None:
            fixed = num_replicas or 1
            return cls(fixed, fixed, fixed)
        initial = scaling.initial_replicas if scaling.initial_replicas is not None else max(scaling.min_replicas, 1)
        return cls(initial, scaling.min_replicas, scaling.max_replicas)

    def __add__(self, other: Replicas) -> Replicas:
        return Replicas(self.initial + other.initial, self.low + other.low, self.high + other.high)


@dataclass(frozen=True)
class WorkerGroup:
    """One KubeRay worker group: its pods' resources, the Ray custom resources they declare, how many pods."""

    name: str
    pod: dict[str, str]
    replicas: Replicas
    custom: tuple[tuple[str, float], ...] = ()

    def ray_start_params(self) -> dict[str, str]:
        if not self.custom:
            return {}
        return {"resources": json.dumps(dict(self.custom)).replace('"', '\\"').join('""')}


def worker_groups(spec: PoolSpec, engine_python: str | None = None) -> list[WorkerGroup]:
    """The worker groups the pool's deployments need (see the module docstring); an engine group's personas are
    one deployment, sized once."""
    if spec.serve.layout == "pool":
        ingress = Replicas.of(spec.serve.num_replicas, spec.serve.autoscaling_config)
        return [WorkerGroup("pool", _pool_pod(spec), ingress)]
    from experts.runtime import deployment_plan

    cpu_pods = Replicas.of(spec.serve.num_replicas, spec.serve.autoscaling_config)  # one pod per ingress replica
    cpu_units = []
    shapes: dict[tuple[float, tuple[tuple[str, float], ...]], list[DeploymentUnit]] = {}
    for unit in deployment_plan(spec, engine_environment(engine_python), frozenset()):
        custom = tuple(sorted(unit.resources.custom.items()))
        if unit.resources.num_gpus or custom:
            shapes.setdefault((unit.resources.num_gpus, custom), []).append(unit)
        else:
            cpu_units.append(unit)
    # the CPU group: a pod per ingress replica, each also holding one replica of every CPU-only deployment
    cpus = spec.serve.ingress_resources.num_cpus + sum(unit.resources.num_cpus for unit in cpu_units)
    memory = max(8, math.ceil(sum(unit.resources.memory_gb or 0.0 for unit in cpu_units) * 1.25) + 4)
    unit_pods = [_replicas(unit) for unit in cpu_units]
    widest = max(unit_pods, key=lambda r: r.high, default=cpu_pods)  # the busiest CPU deployment's replicas need room
    cpu = Replicas(max(cpu_pods.initial, widest.initial), max(cpu_pods.low, 1), max(cpu_pods.high, widest.high))
    groups = [WorkerGroup("cpu", {"cpu": str(max(1, math.ceil(cpus))), "memory": f"{memory}Gi"}, cpu)]
    for (gpus, custom), units in sorted(shapes.items(), key=lambda item: (item[0][0], item[0][1])):
        widest_cpu = max(unit.resources.num_cpus for unit in units)
        widest_memory = max(unit.resources.memory_gb or 0.0 for unit in units)
        pod = {"cpu": str(max(1, math.ceil(widest_cpu))), "memory": f"{max(8, math.ceil(widest_memory * 1.25) + 4)}Gi"}
        if gpus:
            pod["nvidia.com/gpu"] = str(math.ceil(gpus))
        total = Replicas(0, 0, 0)
        for unit in units:  # one pod per replica of each deployment of this shape
            total = total + _replicas(unit)
        label = f"gpu{math.ceil(gpus)}" if gpus else "cpu"
        if custom:
            label += "-" + "-".join(name for name, _ in custom)
        groups.append(WorkerGroup(_k8s_name(label), pod, total, custom))
    return groups


def _replicas(unit: DeploymentUnit) -> Replicas:
    return Replicas.of(unit.settings.num_replicas, unit.settings.autoscaling_config)


def _pool_pod(spec: PoolSpec) -> dict[str, str]:
    """What one ingress replica and all its experts need: the worker pod's requests and limits."""
    cpus = spec.serve.ingress_resources.num_cpus + sum(expert.resources.num_cpus for expert in spec.experts)
    gpus = sum(expert.resources.num_gpus for expert in spec.experts)
    declared = sum(expert.resources.memory_gb or 0.0 for expert in spec.experts)
    memory = max(8, math.ceil(declared * 1.25) + 4)  # undeclared models still need room; keep headroom
    resources = {"cpu": str(max(1, math.ceil(cpus))), "memory": f"{memory}Gi"}
    if gpus:
        resources["nvidia.com/gpu"] = str(math.ceil(gpus))
    return resources


def _container(name: str, image: str, resources: dict[str, str], env: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"limits": dict(resources), "requests": dict(resources)},
    }
    if env:
        container["env"] = copy.deepcopy(env)  # each container its own list (no YAML alias, no shared edits)
    return container


def _secret_names(spec: PoolSpec, config: dict[str, Any]) -> list[str]:
    """The variables the pods read from the Secret: each ``api_key_env`` of the pool and the service's ``url_env``."""
    names = {str(e.options["api_key_env"]) for e in spec.experts if e.options.get("api_key_env")}
    return sorted(names | set(service_env(config)))


def _secret_env(names: list[str], secret: str) -> list[dict[str, Any]]:
    """One variable per name, read from the Secret ``secret`` (same key name)."""
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}} for name in names]


def _ray_auth_env(secret: str) -> list[dict[str, Any]]:
    """Ray's token authentication on a Ray container (Ray >= 2.52): the mode, and the token from the Secret."""
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": RAY_TOKEN_KEY}}},
    ]


def _shown_path(path: Path) -> str:
    """The pool file relative to the working directory when it lies under it (rendered files stay portable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _k8s_name(text: str) -> str:
    """A valid Kubernetes object name (RFC 1123 label): lowercase letters, digits and '-', at most 63."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the embedded Serve config) as YAML literal blocks, readable in the manifest.

    A value used twice (the pods' ``env``) is written out twice, not as a YAML anchor and alias.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def _dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=120)


@dataclass(frozen=True)
class Rendered:
    """What ``render`` wrote, and what the cluster must provide: the Secret's keys, the nodes' variables."""

    paths: list[Path]
    secret: str
    secret_keys: list[str]  # the RayService's Secret: Ray's token first, then the variables the pods read
    node_env: list[str]  # serve.yaml: variables every node of the cluster must have (the service config reads them)


def render(
    pool: str,
    out: Path,
    image: str = DEFAULT_IMAGE,
    secret: str = DEFAULT_SECRET,
    service: Path | None = None,
    ray_client: bool = False,
    engine_python: str | None = None,
) -> Rendered:
    """Write ``out/serve.yaml`` and ``out/kuberay/rayservice.yaml`` for ``pool``, no secret in either."""
    spec = load_pool(pool)
    source = _shown_path(resolve_pool_path(pool))
    service_config = None
    if service is not None:
        from orchestrator.server.service.service_config import load_service_config

        load_service_config(service)  # fail here, naming the file and field, not on the cluster
        service_config = yaml.safe_load(service.read_text(encoding="utf-8")) or {}
    config = serve_config(spec, source, service_config, engine_python=engine_python)
    # API keys on (auth auto), see README
    in_pods = serve_config(spec, source, service_config, host=POD_HOST, engine_python=engine_python)
    node_env, keys = service_env(config), secret_keys(spec, in_pods)
    header = f"# Rendered by `moesaic deploy render --pool {pool}` from {source}; edit the pool file, not this.\n"
    serve_header = header + "".join(
        f"# The service config reads {name} (redis.url_env): set it in the environment of `ray start` on every node.\n"
        for name in node_env
    )
    if engine_python:
        serve_header += (
            f"# Experts sharing a model share one vLLM engine ({ENGINE_PYTHON_ENV}={engine_python}): set it in the "
            "environment of `ray start` on every node.\n"
        )
    service_header = header + (
        f"# Needs KubeRay >= {MIN_KUBERAY} and the Secret {secret} holding the keys {', '.join(keys)}.\n"
        f"# Ray's token authentication is on ({RAY_TOKEN_KEY}: the token): the dashboard, which KubeRay's operator "
        "deploys\n# serveConfigV2 through, and the GCS refuse requests without it. See docs/cluster.md.\n"
    )
    serve_path, service_path = out / "serve.yaml", out / "kuberay" / "rayservice.yaml"
    service_path.parent.mkdir(parents=True, exist_ok=True)
    serve_path.write_text(serve_header + _dump(config), encoding="utf-8")
    manifest = ray_service(spec, in_pods, image, secret, ray_client=ray_client, engine_python=engine_python)
    service_path.write_text(service_header + _dump(manifest), encoding="utf-8")
    return Rendered([serve_path, service_path], secret, keys, node_env)


def render_files(
    pool: str, out: Path, image: str = DEFAULT_IMAGE, secret: str = DEFAULT_SECRET, service: Path | None = None
) -> list[Path]:
    """Write ``out/serve.yaml`` and ``out/kuberay/rayservice.yaml`` for ``pool``; return their paths."""
    return render(pool, out, image, secret, service).paths


def _secret_command(rendered: Rendered) -> str:
    """The ``kubectl create secret`` line naming every key (placeholders, never values)."""
    values = {RAY_TOKEN_KEY: '"$(openssl rand -hex 32)"', REDIS_URL_ENV: "'redis://:PASSWORD@HOST:6379/0'"}
    literals = " ".join(f"--from-literal={key}={values.get(key, '...')}" for key in rendered.secret_keys)
    return f"kubectl create secret generic {rendered.secret} {literals}"


@app.command("render")
def render_command(
    pool: str = pool_option(),
    out: Optional[Path] = typer.Option(
        None, "--out", help="writes OUT/serve.yaml and OUT/kuberay/rayservice.yaml (default: deploy, see --force)"
    ),
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="container image with Moesaic installed"),
    secret: str = typer.Option(
        DEFAULT_SECRET, "--secret", help="Kubernetes Secret holding Ray's token, the API keys and the Redis URL"
    ),
    service: Optional[Path] = typer.Option(None, "--service-config", help="service config (Redis, auth, limits)"),
    ray_client: bool = typer.Option(
        False, "--ray-client", help="also declare the head's Ray Client port (10001; token authentication applies)"
    ),
    force: bool = typer.Option(
        False, "--force", help="without --out: overwrite deploy/serve.yaml and deploy/kuberay/rayservice.yaml"
    ),
    engine_python: Optional[str] = typer.Option(
        None,
        "--engine-python",
        help="the image's Python with vLLM (MOESAIC_VLLM_PYTHON on the pods): experts sharing a model then share "
        "one vLLM engine, one deployment per engine",
    ),
) -> None:
    """Render the pool as a Ray Serve config and a KubeRay RayService manifest (no secret in either)."""
    from orchestrator.server.service.service_config import ServiceConfigError

    if out is None:
        out = DEFAULT_OUT
        existing = [path for path in (out / "serve.yaml", out / "kuberay" / "rayservice.yaml") if path.exists()]
        if existing and not force:
            typer.echo(
                f"error: {', '.join(map(str, existing))} already exist(s) (the checked-in rendering of the default "
                "pool); pass --out DIR to write this pool's files elsewhere, or --force to overwrite them",
                err=True,
            )
            raise typer.Exit(2)
    try:
        rendered = render(pool, out, image, secret, service, ray_client, engine_python)
    except (PoolFileError, ServiceConfigError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    serve_path, service_path = rendered.paths
    for path in rendered.paths:
        typer.echo(f"wrote {path}")
    for name in rendered.node_env:
        typer.echo(f"{serve_path}: set {name} (the Redis URL) in the environment of `ray start` on every node")
    if engine_python:
        typer.echo(
            f"{serve_path}: set {ENGINE_PYTHON_ENV}={engine_python} in the environment of `ray start` on every node"
        )
    typer.echo(f"{service_path}: needs KubeRay >= {MIN_KUBERAY} and the Secret {secret} with the keys:")
    typer.echo(f"  {_secret_command(rendered)}")
