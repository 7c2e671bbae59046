"""Which expert failures are worth retrying, and how long to wait before each retry.

A failure has a *code* (``ExpertCallFailed.code`` or ``Completion.error_code``). Transient
codes (a timeout, an actor that died and is being restarted, a refused connection, a 429 or
5xx from a hosted API) are retried with exponential backoff and jitter; a caller's mistake
(``context_length_exceeded``, ``invalid_moe_routing``) never is, since the same request
would fail the same way, and it does not count against the expert's circuit breaker either.
Anything else (a broken backend, a rejected API key) is the expert's fault: not retried,
but counted by the breaker.

Backends that report a failure as ``Completion.failed`` without a code (the ``litellm``
backend writes ``"<ExceptionType>: <message>"``) are classified by the exception's type
name, and by an HTTP status named in the message.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from experts.config.resilience_spec import RetrySpec
from experts.errors import ErrorCode
from experts.types import Completion

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
CLIENT_MISTAKE_CODES = frozenset({ErrorCode.CONTEXT_LENGTH_EXCEEDED, ErrorCode.INVALID_MOE_ROUTING})

_TYPE_CODES = {
    "RateLimitError": ErrorCode.RATE_LIMITED,
    "Timeout": ErrorCode.UPSTREAM_TIMEOUT,
    "APITimeoutError": ErrorCode.UPSTREAM_TIMEOUT,
    "TimeoutError": ErrorCode.UPSTREAM_TIMEOUT,
    "ReadTimeout": ErrorCode.UPSTREAM_TIMEOUT,
    "APIConnectionError": ErrorCode.CONNECTION_ERROR,
    "ConnectionError": ErrorCode.CONNECTION_ERROR,
    "ConnectError": ErrorCode.CONNECTION_ERROR,
    "ConnectionRefusedError": ErrorCode.CONNECTION_ERROR,
    "ConnectionResetError": ErrorCode.CONNECTION_ERROR,
    "RemoteProtocolError": ErrorCode.CONNECTION_ERROR,
    "InternalServerError": ErrorCode.UPSTREAM_UNAVAILABLE,
    "ServiceUnavailableError": ErrorCode.UPSTREAM_UNAVAILABLE,
    "BadGatewayError": ErrorCode.UPSTREAM_UNAVAILABLE,
    "MidStreamFallbackError": ErrorCode.UPSTREAM_UNAVAILABLE,
    "ContextWindowExceededError": ErrorCode.CONTEXT_LENGTH_EXCEEDED,
}
_LEADING_TYPE = re.compile(r"^\s*(?:\w+\.)*([A-Z]\w*)\s*:")
_STATUS = re.compile(r"(?:status[_ ]code|error code|http)[\s:=]*([1-5]\d\d)\b", re.IGNORECASE)


def is_transient(code: str | None) -> bool:
    """A failure a later try may not meet."""
    return code in TRANSIENT_CODES


def is_client_mistake(code: str | None) -> bool:
    """A failure the request caused: neither retried nor held against the expert."""
    return code in CLIENT_MISTAKE_CODES


def code_for_status(status: int) -> str | None:
    """A hosted API's HTTP status as a failure code (429 and 5xx are transient; other 4xx are not)."""
    if status == 429:
        return ErrorCode.RATE_LIMITED
    if status == 408:
        return ErrorCode.UPSTREAM_TIMEOUT
    if status >= 500:
        return ErrorCode.UPSTREAM_UNAVAILABLE
    return None


def code_for_message(message: str) -> str | None:
    """Classify ``"<ExceptionType>: <text>"`` by the type's name, else by an HTTP status in the text."""
    match = _LEADING_TYPE.match(message)
    if match and match.group(1) in _TYPE_CODES:
        return _TYPE_CODES[match.group(1)]
    status = _STATUS.search(message)
    return code_for_status(int(status.group(1))) if status else None


def classified(completion: Completion) -> Completion:
    """``completion`` with its failure's code filled in when the backend gave none."""
    if completion.error is None or completion.error_code is not None:
        return completion
    code = code_for_message(completion.error)
    if code is None:
        return completion
    return Completion(
        text=completion.text,
        finish_reason=completion.finish_reason,
        usage=completion.usage,
        model=completion.model,
        latency_s=completion.latency_s,
        batch_size=completion.batch_size,
        error=completion.error,
        error_code=code,
    )


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
