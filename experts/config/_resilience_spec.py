"""The ``resilience`` sections of a pool file: timeouts, retries and circuit breakers per expert.

A pool-level ``resilience`` section sets the defaults for every expert and the re-recruiting
rule; an expert's own ``resilience`` section overrides only the keys it names::

    resilience:                      # pool-wide defaults
      timeout_s: 120
      retry: {attempts: 3, base_delay_s: 0.2}
      breaker: {failures: 5, cooldown_s: 30}
      replacement_rounds: 1          # re-recruit a failed expert at most once per request
    experts:
      - name: slow-api
        resilience: {timeout_s: 300, retry: {attempts: 5}}   # over the pool's, key by key

The pool reads the merged settings with ``PoolSpec.resilience_for(name)``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySpec(_Strict):
    """Retries of transient failures (timeouts, a restarting actor, connection errors, 429 and 5xx)."""

    attempts: Annotated[int, Field(ge=1, le=10)] = Field(3, description="tries in all, the first one included")
    base_delay_s: Annotated[float, Field(ge=0.0, le=60.0)] = Field(
        0.2, description="wait before the first retry; doubled before each further one"
    )
    max_delay_s: Annotated[float, Field(ge=0.0, le=600.0)] = Field(5.0, description="the longest wait between tries")
    jitter: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="each wait is drawn from [(1 - jitter) x delay, delay], so retries do not arrive in step"
    )


class BreakerSpec(_Strict):
    """When an expert's circuit opens (no more calls, unroutable) and when it is probed again."""

    failures: Annotated[int, Field(ge=1, le=1000)] = Field(5, description="consecutive failed calls that open it")
    failure_rate: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        0.5, description="share of failed calls in the window that opens it; null: consecutive failures only"
    )
    window: Annotated[int, Field(ge=1, le=10_000)] = Field(20, description="the last calls the rate is taken over")
    min_calls: Annotated[int, Field(ge=1, le=10_000)] = Field(
        10, description="calls the window must hold before the rate counts"
    )
    cooldown_s: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        30.0, description="seconds open before one probe call is let through (half-open)"
    )

    @model_validator(mode="after")
    def _window_holds_min_calls(self) -> BreakerSpec:
        if self.min_calls > self.window:
            raise ValueError(f"min_calls ({self.min_calls}) cannot exceed window ({self.window})")
        return self


class ResilienceSpec(_Strict):
    """One expert's failure handling: how long a call may take, how it is retried, when its circuit opens."""

    timeout_s: Annotated[float, Field(gt=0.0)] | None = Field(
        300.0,
        description="limit per call attempt (queueing in the actor included); for a stream, the wait for the first "
        "piece and between pieces; for a group of requests sent together, per max_batch_size of them; null: none",
    )
    retry: RetrySpec = RetrySpec()
    breaker: BreakerSpec = BreakerSpec()


class PoolResilienceSpec(ResilienceSpec):
    """The pool-wide section: defaults for every expert, and how failed experts are replaced in a request."""

    replacement_rounds: Annotated[int, Field(ge=0, le=8)] = Field(
        1,
        description="when a recruited expert fails, ask the next best healthy one; a replacement that fails is "
        "replaced again only while rounds remain (0: never re-recruit)",
    )


def merged(pool: PoolResilienceSpec, expert: ResilienceSpec) -> ResilienceSpec:
    """The pool's defaults with the keys the expert's own section set on top (nested sections key by key)."""
    base: dict[str, Any] = pool.model_dump(exclude={"replacement_rounds"})
    for key, value in expert.model_dump(exclude_unset=True).items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return ResilienceSpec.model_validate(base)
