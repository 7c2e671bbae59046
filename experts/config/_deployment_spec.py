"""An expert's hosted deployments: one model name, several endpoints, keys or regions behind it.

A ``litellm`` expert may list ``deployments``; LiteLLM's ``Router`` then spreads its calls over the ``primary`` ones
(least busy first by default), cools down a deployment that keeps failing, and tries the ``fallback`` ones in their
order when no primary can answer, or the ``context`` ones when a prompt does not fit. The pool's retries, breaker
and replacement by the next-best expert stay above it: to the pool the expert is still one expert.

```yaml
- name: writer
  backend: litellm
  model: openai/gpt-4.1-mini                 # what a deployment calls unless it names its own model
  deployments:
    - {name: us, api_base: https://us.example/v1, api_key_env: US_KEY, rpm: 600}
    - {name: eu, api_base: https://eu.example/v1, api_key_env: EU_KEY, rpm: 600}
    - {name: backup, model: anthropic/claude-haiku-4-5, api_key_env: ANTHROPIC_API_KEY, role: fallback}
    - {name: long, model: openai/gpt-4.1, api_key_env: OPENAI_API_KEY, role: context}
  deployment_routing: {strategy: least-busy, cooldown_s: 30, allowed_fails: 2}
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ROUTING_STRATEGIES = ("least-busy", "latency-based-routing", "simple-shuffle", "usage-based-routing-v2")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostedDeployment(_Strict):
    """One endpoint of a hosted expert, as LiteLLM's ``Router`` takes it."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = Field(description="unique within the expert")
    model: str | None = Field(None, description="LiteLLM model string; default: the expert's model")
    api_base: str | None = None
    api_version: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding this deployment's key")
    rpm: Annotated[int, Field(ge=1)] | None = Field(None, description="its requests per minute (load balancing)")
    tpm: Annotated[int, Field(ge=1)] | None = Field(None, description="its tokens per minute (load balancing)")
    role: Literal["primary", "fallback", "context"] = Field(
        "primary",
        description="primary: balanced over; fallback: tried in the listed order when no primary answers; "
        "context: tried when a prompt does not fit a primary's context window",
    )


class DeploymentRouting(_Strict):
    """How LiteLLM's ``Router`` picks among the primaries and when it leaves one alone."""

    strategy: Literal["least-busy", "latency-based-routing", "simple-shuffle", "usage-based-routing-v2"] = Field(
        "least-busy", description="which primary gets a call"
    )
    cooldown_s: Annotated[float, Field(ge=0.0, le=3600.0)] = Field(
        30.0, description="seconds a failing deployment gets no calls"
    )
    allowed_fails: Annotated[int, Field(ge=0, le=1000)] = Field(
        1, description="failures a deployment may have in a minute before it cools down"
    )
