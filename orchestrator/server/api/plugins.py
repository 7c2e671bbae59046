"""What a layer above may add to the API app: routes, and work that runs while the app serves (``AppPlugin``).

The server never imports its callers (integrations, the CLI); they hand plugins to ``create_app``. The MCP endpoint
(``orchestrator/frameworks/mcp_endpoint.py``) mounts ``/mcp`` this way, on the app's own pool, behind its keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol

from starlette.routing import BaseRoute

from orchestrator.pipeline.orchestrator import Orchestrator


class AppPlugin(Protocol):
    """Routes for the app, and what must run while it serves them (started once the pool is up)."""

    def routes(self) -> list[BaseRoute]: ...

    def running(self, orchestrator: Orchestrator) -> AbstractAsyncContextManager[None]: ...


@asynccontextmanager
async def plugins_running(plugins: Sequence[AppPlugin], orchestrator: Orchestrator) -> AsyncIterator[None]:
    """Every plugin's ``running`` entered in order, left in reverse."""
    async with AsyncExitStack() as stack:
        for plugin in plugins:
            await stack.enter_async_context(plugin.running(orchestrator))
        yield
