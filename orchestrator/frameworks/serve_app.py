"""Moesaic as a Ray Serve application: each expert a deployment of its own, and the API as the ingress.

``serve run deploy/serve.yaml`` (or a config from ``moesaic deploy render``) imports ``build`` with the config's
``args``; ``build`` validates them and the pool file on the spot (errors name the file and the field), then binds:

* with ``serve.layout: experts`` (the default), one deployment per expert (``ExpertReplica``: the expert's actor as a
  Serve replica, loading its model before it takes calls) or per group of experts sharing one vLLM engine
  (``EngineGroupReplica``: the engine and its personas), each with its own replicas or autoscaling (the pool's
  ``serve.experts``, the expert's own ``serve``) and its resources (GPUs, custom resources naming a node, a
  placement group above one GPU), and ``MoesaicIngress`` holding their handles. Each ingress replica builds an
  ``ExpertPool`` over the handles: the same pipeline, guards and failover as ``moesaic serve``, while the model copies
  are the experts' replicas whatever the ingress count, and an expert's replica batches what every ingress replica
  sends it;
* with ``serve.layout: pool``, only ``MoesaicIngress``, each replica of which starts its own ``ExpertPool`` of
  actors (a replica is a whole copy of the pool).

Either way the ingress serves ``create_app(orchestrator=...)`` (routes, auth, limits, metrics, the same as
``moesaic serve``) through Serve's HTTP proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import serve

from experts import ExpertState, HealthReport, configure_tracing, is_ready
from experts.config import EngineEnvironment, PoolSpec, load_pool, parse_pool, resolve_pool_path

INGRESS_NAME = "MoesaicIngress"


class ServeAppArgs(BaseModel):
    """The ``args`` of the application in a Serve config."""

    model_config = ConfigDict(extra="forbid")

    pool: str | None = Field(None, description="pool file path on the cluster's nodes, or a name in deploy/pools")
    pool_spec: dict[str, Any] | None = Field(None, description="the pool file's content, inline (deploy render)")
    pool_source: str = Field("<serve config: pool_spec>", description="where pool_spec came from, for errors")
    service: dict[str, Any] | None = Field(None, description="service config (redis, auth, limits), inline")
    http_host: str = Field("0.0.0.0", description="the proxy's bind address: auth mode 'auto' is on unless loopback")
    engine_python: str = Field(
        "auto",
        description="the nodes' Python with vLLM, which experts sharing a model run on (one deployment per engine): "
        "'none', a path, or 'auto' (found where the app is built); deploy render writes 'none' or --engine-python",
    )

    @model_validator(mode="after")
    def _one_pool(self) -> ServeAppArgs:
        if (self.pool is None) == (self.pool_spec is None):
            raise ValueError("give exactly one of 'pool' (a file or name) or 'pool_spec' (the pool inline)")
        return self

    def engine_environment(self) -> tuple[EngineEnvironment | None, frozenset[str] | None]:
        """The engine environment and CPU flags the deployments are planned with (None, None: found here). A
        rendered value plans without CPU flags, as the render did, so both name the same deployments."""
        if self.engine_python == "auto":
            return None, None
        if self.engine_python == "none":
            return EngineEnvironment(None, "args.engine_python: none"), frozenset()
        return EngineEnvironment(self.engine_python, "args.engine_python"), frozenset()

    def load(self) -> tuple[PoolSpec, str]:
        """The validated pool, and the source its replicas name it by (an absolute path when it is a file)."""
        if self.pool is not None:
            return load_pool(self.pool), str(resolve_pool_path(self.pool).resolve())
        assert self.pool_spec is not None
        return spec_from(self.pool_spec, self.pool_source), self.pool_source


def spec_from(data: dict[str, Any], source: str) -> PoolSpec:
    """Validate a pool mapping; relative paths in it resolve beside ``source`` when that is a file."""
    spec = parse_pool(data, source)
    if not source.startswith("<"):
        spec._source_dir = Path(source).resolve().parent
    return spec


@serve.ingress()
class MoesaicIngress:
    """One replica: the pool's experts in actors, and the API over them (``__serve_build_asgi_app__``)."""

    async def __init__(
        self,
        pool_data: dict[str, Any],
        pool_source: str,
        service: dict[str, Any] | None,
        host: str,
        experts: dict[str, Any] | None = None,
    ):
        """``experts``: each expert's deployment handle (layout experts); None: this replica starts the experts."""
        from experts.runtime import ExpertPool
        from orchestrator.pipeline.orchestrator import Orchestrator

        configure_tracing("moesaic")  # a replica's spans, when OTEL_EXPORTER_OTLP_ENDPOINT is set
        spec = spec_from(pool_data, pool_source)
        self.pool = ExpertPool(spec, deployments=experts)
        # layout pool: inside a replica Ray is up already, the actors join its cluster; layout experts: the experts'
        # deployments are Serve's, this waits until each has a ready replica
        health = await self.pool.start()
        if not any(is_ready(report) for report in health.values()):
            failures = {name: report.get("error") for name, report in health.items()}
            await self.pool.shutdown()
            raise RuntimeError(f"no expert of pool {spec.name!r} started: {failures}")
        self.orchestrator = Orchestrator(self.pool)
        self.service = service
        self.host = host

    def __serve_build_asgi_app__(self) -> Any:
        from orchestrator.server.api.app import create_app
        from orchestrator.server.service.service_config import parse_service_config
        from orchestrator.server.settings import ServeSettings

        service = parse_service_config(self.service or {}, "<serve config: service>")
        settings = ServeSettings(host=self.host)  # only for auth 'auto': the pool is already running
        from orchestrator.frameworks.mcp_endpoint import McpEndpoint, mcp_available

        plugins = [McpEndpoint(self.host)] if service.mcp.enabled and mcp_available() else []
        from orchestrator.server.observability.ray_metrics import RayMetrics

        return create_app(
            settings=settings,
            orchestrator=self.orchestrator,
            service=service,
            plugins=plugins,
            metrics_mirror=RayMetrics(),  # summed across replicas by Ray's metrics agent
        )

    async def check_health(self) -> None:
        """Serve's health check of this replica: raising makes Serve replace it.

        Only for what a new replica would fix: every expert's model failed to load. An expert whose breaker is
        open (its upstream is down) or whose actor is being restarted leaves the replica healthy: a restart would
        not bring the upstream back and would throw away the loaded models.
        """
        problem = replica_problem(await self.pool.health())
        if problem is not None:
            raise RuntimeError(problem)

    async def __del__(self) -> None:
        await self.pool.shutdown()


