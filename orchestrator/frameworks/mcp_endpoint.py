"""MCP's streamable HTTP transport on the API app, at ``/mcp``: the same pool, the same API keys, the same limits.

``moesaic serve`` mounts it (an ``AppPlugin``) when the ``mcp`` extra is installed and the service config leaves
``mcp.enabled`` on. Its tools are ``mcp_server``'s (``ask``, ``route``, ``experts``) over the app's orchestrator, so
there is no second pool; ``/mcp`` sits behind the auth middleware like ``/v1/*`` (a key is needed whenever auth is
on) and its POSTs take a slot of the request limits. ``moesaic mcp`` stays for stdio clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.routing import BaseRoute, Route

from orchestrator.frameworks.mcp_server import HTTP_PATH, SessionsEndpoint, build_server, transport_security
from orchestrator.pipeline.orchestrator import Orchestrator


class McpEndpoint:
    """The ``/mcp`` route and, while the app serves, the MCP session manager behind it."""

    def __init__(self, host: str) -> None:
        self.host = host  # a loopback bind answers local pages only (DNS rebinding protection)
        self.endpoint = SessionsEndpoint(None)

    def routes(self) -> list[BaseRoute]:
        return [Route(HTTP_PATH, endpoint=self.endpoint)]

    @asynccontextmanager
    async def running(self, orchestrator: Orchestrator) -> AsyncIterator[None]:
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        sessions: Any = StreamableHTTPSessionManager(
            app=build_server(orchestrator), security_settings=transport_security(self.host)
        )
        async with sessions.run():
            self.endpoint.sessions = sessions
            try:
                yield
            finally:
                self.endpoint.sessions = None


def mcp_available() -> bool:
    """Whether the ``mcp`` extra is installed."""
    import importlib.util

    return importlib.util.find_spec("mcp") is not None
