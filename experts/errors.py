"""The ways an expert call goes wrong, shared by both processes.

``BackendError`` (inside the actor): a backend or our engine could not answer; the actor turns it into a
``Completion`` with an error and a code.

As the rest of the system sees a call, ``ExpertUnavailable``: the expert was not asked at all (unknown name,
not started, its circuit breaker is open, its actor is being restarted); routing should pick someone else.
``ExpertCallFailed``: the expert was asked and did not answer; ``code`` says what kind of
failure it was (``experts.runtime._retry`` decides from it whether a retry can help and whether it
was the caller's mistake). Both name the expert in their message.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """What kind of failure an expert call had (``Completion.error_code``, ``ExpertCallFailed.code``).

    A ``StrEnum``: a code is its string wherever it travels (across the actor boundary, in JSON, in logs).
    """

    # failures the pool itself sees
    EXPERT_TIMEOUT = "expert_timeout"  # the call took longer than the expert's resilience.timeout_s
    ACTOR_DIED = "actor_died"  # the expert's Ray actor died during the call; the pool restarts it
    ACTOR_UNAVAILABLE = "actor_unavailable"  # Ray could not reach the actor for a moment
    # hosted-API failures (from the provider's exception type or HTTP status)
    RATE_LIMITED = "rate_limited"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    CONNECTION_ERROR = "connection_error"
    # the caller's mistakes: the same request would fail again anywhere
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    INVALID_MOE_ROUTING = "invalid_moe_routing"
    INVALID_RESPONSE_FORMAT = "invalid_response_format"  # a JSON schema our engine cannot enforce
    INVALID_TOOLS = "invalid_tools"  # tools whose parameters' schema is over the expert's limits, or cannot be called


def code_for_status(status: int) -> ErrorCode | None:
    """A hosted API's HTTP status as a failure code (429, 408 and 5xx are transient; other 4xx are not)."""
    if status == 429:
        return ErrorCode.RATE_LIMITED
    if status == 408:
        return ErrorCode.UPSTREAM_TIMEOUT
    if status >= 500:
        return ErrorCode.UPSTREAM_UNAVAILABLE
    return None


class ExpertUnavailable(RuntimeError):
    """The expert does not exist or is not healthy (not started, circuit open, restarting)."""


class ExpertCallFailed(RuntimeError):
    """The expert could not answer; ``code`` says when it was the request's fault or a transient failure."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class BackendError(RuntimeError):
    """A backend could not answer; the message says what to check."""
