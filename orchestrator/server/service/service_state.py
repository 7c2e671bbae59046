"""``ServiceState``: everything the gate needs per request, built once from the ``ServiceConfig``.

The app's lifespan builds it (connecting Redis, or noting why it runs on in-process fallbacks),
keeps it in ``app.state.service`` and closes it at shutdown. Nothing here is global: two apps
in one process (the tests run several) each have their own.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from orchestrator.server.service.auth import Authenticator, KeyStore, auth_enabled
from orchestrator.server.service.cache import ResponseCache
from orchestrator.server.service.journal import RequestJournal
from orchestrator.server.service.limits import RequestLimits
from orchestrator.server.service.ratelimit import RateLimiter
from orchestrator.server.service.redis_link import RedisLink, connect_redis, redact
from orchestrator.server.service.response_store import ResponseStore
from orchestrator.server.service.service_config import ServiceConfig
from orchestrator.server.service.spend import SpendTracker

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """The service's stores and gates. ``/metrics`` reads the counters of ``cache``, ``rate_limiter``, ``limits``,
    ``spend``."""

    config: ServiceConfig
    link: RedisLink
    auth: Authenticator
    limits: RequestLimits
    rate_limiter: RateLimiter
    cache: ResponseCache
    journal: RequestJournal | None
    cache_scope: str
    spend: SpendTracker
    responses: ResponseStore  # /v1/responses conversations (previous_response_id)

    @property
    def redis_status(self) -> str:
        """``connected``, ``fallback: <reason>`` or ``disabled``, as of the last Redis call."""
        return self.link.status

    @property
    def cache_enabled(self) -> bool:
        return self.config.cache.enabled

    async def budgets_on(self) -> bool:
        """Whether any caller has a daily spend budget (the defaults', or one key's own)."""
        if self.config.rate_limits.budget_usd_per_day is not None:
            return True
        return any(record.budget_usd_per_day is not None for record in await self.auth.keys.records())

    async def summary(self) -> str:
        """The start-up line: is auth on, is Redis shared or are the stores in process."""
        if self.auth.enabled:
            count = await self.auth.keys.count()
            auth = f"auth ON ({count} API key{'s' if count != 1 else ''}"
            auth += ", none yet: `moesaic keys create NAME`)" if count == 0 else ")"
        else:
            auth = "auth OFF (every caller is 'anonymous')"
        url = self.link.url
        if self.link.status == "connected":
            redis = f"Redis connected at {redact(url or '')}: cache, rate limits, journal and keys shared"
        elif self.link.status == "disabled":
            redis = "no Redis configured: in-process cache, rate limits and journal (not shared across replicas)"
        else:
            redis = f"Redis unavailable ({self.link.status}): in-process fallbacks until it answers"
        limits = self.config.limits
        return (
            f"moesaic service: {auth}; {redis}; limits: {limits.max_concurrent} concurrent, "
            f"queue {limits.max_queue}, body {limits.max_body_bytes} bytes, max_tokens {limits.max_tokens}"
        )

    async def drain(self) -> bool:
        """At shutdown: wait up to ``limits.shutdown_grace_s`` for in-flight requests; False if some remain."""
        grace = self.config.limits.shutdown_grace_s
        drained = await self.limits.drained(grace)
        if not drained:
            log.warning(
                "shutting down with %d requests still running after %g s (limits.shutdown_grace_s)",
                self.limits.in_flight,
                grace,
            )
        return drained

    async def close(self) -> None:
        await self.link.close()


async def build_service_state(config: ServiceConfig, host: str, pool_identity: str) -> ServiceState:
    """Connect Redis (raising ``RedisUnavailable`` only when ``redis.required``) and build every store.

    ``pool_identity`` (the pool's name and definition) scopes the cache: changing the pool file
    never serves answers the old pool gave.
    """
    link = await connect_redis(config.redis.resolved_url(), required=config.redis.required)
    keys = KeyStore(config.auth.keys, link, config.auth.redis_hash, config.auth.refresh_s)
    journal = None
    if config.journal.enabled:
        journal = RequestJournal(
            link,
            stream=config.journal.stream,
            maxlen=config.journal.maxlen,
            memory_max_bytes=config.journal.memory_max_bytes,
        )
    return ServiceState(
        config=config,
        link=link,
        auth=Authenticator(auth_enabled(config.auth.mode, host), keys, config.rate_limits),
        limits=RequestLimits(config.limits),
        rate_limiter=RateLimiter(link),
        cache=ResponseCache(link, ttl_s=config.cache.ttl_s, max_entries=config.cache.max_entries),
        journal=journal,
        cache_scope=hashlib.sha256(pool_identity.encode("utf-8")).hexdigest()[:16],
        spend=SpendTracker(link),
        responses=ResponseStore(link, ttl_s=config.responses.ttl_s, max_entries=config.responses.max_entries),
    )
