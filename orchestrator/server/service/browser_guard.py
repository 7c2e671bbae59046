"""What a web page the user happens to open may not do to the API: reach it under its own name, or post to it.

Without API keys (auth off, the default on a loopback bind) the API trusts whoever reaches it, and a browser
reaches it for any page it shows. Two attacks follow, and ``BrowserGuardMiddleware`` answers both:

* **DNS rebinding**: a page at ``attacker.example`` points its name at 127.0.0.1 and reads the API as if it were
  its own origin (``Host: attacker.example:8000``). Every request's ``Host`` must be one of
  ``http.allowed_hosts``: by default the loopback names while auth is off (any host while it is on); else 421.
* **Cross-site requests**: a page posts to ``http://127.0.0.1:8000/v1/...`` from its own origin. Browsers send
  ``Origin`` on such requests; a request whose ``Origin`` is neither the API's own (same-origin pages such as the
  console) nor listed in ``http.allowed_origins`` gets 403 unless it only reads (GET, HEAD, OPTIONS: the
  browser does not show the page the answer, since the API sends no CORS headers). And the JSON endpoints
  require ``Content-Type: application/json`` (``api/body.py``), which a page can only send cross-origin after
  a CORS preflight this API never grants.

Non-browser clients (the openai SDK, curl, LangChain) send no ``Origin`` and their own ``Host``, so they pass.

Runs in: the serving process (the API app, a Serve replica).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.server.errors import APIError
from orchestrator.server.service.auth import LOOPBACK_NAMES, is_loopback, service_of

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ANY = "*"


def host_name(value: str) -> str:
    """The name in a ``Host`` header or an origin's netloc, without port or brackets, lower-case."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def host_allowed(name: str, allowed: Sequence[str] | None) -> bool:
    """Whether ``name`` matches the allow-list: exact names, ``*`` any, ``.example.com`` a domain and its
    subdomains; ``None`` allows any host."""
    if allowed is None:
        return True
    for pattern in allowed:
        pattern = pattern.strip().lower()
        if pattern == ANY or name == pattern:
            return True
        if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
            return True
    return False


def default_hosts(auth_on: bool) -> list[str] | None:
    """The Host names answered when ``http.allowed_hosts`` is not set: loopback only while auth is off."""
    if auth_on:
        return None
    return sorted(LOOPBACK_NAMES | {"127.0.0.1", "::1"})


class BrowserGuardMiddleware:
    """ASGI middleware: the ``Host`` allow-list and the refusal of cross-origin writes (see the module docstring).

    It reads ``app.state.service`` (built in the app's lifespan); before that it lets requests through, as the
    other middlewares do (the auth middleware then refuses guarded paths with 503).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_of(scope)
        if service is None:
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(
            scope, service.config.http.allowed_hosts, service.config.http.allowed_origins, service.auth.enabled
        )
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def refusal(
        scope: Scope, allowed_hosts: Sequence[str] | None, allowed_origins: Sequence[str], auth_on: bool
    ) -> APIError | None:
        """The error a request gets, or None when it may pass."""
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", ())}
        host = headers.get("host", "")
        hosts = list(allowed_hosts) if allowed_hosts is not None else default_hosts(auth_on)
        name = host_name(host)
        if (
            hosts is not None
            and not host_allowed(name, hosts)
            and not (name and is_loopback(name) and _loopback_allowed(hosts))
        ):
            return APIError(
                421,
                f"this server does not answer to the host name {name or '(none)'!r}; it answers to "
                f"{', '.join(hosts)} (http.allowed_hosts in the service config). Use one of those, or list the "
                "name there",
                code="host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is None or scope.get("method", "GET") in READ_ONLY_METHODS:
            return None
        if _same_origin(origin, host) or origin.rstrip("/") in {o.rstrip("/") for o in allowed_origins}:
            return None
        return APIError(
            403,
            f"cross-origin request from {origin!r} refused: only pages served by this API (the console) or listed "
            "in http.allowed_origins may send requests from a browser",
            "permission_error",
            code="origin_not_allowed",
        )


def _same_origin(origin: str, host: str) -> bool:
    """Whether a browser's ``Origin`` names this server as the request reached it (scheme aside)."""
    parts = urlsplit(origin.strip())
    return bool(parts.netloc) and parts.netloc.lower() == host.strip().lower()


def _loopback_allowed(hosts: Sequence[str]) -> bool:
    """Any loopback address (127.0.0.2, ...) is answered when the list holds the loopback names."""
    return "127.0.0.1" in hosts or "localhost" in hosts
