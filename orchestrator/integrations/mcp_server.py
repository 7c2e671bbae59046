"""``moesaic mcp``: the pool as Model Context Protocol tools, over stdio or streamable HTTP.

Three tools, each a thin view of the ``Orchestrator`` the HTTP API uses:

- ``ask``: answer a question with the pool; the result carries the answer, the usage and the same
  ``moesaic`` object the chat API returns (routing decision, each expert's answer, calls, timings);
- ``route``: the routing decision alone, explained (no expert is called);
- ``experts``: the pool's experts, their skills, roles and health.

The server is the SDK's low-level ``Server`` rather than ``FastMCP``: stdio needs the protocol on
a stream of its own (Ray prints its workers' output to the driver's ``sys.stdout``, which would
corrupt the protocol), and that stream can be handed to the low-level server explicitly.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experts.config.pool_spec import PoolFileError, PoolSpec, load_pool
from experts.health import is_ready
from experts.types import GenerationRequest, Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from orchestrator.server.errors import APIError

if TYPE_CHECKING:  # the SDK is the `mcp` extra: imported where used, so the rest of the CLI works without it
    from mcp import types
    from mcp.server.lowlevel import Server

SERVER_NAME = "moesaic"
HTTP_PATH = "/mcp"


class AskArgs(BaseModel):
    """Arguments of ``ask``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="the question, as a user would ask it")
    k: Optional[int] = Field(None, ge=1, le=16, description="how many experts answer (default: the pool's)")
    experts: Optional[list[str]] = Field(
        None, min_length=1, max_length=16, description="answer with exactly these experts, skipping routing"
    )
    strategy: Optional[Literal["passthrough", "vote", "synthesize", "rank"]] = Field(
        None, description="how the answers become one (default: the pool's)"
    )
    max_tokens: Optional[int] = Field(None, ge=1, le=32768, description="token budget per model call")
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0, description="sampling temperature")


