"""The pool file's ``serve`` section: how Ray Serve runs the API (replicas, autoscaling, the proxy).

Used by ``orchestrator/frameworks/serve_app.py`` (the Serve application) and ``moesaic deploy render`` (the
Serve config and the KubeRay ``RayService``). Each ingress replica runs the whole pipeline over
its own actors for the pool's experts, so a replica is a full copy of the pool: scaling the
ingress scales the experts with it.

```yaml
serve:
  num_replicas: 1                 # or autoscaling_config, not both
  autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 16}
  max_ongoing_requests: 64        # per replica, before the proxy queues
  ingress_resources: {num_cpus: 0.5}
  http: {host: 127.0.0.1, port: 8000}  # another address turns API keys on
```
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoscalingSpec(_Strict):
    """Ray Serve's autoscaling for the ingress (a subset of ``ray.serve.config.AutoscalingConfig``)."""

    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 1
    initial_replicas: Annotated[int, Field(ge=0)] | None = None
    target_ongoing_requests: Annotated[float, Field(gt=0)] = Field(
        16.0, description="requests in flight per replica that the autoscaler aims for"
    )
    upscale_delay_s: Annotated[float, Field(ge=0)] = 30.0
    downscale_delay_s: Annotated[float, Field(ge=0)] = 600.0

    @model_validator(mode="after")
    def _bounds_ordered(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(
                f"initial_replicas ({initial}) must lie between min_replicas and max_replicas "
                f"({self.min_replicas}..{self.max_replicas})"
            )
        return self


class IngressResources(_Strict):
    """What one ingress replica (the API and the pipeline's driver side) asks the cluster for."""

    num_cpus: Annotated[float, Field(ge=0)] = 0.5  # mostly waiting on I/O: the experts do the work
    memory_gb: Annotated[float, Field(gt=0)] | None = None


class HttpSpec(_Strict):
    """Serve's HTTP proxy: where the OpenAI-compatible API listens on each node.

    Loopback by default, like ``moesaic serve``; any other address turns API keys on (auth mode
    ``auto``). The KubeRay manifest always listens on 0.0.0.0, as pods must.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000


class ServeSpec(_Strict):
    """How the pool is served by Ray Serve (``serve run``, KubeRay)."""

    num_replicas: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="fixed number of ingress replicas (each runs the whole pool); default 1"
    )
    autoscaling_config: AutoscalingSpec | None = Field(None, description="scale the ingress on load instead")
    max_ongoing_requests: Annotated[int, Field(ge=1, le=100_000)] = Field(
        64, description="requests one replica handles at once; the proxy queues the rest"
    )
    ingress_resources: IngressResources = IngressResources()
    http: HttpSpec = HttpSpec()

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> ServeSpec:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give num_replicas or autoscaling_config, not both (autoscaling sets the count itself)")
        return self

    def deployment_options(self) -> dict[str, object]:
        """The ingress deployment's options, as ``serve.deployment(...).options`` and Serve's config take them."""
        actor: dict[str, object] = {"num_cpus": self.ingress_resources.num_cpus}
        if self.ingress_resources.memory_gb:
            actor["memory"] = int(self.ingress_resources.memory_gb * 1024**3)
        options: dict[str, object] = {"max_ongoing_requests": self.max_ongoing_requests, "ray_actor_options": actor}
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options
