"""One Redis connection shared by the service's stores, and what to do when Redis is not there.

Redis is optional: the cache, the rate limiter and the journal each have an in-process path
with the same semantics (not shared across replicas). ``RedisLink`` decides, per call, whether
a store should try Redis:

* no URL configured: ``status == "disabled"``, the stores stay in process;
* Redis answered the last call: ``status == "connected"``;
* a call failed (refused, timed out, reset): the link is *down*. It logs once, the stores fall
  back, and every ``retry_interval_s`` exactly one caller is allowed to try Redis again; when
  that call succeeds the link is up again and says so in the log.

Socket timeouts are short (0.5 s by default) and redis-py's own retries are off: a Redis that
hangs costs one request half a second per retry interval, never a stalled event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

T = TypeVar("T")

# Everything a dead, hung or restarted Redis raises through redis.asyncio. RedisError covers
# redis' own ConnectionError/TimeoutError/ResponseError; OSError covers the builtin ones.
REDIS_ERRORS: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError, TimeoutError)


class RedisUnavailable(RuntimeError):
    """Redis is required by the configuration but does not answer; the message says what to do."""


def redact(url: str) -> str:
    """The URL without its password, for logs and status lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _describe(error: BaseException) -> str:
    text = str(error).strip().rstrip(".") or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class RedisLink:
    """The shared client plus its health: which path the stores take now, and why."""

    def __init__(
        self,
        url: str | None,
        client: aioredis.Redis | None,
        retry_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.client = client
        self.retry_interval_s = retry_interval_s
        self._clock = clock
        self._down_reason: str | None = None
        self._retry_at = 0.0

    @property
    def status(self) -> str:
        """``connected``, ``fallback: <reason>`` or ``disabled`` (no Redis configured)."""
        if self.client is None:
            return "disabled"
        if self._down_reason is not None:
            return f"fallback: {self._down_reason}"
        return "connected"

    def available(self) -> bool:
        """Should a store try Redis now? False while down, except once per retry interval (the probe)."""
        if self.client is None:
            return False
        if self._down_reason is None:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.retry_interval_s  # this caller probes; the others keep falling back
        return True

    def mark_failed(self, error: BaseException, action: str) -> None:
        """Record a failed call: the first failure of an outage is logged, the rest only at debug level."""
        reason = f"Redis at {redact(self.url or '')} failed to {action}: {_describe(error)}"
        self._retry_at = self._clock() + self.retry_interval_s
        if self._down_reason is None:
            log.warning("%s; using in-process fallbacks, retrying every %g s", reason, self.retry_interval_s)
        else:
            log.debug("Redis still unavailable: %s", reason)
        self._down_reason = reason

    def mark_ok(self) -> None:
        """Record a successful call; ends an outage (logged once)."""
        if self._down_reason is not None:
            log.warning("Redis at %s answers again; leaving the in-process fallbacks", redact(self.url or ""))
            self._down_reason = None

    async def attempt(self, action: str, operation: Callable[[aioredis.Redis], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run ``operation`` on Redis if the link allows it now.

        Returns ``(True, result)`` when Redis answered, ``(False, None)`` when the caller must use its
        in-process path (Redis disabled, down, or the call just failed; the failure is recorded).
        """
        if not self.available():
            return False, None
        assert self.client is not None
        try:
            result = await operation(self.client)
        except REDIS_ERRORS as error:
            self.mark_failed(error, action)
            return False, None
        self.mark_ok()
        return True, result

    async def check(self) -> str:
        """Ping Redis if a probe is due (health endpoints call this without traffic); returns ``status``."""
        await self.attempt("answer PING", lambda client: client.ping())
        return self.status

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def make_client(url: str, socket_timeout_s: float = 0.5) -> aioredis.Redis:
    """A redis.asyncio client that fails fast: short socket timeouts, no client-side retries."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


async def connect_redis(
    url: str | None,
    required: bool = False,
    retry_interval_s: float = 5.0,
    socket_timeout_s: float = 0.5,
) -> RedisLink:
    """Connect to Redis at ``url`` (None: no Redis, in-process stores).

    A Redis that does not answer at start is not fatal unless ``required``: the link starts down,
    the stores fall back, and Redis is tried again every ``retry_interval_s``.
    """
    if not url:
        log.info("no Redis configured: cache, rate limits and journal are in process (not shared across replicas)")
        return RedisLink(None, None, retry_interval_s)
    try:
        client = make_client(url, socket_timeout_s)
    except ValueError as error:  # a malformed URL is a configuration mistake, never a fallback
        raise RedisUnavailable(
            f"redis url {url!r} is not valid ({error}); use redis://HOST:PORT/DB or rediss://..."
        ) from None
    link = RedisLink(url, client, retry_interval_s)
    try:
        await client.ping()
    except REDIS_ERRORS as error:
        if required:
            await client.aclose()
            raise RedisUnavailable(
                f"cannot reach Redis at {redact(url)}: {_describe(error)}. Start redis-server there or fix the URL "
                "(the service itself can run without it: redis.required: false uses in-process fallbacks)"
            ) from None
        link.mark_failed(error, "answer PING at start")
    return link