class RouteArgs(BaseModel):
    """Arguments of ``route``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="the question to route")
    k: Optional[int] = Field(None, ge=1, le=16, description="how many experts to choose (default: the pool's)")
    policy: Optional[str] = Field(None, description="skills | category | cost | cascade (profiled pools only)")


class ExpertsArgs(BaseModel):
    """``experts`` takes no arguments."""

    model_config = ConfigDict(extra="forbid")


class MoesaicTools:
    """The tools' behaviour over one running orchestrator; the MCP wiring is in ``build_server``."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    def definitions(self) -> list[types.Tool]:
        from mcp import types

        return [
            types.Tool(
                name="ask",
                description="Answer a question with the Moesaic pool: routed experts answer, their answers become "
                "one. Returns the answer, token usage and the routing metadata (decision, experts, calls).",
                inputSchema=AskArgs.model_json_schema(),
            ),
            types.Tool(
                name="route",
                description="Explain which experts the pool would recruit for a question, and why, without "
                "calling any expert.",
                inputSchema=RouteArgs.model_json_schema(),
            ),
            types.Tool(
                name="experts",
                description="List the pool's experts: backend, model, declared skills, roles and health.",
                inputSchema=ExpertsArgs.model_json_schema(),
            ),
        ]

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Run tool ``name``; a bad argument or a pipeline failure raises with a message the caller can act on."""
        handlers: dict[str, tuple[type[BaseModel], Any]] = {
            "ask": (AskArgs, self.ask),
            "route": (RouteArgs, self.route),
            "experts": (ExpertsArgs, self.experts),
        }
        if name not in handlers:
            raise ValueError(f"unknown tool {name!r}; this server offers {', '.join(handlers)}")
        schema, handler = handlers[name]
        try:
            parsed = schema.model_validate(arguments)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in error.errors())
            raise ValueError(f"invalid arguments for {name}: {problems}") from None
        return await handler(parsed)

    async def ask(self, args: AskArgs) -> tuple[list[types.TextContent], dict[str, Any]]:
        from mcp import types

        pool = self.orchestrator.pool
        if args.experts:
            unknown = [name for name in args.experts if name not in pool.expert_names]
            if unknown:
                raise ValueError(
                    f"experts names unknown experts: {', '.join(unknown)}; the pool has {', '.join(pool.expert_names)}"
                )
        generation = GenerationRequest(
            [Message("user", args.question)],
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            request_id=f"mcp-{uuid.uuid4().hex}",
        )
        request = PipelineRequest(generation, k=args.k, experts=args.experts, strategy=args.strategy)
        # failures (no healthy expert, every expert failed) raise with their own message: the SDK
        # returns it to the client as a tool error
        result = await self.orchestrator.run(request)
        usage = result.usage
        body = {
            "answer": result.text,
            "finish_reason": result.finish_reason,
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "cost": usage.cost,
            },
            "moesaic": result.metadata(),
        }
        return [types.TextContent(type="text", text=result.text)], body

    async def route(self, args: RouteArgs) -> tuple[list[types.TextContent], dict[str, Any]]:
        from mcp import types

        decision = self.orchestrator.route(args.question, k=args.k, policy=args.policy)
        chosen = f"experts: {', '.join(decision.experts)} (policy {decision.policy}, k={decision.k})"
        text = chosen + "\n" + decision.explain()
        return [types.TextContent(type="text", text=text)], {"decision": decision.model_dump()}

    async def experts(self, args: ExpertsArgs) -> dict[str, Any]:
        pool = self.orchestrator.pool
        spec = pool.spec
        roles: dict[str, list[str]] = {}
        for role, name in spec.roles.model_dump().items():
            if name:
                roles.setdefault(name, []).append(role)
        return {
            "pool": spec.name,
            "description": spec.description,
            "experts": [
                {
                    "name": expert.name,
                    "backend": expert.backend,
                    "model": expert.model,
                    "description": expert.description,
                    "skills": expert.skills,
                    "routable": expert.routable,
                    "roles": roles.get(expert.name, []),
                    "healthy": pool.is_healthy(expert.name),
                }
                for expert in spec.experts
            ],
        }


def build_server(orchestrator: Orchestrator) -> Server:
    """The MCP server offering ``ask``, ``route`` and ``experts`` over ``orchestrator``."""
    from mcp.server.lowlevel import Server

    tools = MoesaicTools(orchestrator)
    server: Server = Server(SERVER_NAME, instructions="Moesaic: several LLM experts answer together.")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return tools.definitions()

    # arguments are validated by our pydantic models, whose errors name the field
    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        return await tools.call(name, arguments)

    return server


async def run_stdio(server: Server, protocol_out: io.RawIOBase) -> None:
    """Serve one client over stdin and ``protocol_out`` (the process's original stdout)."""
    import anyio
    from mcp.server.stdio import stdio_server

    stdout = anyio.wrap_file(io.TextIOWrapper(protocol_out, encoding="utf-8", write_through=True))
    async with stdio_server(stdout=stdout) as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def run_http(server: Server, host: str, port: int) -> None:
    """Serve streamable HTTP on ``http://host:port/mcp`` until interrupted."""
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
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    await uvicorn.Server(config).serve()


def transport_security(host: str) -> Any:
    """A server bound to a loopback address answers local pages only (DNS rebinding protection); else None."""
    from mcp.server.transport_security import TransportSecuritySettings

    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


class SessionsEndpoint:
    """The session manager as a plain ASGI app, so ``/mcp`` answers without a redirect to ``/mcp/``; 503 while
    no session manager runs (``sessions`` is None before the app's start-up and after its shutdown)."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.sessions is None:
            refusal = APIError(503, "MCP is not serving: the app has not started", "service_unavailable")
            await refusal.response()(scope, receive, send)
            return
        await self.sessions.handle_request(scope, receive, send)


async def serve_mcp(
    spec: PoolSpec,
    transport: str,
    host: str,
    port: int,
    ray_address: str | None,
    protocol_out: io.RawIOBase | None = None,
) -> None:
    """Start the pool, serve MCP on ``transport`` until the client leaves (stdio) or a signal (http), stop."""
    from experts.runtime.pool import ExpertPool

    pool = ExpertPool(spec, ray_address=ray_address)
    try:
        health = await pool.start()
        for name, state in health.items():
            if not is_ready(state):
                print(f"expert {name} did not start: {state.get('error')}", file=sys.stderr)
        server = build_server(Orchestrator(pool))
        if transport == "stdio":
            assert protocol_out is not None
            await run_stdio(server, protocol_out)
        else:
            print(f"moesaic mcp: streamable HTTP on http://{host}:{port}{HTTP_PATH}", file=sys.stderr, flush=True)
            await run_http(server, host, port)
    finally:
        await pool.shutdown()


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
) -> None:
    """Serve the pool as MCP tools: ask (answer + routing), route (explain), experts."""
    if transport not in ("stdio", "http"):
        print(f"error: --transport {transport!r} is not one of stdio, http", file=sys.stderr)
        raise typer.Exit(2)
    try:
        spec = load_pool(pool)
    except PoolFileError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        import mcp as _sdk  # noqa: F401
    except ImportError:
        print("error: the MCP SDK is not installed; pip install -e '.[mcp]'", file=sys.stderr)
        raise typer.Exit(2) from None
    protocol_out = _protocol_stdout() if transport == "stdio" else None
    try:
        asyncio.run(serve_mcp(spec, transport, host, port, ray_address, protocol_out))
    except KeyboardInterrupt:
        pass
