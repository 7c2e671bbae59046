"""The pool file's ``serve`` section: how Ray Serve runs the pool (the ingress, each expert, the proxy).

Used by ``orchestrator/frameworks/serve_app.py`` (the Serve application) and ``moesaic deploy render`` (the
Serve config and the KubeRay ``RayService``). With ``layout: experts`` (the default) each expert is a deployment of
its own, scaled on its own (``experts`` here for every expert, an expert's own ``serve`` entry for it), and the
ingress (the API and the pipeline) is another deployment holding handles to them: model copies are the sum of the
experts' replicas, whatever the ingress count. ``layout: pool`` is the older layout, where each ingress replica runs
the whole pool in actors of its own.

```yaml
serve:
  num_replicas: 1                 # the ingress; or autoscaling_config, not both
  autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 16}
  max_ongoing_requests: 64        # per ingress replica, before the proxy queues
  ingress_resources: {num_cpus: 0.5}
  http: {host: 127.0.0.1, port: 8000}  # another address turns API keys on
  experts:                        # each expert's deployment, unless the expert says otherwise (experts[].serve)
    num_replicas: 1               # or autoscaling_config (min_replicas: 0 allowed: a cold start on the first call)
    max_ongoing_requests: 32      # per expert replica: what its batcher may hold at once
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AutoscalingSpec(_Strict):
    """Ray Serve's autoscaling for a deployment (a subset of ``ray.serve.config.AutoscalingConfig``)."""

    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 1
    initial_replicas: Annotated[int, Field(ge=0)] | None = None
    target_ongoing_requests: Annotated[float, Field(gt=0)] = Field(
        16.0, description="requests in flight per replica that the autoscaler aims for"
    )
    upscale_delay_s: Annotated[float, Field(ge=0)] = 30.0
    downscale_delay_s: Annotated[float, Field(ge=0)] = 600.0
    look_back_period_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="seconds of load the decisions average over (Serve's default: 30)"
    )
    metrics_interval_s: Annotated[float, Field(gt=0)] | None = Field(
        None, description="how often replicas report their load (Serve's default: 10)"
    )

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


class ExpertServeSpec(_Strict):
    """How Ray Serve runs one expert's deployment: its replicas (fixed, or autoscaled on the calls in flight) and how
    many calls one replica holds at once (its batcher batches them; the rest wait in the callers' handles)."""

    num_replicas: Annotated[int, Field(ge=1, le=1024)] | None = Field(None, description="fixed replicas; default 1")
    autoscaling_config: AutoscalingSpec | None = Field(None, description="scale on the calls in flight instead")
    max_ongoing_requests: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        None, description="calls one replica holds at once; default: 4 x the expert's batching.max_batch_size"
    )

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> ExpertServeSpec:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give num_replicas or autoscaling_config, not both (autoscaling sets the count itself)")
        return self

    def over(self, defaults: ExpertServeSpec) -> ExpertServeSpec:
        """These settings where given, else ``defaults``'; a replica count given here replaces the defaults' way to
        scale (either one)."""
        given = self.model_dump(exclude_unset=True)
        base = defaults.model_dump(exclude_unset=True)
        if "num_replicas" in given or "autoscaling_config" in given:
            base.pop("num_replicas", None)
            base.pop("autoscaling_config", None)
        return ExpertServeSpec.model_validate({**base, **given})

    def scaling_options(self) -> dict[str, object]:
        """``num_replicas`` or ``autoscaling_config``, as Serve's deployment options take them."""
        if self.autoscaling_config is not None:
            return {"autoscaling_config": self.autoscaling_config.model_dump(exclude_none=True)}
        return {"num_replicas": self.num_replicas or 1}


class IngressResources(_Strict):
    """What one ingress replica (the API and the pipeline's driver side) asks the cluster for."""

    num_cpus: Annotated[float, Field(ge=0)] = 0.5  # mostly waiting on I/O: the experts do the work
    memory_gb: Annotated[float, Field(gt=0)] | None = None
    custom: dict[str, Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=dict, description="Ray custom resources an ingress replica needs (to keep it on some nodes)"
    )


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
        None, description="fixed number of ingress replicas; default 1"
    )
    autoscaling_config: AutoscalingSpec | None = Field(None, description="scale the ingress on load instead")
    max_ongoing_requests: Annotated[int, Field(ge=1, le=100_000)] = Field(
        64, description="requests one replica handles at once; the proxy queues the rest"
    )
    ingress_resources: IngressResources = IngressResources()
    http: HttpSpec = HttpSpec()
    layout: Literal["experts", "pool"] = Field(
        "experts",
        description="experts: each expert a deployment of its own, the ingress apart; pool: each ingress replica "
        "runs the whole pool in actors of its own (scaling the ingress scales every expert with it)",
    )
    experts: ExpertServeSpec = Field(
        ExpertServeSpec(), description="each expert's deployment, unless it says otherwise"
    )

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
        if self.ingress_resources.custom:
            actor["resources"] = dict(self.ingress_resources.custom)
        options: dict[str, object] = {"max_ongoing_requests": self.max_ongoing_requests, "ray_actor_options": actor}
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options