def replica_problem(reports: dict[str, HealthReport]) -> str | None:
    """Why a replica should be replaced, from its experts' health; ``None`` while it can still answer or recover."""
    if reports and all(report.get("state") == ExpertState.FAILED for report in reports.values()):
        failures = "; ".join(f"{name}: {report.get('error')}" for name, report in reports.items())
        return f"every expert of this replica failed to load ({failures})"
    return None


def build(args: dict[str, Any]) -> Any:
    """Serve's application builder (``import_path: orchestrator.frameworks.serve_app:build``)."""
    try:
        parsed = ServeAppArgs.model_validate(args or {})
    except ValidationError as error:
        problems = "; ".join(f"args.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ValueError(f"invalid Moesaic Serve args: {problems}") from None
    spec, source = parsed.load()
    if parsed.service is not None:
        from orchestrator.server.service.service_config import parse_service_config

        parse_service_config(parsed.service, "<serve config: service>")  # fail at deploy time, naming the field
    ingress = serve.deployment(MoesaicIngress, name=INGRESS_NAME).options(**spec.serve.deployment_options())
    if spec.serve.layout == "pool":
        return ingress.bind(spec.document(), source, parsed.service, parsed.http_host)
    from experts.runtime import expert_applications

    environment, flags = parsed.engine_environment()
    experts = expert_applications(spec, environment, flags)
    return ingress.bind(spec.document(), source, parsed.service, parsed.http_host, experts)
