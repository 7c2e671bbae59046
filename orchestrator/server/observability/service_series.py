"""The front door's series, read at scrape time from ``app.state.service``.

The service state (Redis link, response cache, rate limiter, spend, concurrency limits) keeps its
own plain integer counters; this module only reads them. Every attribute is read with a
default, so the series are there (at zero) even when a part is switched off or absent.
"""

from __future__ import annotations

from typing import Any

from orchestrator.server.observability.exposition import Snapshot

REDIS_STATES = ("connected", "fallback", "disabled")


def write_service(out: Snapshot, service: Any) -> None:
    """Append cache, rate-limit, budget, limits and Redis series for a ``ServiceState`` (or None)."""
    cache = getattr(service, "cache", None)
    out.family("moesaic_cache_requests_total", "counter", "response cache lookups, by result (hit, miss, bypassed)")
    for result, attribute in (("hit", "hits"), ("miss", "misses"), ("bypassed", "bypassed")):
        out.sample("moesaic_cache_requests_total", {"result": result}, _count(cache, attribute))
    out.family("moesaic_cache_stores_total", "counter", "responses stored in the cache")
    out.sample("moesaic_cache_stores_total", {}, _count(cache, "stores"))

    limiter = getattr(service, "rate_limiter", None)
    out.family("moesaic_rate_limit_rejections_total", "counter", "requests refused by a per-key rate limit (429)")
    out.sample("moesaic_rate_limit_rejections_total", {}, _count(limiter, "rejected"))

    spend = getattr(service, "spend", None)
    out.family("moesaic_budget_rejections_total", "counter", "requests refused because a key spent its daily budget")
    out.sample("moesaic_budget_rejections_total", {}, _count(spend, "rejected"))

    limits = getattr(service, "limits", None)
    out.family("moesaic_limits_in_flight", "gauge", "requests running now under the concurrency limit")
    out.sample("moesaic_limits_in_flight", {}, _count(limits, "in_flight"))
    out.family("moesaic_limits_queued", "gauge", "requests waiting for a concurrency slot")
    out.sample("moesaic_limits_queued", {}, _count(limits, "queued"))
    out.family("moesaic_limits_rejected_total", "counter", "requests refused because the queue was full (429)")
    out.sample("moesaic_limits_rejected_total", {}, _count(limits, "rejected"))
    out.family("moesaic_limits_too_large_total", "counter", "requests refused for their size (413)")
    out.sample("moesaic_limits_too_large_total", {}, _count(limits, "too_large"))

    status = str(getattr(service, "redis_status", "disabled") or "disabled")
    state = status.split(":", 1)[0].strip()
    out.family("moesaic_redis_up", "gauge", "1 when Redis is connected, 0 on the in-process fallback")
    out.sample("moesaic_redis_up", {}, 1 if state == "connected" else 0)
    out.family("moesaic_redis_state", "gauge", "1 for the Redis link's state (connected, fallback, disabled)")
    for name in REDIS_STATES:
        out.sample("moesaic_redis_state", {"state": name}, 1 if state == name else 0)


def _count(owner: Any, attribute: str) -> float:
    value = getattr(owner, attribute, 0)
    return value if isinstance(value, (int, float)) else 0
