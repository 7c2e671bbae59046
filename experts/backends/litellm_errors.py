"""LiteLLM's exceptions as failure codes, by their classes and HTTP status (never by parsing their messages).

LiteLLM raises OpenAI-style exception classes for every provider (``litellm.RateLimitError`` is an
``openai.RateLimitError``, ``litellm.Timeout`` an ``openai.APITimeoutError``...), each with the provider's
``status_code``. The code says whether the pool retries (``experts.runtime._retry``) and whose fault it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from experts.errors import ErrorCode, code_for_status


def error_code(error: BaseException, litellm: Any) -> ErrorCode | None:
    """The failure code of an exception from ``litellm.acompletion`` (``None``: the expert's own fault, e.g. a
    rejected key or an unknown model: not retried, counted by its breaker).

    A timeout or a refused connection is found anywhere in the exception's chain: LiteLLM reports some of them as
    an ``InternalServerError`` raised from the SDK's ``APIConnectionError``.
    """
    import openai

    if isinstance(error, litellm.ContextWindowExceededError):
        return ErrorCode.CONTEXT_LENGTH_EXCEEDED
    chain = list(_chain(error))
    if any(isinstance(cause, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)) for cause in chain):
        return ErrorCode.UPSTREAM_TIMEOUT
    if any(isinstance(cause, (openai.APIConnectionError, ConnectionError)) for cause in chain):
        return ErrorCode.CONNECTION_ERROR
    if isinstance(error, openai.APIStatusError):
        return code_for_status(error.status_code)
    if isinstance(error, litellm.APIError):  # LiteLLM's generic provider error carries the status too
        return code_for_status(int(error.status_code))
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from (or during), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
