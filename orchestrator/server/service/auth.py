"""API keys: who is calling, and what they may do.

A key is ``msk-<random>``; only its sha256 is ever stored (in the service config, or in the
Redis hash ``moesaic:keys`` of name -> JSON record, written by ``moesaic keys create --redis``).
A presented key is hashed and compared with every stored hash in constant time, so neither the
key nor a near miss leaks through timing.

``AuthMiddleware`` runs before anything else on ``/v1/*`` (``/healthz`` and ``/metrics`` stay
open for probes and scrapers): it answers 401 itself, and hands the route a ``Principal`` in
``request.state.principal`` (``anonymous`` when auth is off) carrying the key's allowed models
and limits. The chat route enforces those (403, 400, 429), because they need the request body.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.server.errors import APIError
from orchestrator.server.service.redis_link import RedisLink
from orchestrator.server.service.service_config import KeyRecord, Permission, RateLimitSection

log = logging.getLogger(__name__)

KEY_PREFIX = "msk-"
ANONYMOUS = "anonymous"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def new_key() -> str:
    """A fresh API key: ``msk-`` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """What is stored for a key: the hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname we cannot judge: assume the network can reach it


def auth_enabled(mode: str, host: str) -> bool:
    """``on``/``off`` as configured; ``auto`` is off on a loopback bind and on for any other address."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return not is_loopback(host)


@dataclass(frozen=True)
class Principal:
    """The caller of one request, with the limits that apply to it (the key's, else the defaults)."""

    key_name: str
    models: tuple[str, ...] = ("*",)
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_tokens: int | None = None
    budget_usd_per_day: float | None = None
    permissions: frozenset[Permission] = frozenset()

    def allows(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.models)


class KeyStore:
    """The keys of the config file plus those in Redis, looked up by the hash of a presented key.

    Redis keys are read at most every ``refresh_s`` seconds (so a revocation takes effect within
    that delay) and the last good copy is kept while Redis is down, so an outage never locks
    out keys that worked a moment ago.
    """

    def __init__(
        self,
        config_keys: list[KeyRecord],
        link: RedisLink | None = None,
        redis_hash: str = "moesaic:keys",
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_keys = list(config_keys)
        self.link = link
        self.redis_hash = redis_hash
        self.refresh_s = refresh_s
        self._clock = clock
        self._redis_keys: list[KeyRecord] = []
        self._read_at: float | None = None

    async def find(self, key: str) -> KeyRecord | None:
        digest = hash_key(key)
        found: KeyRecord | None = None
        for record in self.config_keys + await self._from_redis():
            if hmac.compare_digest(record.hash, digest) and found is None:
                found = record  # keep comparing: the time taken does not say which record matched
        return found

    async def count(self) -> int:
        return len(await self.records())

    async def records(self) -> list[KeyRecord]:
        """Every key known now: the config file's, then Redis'."""
        return self.config_keys + await self._from_redis()

    async def _from_redis(self) -> list[KeyRecord]:
        if self.link is None or self.link.client is None:
            return []
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self.refresh_s:
            return self._redis_keys
        answered, raw = await self.link.attempt("read API keys", lambda client: client.hgetall(self.redis_hash))
        if answered:
            self._redis_keys = _records(raw or {}, self.redis_hash)
            self._read_at = now
        return self._redis_keys


def _records(raw: dict[Any, Any], where: str) -> list[KeyRecord]:
    records = []
    for name, text in raw.items():
        try:
            records.append(KeyRecord.model_validate_json(text))
        except ValidationError as error:
            log.error("ignoring API key %r in Redis hash %s: %s", name, where, error.errors()[0]["msg"])
    return records


class Authenticator:
    """Turns an ``Authorization`` header into a ``Principal`` or a 401."""

    def __init__(self, enabled: bool, keys: KeyStore, defaults: RateLimitSection) -> None:
        self.enabled = enabled
        self.keys = keys
        self.defaults = defaults

    def anonymous(self) -> Principal:
        """Everyone, while auth is off: every model and permission, under the default limits."""
        return Principal(
            ANONYMOUS,
            requests_per_minute=self.defaults.requests_per_minute,
            tokens_per_minute=self.defaults.tokens_per_minute,
            budget_usd_per_day=self.defaults.budget_usd_per_day,
            permissions=frozenset(Permission),
        )

    async def principal(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return self.anonymous()
        key = _bearer(authorization)
        if key is None:
            raise APIError(
                401,
                "missing API key: send the header 'Authorization: Bearer msk-...' "
                "(an operator creates keys with `moesaic keys create NAME`)",
                code="missing_api_key",
            )
        record = await self.keys.find(key)
        if record is None:
            shown = key[:8] + "..." if len(key) > 12 else "***"
            raise APIError(401, f"invalid API key {shown}: unknown or revoked", code="invalid_api_key")
        return Principal(
            record.name,
            models=tuple(record.models),
            requests_per_minute=record.requests_per_minute or self.defaults.requests_per_minute,
            tokens_per_minute=record.tokens_per_minute or self.defaults.tokens_per_minute,
            max_tokens=record.max_tokens,
            budget_usd_per_day=record.budget_usd_per_day or self.defaults.budget_usd_per_day,
            permissions=frozenset(record.permissions),
        )


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def routed_path(scope: Scope) -> str:
    """The path the app routes on: ``scope["path"]`` without the ``root_path`` a proxy mounted the app under.

    Behind a prefix (Ray Serve's ``route_prefix``, ``uvicorn --root-path``) the path carries the prefix and the
    router strips it; a check on the raw path would miss ``/p/v1/pool``, which the router serves as ``/v1/pool``.
    """
    path: str = scope["path"]
    root = scope.get("root_path") or ""
    if root and (path == root or path.startswith(root.rstrip("/") + "/")):
        return path[len(root.rstrip("/")) :] or "/"
    return path


def service_of(scope: Scope) -> Any:
    """The app's ``ServiceState`` for an HTTP request, or None: not HTTP, or the lifespan has not built it yet."""
    if scope["type"] != "http" or "app" not in scope:
        return None
    return getattr(scope["app"].state, "service", None)


def is_guarded(path: str) -> bool:
    """The paths behind API keys and request limits: the OpenAI API (``/v1/*``) and MCP (``/mcp``).

    ``path`` is the routed path (``routed_path``); a path that only differs in case or doubled slashes routes
    nowhere, so it needs no key.
    """
    return path.startswith("/v1/") or path == "/mcp" or path.startswith("/mcp/")


class AuthMiddleware:
    """ASGI middleware: every ``/v1/*`` and ``/mcp`` request gets a ``Principal`` or a 401, before it queues.

    The ``Authenticator`` lives on ``app.state.service``, built in the app's lifespan. A server that
    did not run the lifespan has nothing to check keys against: it fails closed (503), never open.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_guarded(routed_path(scope)):
            await self.app(scope, receive, send)
            return
        service = service_of(scope)
        if service is None:
            refusal = APIError(
                503,
                "the service is not started: run the app with its lifespan (uvicorn does; `lifespan='on'` elsewhere)",
                "service_unavailable",
                code="service_not_started",
            )
            await refusal.response()(scope, receive, send)
            return
        authorization = _header(scope, b"authorization")
        api_key = _header(scope, b"x-api-key")  # Anthropic's clients send the key this way (/v1/messages)
        if authorization is None and api_key:
            authorization = f"Bearer {api_key.strip()}"
        try:
            principal = await service.auth.principal(authorization)
        except APIError as error:
            await error.response({"WWW-Authenticate": 'Bearer realm="moesaic"'})(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None
