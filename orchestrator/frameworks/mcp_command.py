"""``moesaic mcp``: the pool's MCP tools (``mcp_server``) served on their own, over stdio or streamable HTTP.

stdio serves the local user who started it: no key, no service. Streamable HTTP is a network service, so it runs
behind the same middlewares as the API app (the ``Host`` allow-list and cross-origin refusal, API keys, request
limits) over a ``ServiceState`` built from ``--config`` (keys, limits, rate limits, budgets, Redis, journal), and
the tools admit every call as the API does. On an address other than loopback it refuses to start without API
keys: nothing else would stand between the network and the pool.

Runs in: the user's shell (``moesaic mcp``), which also runs the pool's driver.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from experts import is_ready
from experts.config import PoolFileError, PoolSpec, load_pool
from orchestrator.frameworks.mcp_server import HTTP_PATH, SessionsEndpoint, build_server, transport_security
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.service.auth import AuthMiddleware, is_loopback
from orchestrator.server.service.browser_guard import BrowserGuardMiddleware
from orchestrator.server.service.limits import LimitsMiddleware
from orchestrator.server.service.service_config import ServiceConfig, ServiceConfigError, load_service_config
from orchestrator.server.service.service_state import ServiceState, build_service_state

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server


class McpStartError(RuntimeError):
    """``moesaic mcp`` cannot serve as configured; the message says what to change."""


async def run_stdio(server: Server, protocol_out: io.RawIOBase) -> None:
    """Serve one client over stdin and ``protocol_out`` (the process's original stdout)."""
    import anyio
    from mcp.server.stdio import stdio_server

    stdout = anyio.wrap_file(io.TextIOWrapper(protocol_out, encoding="utf-8", write_through=True))
    async with stdio_server(stdout=stdout) as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def run_http(server: Server, host: str, port: int, service: ServiceState) -> None:
    """Serve streamable HTTP on ``http://host:port/mcp`` under ``service``'s controls until interrupted."""
    import uvicorn
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Route

    sessions = StreamableHTTPSessionManager(app=server, security_settings=transport_security(host))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with sessions.run():
            yield

    app = Starlette(routes=[Route(HTTP_PATH, endpoint=SessionsEndpoint(sessions))], lifespan=lifespan)
    app.state.service = service  # what the middlewares and the tools' admission read
    app.add_middleware(LimitsMiddleware)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(BrowserGuardMiddleware)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    await uvicorn.Server(config).serve()


async def http_service(config: ServiceConfig, host: str, spec: PoolSpec) -> ServiceState:
    """The service state of ``moesaic mcp --transport http``; ``McpStartError`` on a network address without keys."""
    state = await build_service_state(config, host, spec.model_dump_json())
    if is_loopback(host):
        return state
    keys = await state.auth.keys.count() if state.auth.enabled else 0
    if keys == 0:
        await state.close()
        why = "auth.mode is off" if not state.auth.enabled else "the service config holds no API key"
        raise McpStartError(
            f"refusing to serve MCP on {host} without API keys ({why}): anyone who reaches the address could run "
            "the pool. Create one with `moesaic keys create NAME`, put its record under auth.keys in a service "
            "config and pass it with --config FILE (or bind --host 127.0.0.1)"
        )
    return state


async def serve_mcp(
    spec: PoolSpec,
    transport: str,
    host: str,
    port: int,
    ray_address: str | None,
    protocol_out: io.RawIOBase | None = None,
    config: ServiceConfig | None = None,
) -> None:
    """Start the pool, serve MCP on ``transport`` until the client leaves (stdio) or a signal (http), stop."""
    from experts.runtime import ExpertPool

    service = await http_service(config or ServiceConfig(), host, spec) if transport == "http" else None
    pool = ExpertPool(spec, ray_address=ray_address)
    try:
        health = await pool.start()
        for name, state in health.items():
            if not is_ready(state):
                print(f"expert {name} did not start: {state.get('error')}", file=sys.stderr)
        server = build_server(Orchestrator(pool))
        if service is None:
            assert protocol_out is not None
            await run_stdio(server, protocol_out)
        else:
            print(f"moesaic mcp: streamable HTTP on http://{host}:{port}{HTTP_PATH}", file=sys.stderr, flush=True)
            print(await service.summary(), file=sys.stderr, flush=True)
            await run_http(server, host, port, service)
    finally:
        await pool.shutdown()
        if service is not None:
            await service.close()


def _protocol_stdout() -> io.RawIOBase:
    """Keep the real stdout for the protocol; send everything else that writes to stdout to stderr.

    Ray's log forwarding, stray prints and child processes would otherwise interleave bytes with
    the JSON-RPC messages. The file descriptor is duplicated first, then fd 1 and ``sys.stdout``
    both point at stderr.
    """
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol  # type: ignore[return-value]


def mcp_command(
    pool: str = typer.Option("default", "--pool", "-p", help="pool file path, or a name in deploy/pools"),
    transport: str = typer.Option("stdio", "--transport", help="stdio | http (streamable HTTP on /mcp)"),
    host: str = typer.Option("127.0.0.1", "--host", help="http: address to listen on"),
    port: int = typer.Option(8765, "--port", help="http: port to listen on"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join this Ray cluster"),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        envvar="MOESAIC_CONFIG",
        help="http: service config (API keys, limits, Redis); required with keys on a non-loopback --host",
    ),
) -> None:
    """Serve the pool as MCP tools: ask (answer + routing), route (explain), experts."""
    if transport not in ("stdio", "http"):
        print(f"error: --transport {transport!r} is not one of stdio, http", file=sys.stderr)
        raise typer.Exit(2)
    try:
        spec = load_pool(pool)
        service = load_service_config(config) if config is not None else None
        if service is not None:
            service.redis.resolved_url()
    except (PoolFileError, ServiceConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        import mcp as _sdk  # noqa: F401
    except ImportError:
        print("error: the MCP SDK is not installed; pip install -e '.[mcp]'", file=sys.stderr)
        raise typer.Exit(2) from None
    protocol_out = _protocol_stdout() if transport == "stdio" else None
    try:
        asyncio.run(serve_mcp(spec, transport, host, port, ray_address, protocol_out, service))
    except McpStartError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
