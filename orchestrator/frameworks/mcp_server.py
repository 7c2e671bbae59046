"""``moesaic mcp``: the pool as Model Context Protocol tools, over stdio or streamable HTTP.

Three tools, each a thin view of the ``Orchestrator`` the HTTP API uses:

- ``ask``: answer a question with the pool; the result carries the answer, the usage and the same
  ``moesaic`` object the chat API returns (routing decision, each expert's answer, calls, timings);
- ``route``: the routing decision alone, explained (no expert is called);
- ``experts``: the pool's experts, their skills, roles and health.

Every tool call passes the service's one admission path (``service/admission.py``), as a chat request does:
the caller's API key (from the HTTP request that carried the call) must allow the pipeline (``moesaic``, or the
``moesaic/<policy>`` routed on) and each expert ``ask`` names (``expert/<name>``); ``max_tokens`` is held to the
key's and the service's cap; the key's rate limits and daily budget hold the call's worst case and are settled
with what its model calls used (also when the call fails half-way); and each call is journaled. Over stdio
there is no key and no service: the local user runs the pool.

``moesaic mcp --transport http`` serves the same checks: it reads a service config (``--config``) for keys,
limits and Redis, and on an address other than loopback it refuses to start without API keys.

The server is the SDK's low-level ``Server`` rather than ``FastMCP``: stdio needs the protocol on
a stream of its own (Ray prints its workers' output to the driver's ``sys.stdout``, which would
corrupt the protocol), and that stream can be handed to the low-level server explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experts import Price, price_of
from experts.types import GenerationRequest, Message
from orchestrator.pipeline.ledger import CallLedger
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from orchestrator.server.api.estimate import default_max_tokens, estimate_chat, price_lookup, prompt_tokens
from orchestrator.server.api.model_names import EXPERT_PREFIX, PIPELINE_MODEL, expert_model
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.errors import APIError
from orchestrator.server.service.admission import Admission, Surface, rejected_body
from orchestrator.server.service.auth import ANONYMOUS, Principal
from orchestrator.server.service.service_state import ServiceState

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


@dataclass(frozen=True)
class Caller:
    """Who calls a tool, and the service whose controls apply: none over stdio (the local user)."""

    principal: Principal = Principal(ANONYMOUS)
    service: ServiceState | None = None
    request_id: str = ""
    prices: Mapping[str, Price] = field(default_factory=dict)  # each expert's price, as the app learnt it

    @classmethod
    def of(cls, request: Any | None) -> Caller:
        """The caller of the HTTP request (a Starlette ``Request``) that carried a tool call; stdio: ``Caller()``."""
        if request is None:
            return cls()
        state = request.app.state
        service: ServiceState | None = getattr(state, "service", None)
        principal = getattr(request.state, "principal", None)
        if principal is None:
            principal = service.auth.anonymous() if service is not None else Principal(ANONYMOUS)
        catalog = getattr(state, "catalog", None)
        prices = dict(catalog.prices) if catalog is not None else {}
        return cls(principal, service, getattr(request.state, "request_id", None) or "", prices)


SURFACES = {"ask": Surface.MCP_ASK, "route": Surface.MCP_ROUTE, "experts": Surface.MCP_EXPERTS}


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

    async def call(self, name: str, arguments: dict[str, Any], caller: Caller | None = None) -> Any:
        """Run tool ``name`` under ``caller``'s controls; a refusal, a bad argument or a pipeline failure raises with
        a message the caller can act on (the SDK returns it as a tool error)."""
        handlers: dict[str, tuple[type[BaseModel], Any]] = {
            "ask": (AskArgs, self.ask),
            "route": (RouteArgs, self.route),
            "experts": (ExpertsArgs, self.experts),
        }
        if name not in handlers:
            raise ValueError(f"unknown tool {name!r}; this server offers {', '.join(handlers)}")
        caller = caller or Caller()
        admission = Admission(caller.service, caller.principal, SURFACES[name], caller.request_id)
        schema, handler = handlers[name]
        try:
            await admission.count_request()  # the key's requests per minute, as for every way in
            try:
                parsed = schema.model_validate(arguments)
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}" for e in error.errors())
                raise APIError(400, f"invalid arguments for {name}: {problems}", code="invalid_arguments") from None
            return await handler(parsed, admission, caller)
        except Exception as error:
            status = error.status if isinstance(error, APIError) else 500
            # refused before its work: a short record of the arguments, as for a refused HTTP body
            kept = {"arguments": arguments} if admission.admitted else _short(arguments, error)
            await admission.journal(status, {"tool": name, **kept}, None, str(error))
            raise

    async def ask(
        self, args: AskArgs, admission: Admission, caller: Caller
    ) -> tuple[list[types.TextContent], dict[str, Any]]:
        from mcp import types

        pool = self.orchestrator.pool
        if args.experts:
            unknown = [name for name in args.experts if name not in pool.expert_names]
            if unknown:
                raise ValueError(
                    f"experts names unknown experts: {', '.join(unknown)}; the pool has {', '.join(pool.expert_names)}"
                )
        admission.model = PIPELINE_MODEL
        admission.allow([PIPELINE_MODEL])
        admission.allow([expert_model(name) for name in args.experts or []], param="experts")
        admission.check_max_tokens(args.max_tokens, "max_tokens")
        cap, _ = admission.max_tokens_cap()
        max_tokens = args.max_tokens or (cap if default_max_tokens(pool.spec) > cap else None)
        as_chat = ChatCompletionRequest.model_validate(
            {
                "model": PIPELINE_MODEL,
                "messages": [{"role": "user", "content": args.question}],
                "max_tokens": max_tokens,
                "moesaic": {"k": args.k, "experts": args.experts},
            }
        )
        prices = caller.prices or {expert.name: price_of(expert) for expert in pool.spec.experts}
        await admission.reserve(estimate_chat(as_chat, pool.spec, prices, EXPERT_PREFIX))
        ledger = CallLedger(prompt_tokens=prompt_tokens(as_chat))
        generation = GenerationRequest(
            [Message("user", args.question)],
            max_tokens=max_tokens,
            temperature=args.temperature,
            request_id=caller.request_id or f"mcp-{uuid.uuid4().hex}",
        )
        request = PipelineRequest(generation, k=args.k, experts=args.experts, strategy=args.strategy, ledger=ledger)
        # failures (no healthy expert, every expert failed) raise with their own message: the SDK
        # returns it to the client as a tool error; the calls that ran are billed either way
        try:
            result = await self.orchestrator.run(request)
        finally:
            await admission.settle(ledger.bill(price_lookup(prices)))
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
        journaled = {"tool": "ask", "arguments": args.model_dump(exclude_none=True)}
        await admission.journal(200, journaled, {"answer": result.text, "usage": body["usage"]}, None)
        return [types.TextContent(type="text", text=result.text)], body

    async def route(
        self, args: RouteArgs, admission: Admission, caller: Caller
    ) -> tuple[list[types.TextContent], dict[str, Any]]:
        from mcp import types

        admission.model = f"{PIPELINE_MODEL}/{args.policy}" if args.policy else PIPELINE_MODEL
        admission.allow([admission.model])
        decision = self.orchestrator.route(args.question, k=args.k, policy=args.policy)
        chosen = f"experts: {', '.join(decision.experts)} (policy {decision.policy}, k={decision.k})"
        text = chosen + "\n" + decision.explain()
        journaled = {"tool": "route", "arguments": args.model_dump(exclude_none=True)}
        await admission.journal(200, journaled, {"experts": decision.experts}, None)
        return [types.TextContent(type="text", text=text)], {"decision": decision.model_dump()}

    async def experts(self, args: ExpertsArgs, admission: Admission, caller: Caller) -> dict[str, Any]:
        await admission.journal(200, {"tool": "experts"}, None, None)
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
        return await tools.call(name, arguments, Caller.of(server.request_context.request))

    return server


def _short(arguments: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """A refused call's arguments as the journal keeps them: size and digest, not the text."""
    import json

    refusal = error if isinstance(error, APIError) else None
    return rejected_body(json.dumps(arguments, default=str).encode("utf-8"), refusal)


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
