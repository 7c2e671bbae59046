"""``moesaic deploy render``: a pool file as a Ray Serve config and a KubeRay ``RayService`` manifest.

The Serve config (``serve.yaml``) runs ``orchestrator.integrations.serve_app:build`` with the pool inline, so
it needs no file on the cluster: ``serve run serve.yaml`` on a Ray cluster whose nodes have
Moesaic installed. The ``RayService`` (``kuberay/rayservice.yaml``) embeds the same config as its
``serveConfigV2`` and sizes a Ray cluster for it: a head pod (Serve's controller and proxy, no
experts) and a worker group whose pod fits one ingress replica with all its experts (CPUs, GPUs,
memory summed from the pool), scaled between the ``serve`` section's replica bounds. API keys named
by ``api_key_env`` come from a Kubernetes Secret.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from experts.config.pool_spec import PoolFileError, PoolSpec, load_pool, resolve_pool_path
from orchestrator.cli.options import pool_option

app = typer.Typer(help="Deploy on a Ray cluster: render the Serve config and the KubeRay RayService.")

RAY_VERSION = "2.60.0"
DEFAULT_IMAGE = "moesaic:0.1.0"  # built from deploy/kuberay/Dockerfile
APP_NAME = "moesaic"
IMPORT_PATH = "orchestrator.integrations.serve_app:build"
POD_HOST = "0.0.0.0"
HEAD_PORTS = [("gcs", 6379), ("dashboard", 8265), ("client", 10001), ("serve", 8000)]


def serve_config(
    spec: PoolSpec, source: str, service: dict[str, Any] | None = None, host: str | None = None
) -> dict[str, Any]:
    """Ray Serve's config for the pool: one application, its ingress deployment set from ``spec.serve``.

    ``host`` overrides the pool's ``serve.http.host`` (the KubeRay manifest listens on 0.0.0.0).
    """
    http = spec.serve.http
    host = host or http.host
    args: dict[str, Any] = {"pool_spec": spec.document(), "pool_source": source, "http_host": host}
    if service is not None:
        args["service"] = service
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": http.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": args,
                "deployments": [{"name": "MoesaicIngress", **spec.serve.deployment_options()}],
            }
        ],
    }


def ray_service(spec: PoolSpec, config: dict[str, Any], image: str, secret: str) -> dict[str, Any]:
    """A KubeRay ``RayService`` (ray.io/v1) running ``config`` on a cluster sized for the pool.

    ``config`` must listen on 0.0.0.0 (``serve_config(..., host=POD_HOST)``): the Service reaches the pods.
    """
    serve = spec.serve
    scaling = serve.autoscaling_config
    if scaling is not None:
        low, high = scaling.min_replicas, scaling.max_replicas
        replicas = scaling.initial_replicas if scaling.initial_replicas is not None else max(low, 1)
    else:
        replicas = low = high = serve.num_replicas or 1
    env = _secret_env(spec, secret)
    head = _container("ray-head", image, {"cpu": "2", "memory": "8Gi"}, env)
    head["ports"] = [{"containerPort": port, "name": name} for name, port in HEAD_PORTS]
    cluster: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        "headGroupSpec": {
            # the head runs Serve's controller and proxy; experts and ingress replicas go to the workers
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": {"spec": {"containers": [head]}},
        },
        "workerGroupSpecs": [
            {
                "groupName": "pool",
                "replicas": replicas,
                "minReplicas": low,
                "maxReplicas": high,
                "rayStartParams": {},
                "template": {"spec": {"containers": [_container("ray-worker", image, _pool_pod(spec), env)]}},
            }
        ],
    }
    if scaling is not None:
        cluster["enableInTreeAutoscaling"] = True  # new ingress replicas need new worker pods
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": _k8s_name(f"moesaic-{spec.name}")},
        "spec": {"serveConfigV2": _dump(config), "rayClusterConfig": cluster},
    }


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
        container["env"] = env
    return container


def _secret_env(spec: PoolSpec, secret: str) -> list[dict[str, Any]]:
    """One variable per ``api_key_env`` in the pool, read from the Secret ``secret`` (same key name)."""
    names = sorted({str(e.options["api_key_env"]) for e in spec.experts if e.options.get("api_key_env")})
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}} for name in names]


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
    """Multi-line strings (the embedded Serve config) as YAML literal blocks, readable in the manifest."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def _dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=120)


def render_files(
    pool: str, out: Path, image: str = DEFAULT_IMAGE, secret: str = "moesaic-api-keys", service: Path | None = None
) -> list[Path]:
    """Write ``out/serve.yaml`` and ``out/kuberay/rayservice.yaml`` for ``pool``; return their paths."""
    spec = load_pool(pool)
    source = _shown_path(resolve_pool_path(pool))
    service_config = None
    if service is not None:
        from orchestrator.server.service.service_config import load_service_config

        load_service_config(service)  # fail here, naming the file and field, not on the cluster
        service_config = yaml.safe_load(service.read_text(encoding="utf-8")) or {}
    config = serve_config(spec, source, service_config)
    in_pods = serve_config(spec, source, service_config, host=POD_HOST)  # API keys on (auth auto), see README
    header = f"# Rendered by `moesaic deploy render --pool {pool}` from {source}; edit the pool file, not this.\n"
    serve_path, service_path = out / "serve.yaml", out / "kuberay" / "rayservice.yaml"
    service_path.parent.mkdir(parents=True, exist_ok=True)
    serve_path.write_text(header + _dump(config), encoding="utf-8")
    service_path.write_text(header + _dump(ray_service(spec, in_pods, image, secret)), encoding="utf-8")
    return [serve_path, service_path]


@app.command()
def render(
    pool: str = pool_option(),
    out: Path = typer.Option(Path("deploy"), "--out", help="writes OUT/serve.yaml and OUT/kuberay/rayservice.yaml"),
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="container image with Moesaic installed"),
    secret: str = typer.Option("moesaic-api-keys", "--secret", help="Kubernetes Secret holding the API keys"),
    service: Optional[Path] = typer.Option(None, "--service-config", help="service config (Redis, auth, limits)"),
) -> None:
    """Render the pool as a Ray Serve config and a KubeRay RayService manifest."""
    from orchestrator.server.service.service_config import ServiceConfigError

    try:
        paths = render_files(pool, out, image, secret, service)
    except (PoolFileError, ServiceConfigError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for path in paths:
        typer.echo(f"wrote {path}")
