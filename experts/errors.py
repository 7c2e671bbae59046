"""The two ways an expert call goes wrong, as the rest of the system sees them.

``ExpertUnavailable``: the expert was not asked at all (unknown name, not started, its
circuit breaker is open, its actor is being restarted); routing should pick someone else.
``ExpertCallFailed``: the expert was asked and did not answer; ``code`` says what kind of
failure it was (``experts.runtime.retry`` decides from it whether a retry can help and whether it
was the caller's mistake). Both name the expert in their message.
"""

from __future__ import annotations


class ExpertUnavailable(RuntimeError):
    """The expert does not exist or is not healthy (not started, circuit open, restarting)."""


class ExpertCallFailed(RuntimeError):
    """The expert could not answer; ``code`` says when it was the request's fault or a transient failure."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
