"""Which expert failures are worth retrying, and how long to wait before each retry.

A failure has a *code* (``ExpertCallFailed.code`` or ``Completion.error_code``). Transient
codes (a timeout, an actor that died and is being restarted, a refused connection, a 429 or
5xx from a hosted API) are retried with exponential backoff and jitter; a caller's mistake
(``context_length_exceeded``, ``invalid_moe_routing``) never is, since the same request
would fail the same way, and it does not count against the expert's circuit breaker either.
Anything else (a broken backend, a rejected API key) is the expert's fault: not retried,
but counted by the breaker.

Backends give the code themselves (the ``litellm`` backend from LiteLLM's exception classes and HTTP status,
``experts/backends/litellm_errors.py``); a failure without one is the expert's fault.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from experts.config import RetrySpec
from experts.errors import ErrorCode

TRANSIENT_CODES = frozenset(
    {
        ErrorCode.EXPERT_TIMEOUT,
        ErrorCode.ACTOR_DIED,
        ErrorCode.ACTOR_UNAVAILABLE,
        ErrorCode.RATE_LIMITED,
        ErrorCode.UPSTREAM_TIMEOUT,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.CONNECTION_ERROR,
    }
)
CLIENT_MISTAKE_CODES = frozenset(
    {
        ErrorCode.CONTEXT_LENGTH_EXCEEDED,
        ErrorCode.INVALID_MOE_ROUTING,
        ErrorCode.INVALID_RESPONSE_FORMAT,
        ErrorCode.INVALID_TOOLS,
    }
)


def is_transient(code: str | None) -> bool:
    """A failure a later try may not meet."""
    return code in TRANSIENT_CODES


def is_client_mistake(code: str | None) -> bool:
    """A failure the request caused: neither retried nor held against the expert."""
    return code in CLIENT_MISTAKE_CODES


@dataclass
class Backoff:
    """The waits between the tries of one call: exponential, capped, with jitter."""

    spec: RetrySpec
    rng: random.Random

    @property
    def attempts(self) -> int:
        return self.spec.attempts

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        ceiling = min(self.spec.max_delay_s, self.spec.base_delay_s * 2 ** (retry - 1))
        return ceiling * (1.0 - self.spec.jitter * self.rng.random())
