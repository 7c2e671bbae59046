"""The gate of ``POST /v1/chat/completions``: what happens around the pipeline for every request.

Before the work: the caller's key may use the model (403), the request's ``max_tokens`` fits
the key's and the service's limits (400), the key has not spent its daily budget and its rate
limits leave room (429 with ``Retry-After``), and a deterministic request may be answered from
the cache (``x-moesaic-cache``).
During: the work runs as a task raced against the client going away, so a disconnect cancels it
(and with it the expert calls). After: the answer is cached, the token estimate is settled with
the real usage, the answer's cost is added to the key's spend (not a cached one: it cost
nothing), and the request is journaled with what the client received.

``Gate.open`` works without a ``ServiceState`` too (an app whose lifespan has not run): every
check then passes and nothing is recorded.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from experts.config.pool_spec import PoolSpec
from orchestrator.server.api.answers import AnswerResponse, AnswerStream, close_iterator
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.errors import APIError
from orchestrator.server.service.auth import ANONYMOUS, Principal
from orchestrator.server.service.journal import JournalEntry
from orchestrator.server.service.service_state import ServiceState
from orchestrator.server.service.spend import dollars

T = TypeVar("T")
CACHE_HEADER = "x-moesaic-cache"
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection first": journal only


class ClientDisconnected(APIError):
    def __init__(self) -> None:
        super().__init__(CLIENT_CLOSED, "the client closed the connection; the work was cancelled", code="client_gone")


class Gate:
    """One chat request on its way through the service's checks and stores."""

    def __init__(self, http_request: Request, service: ServiceState | None, principal: Principal) -> None:
        self.http_request = http_request
        self.service = service
        self.principal = principal
        self.started = time.time()
        self._clock = time.perf_counter()
        self.body: dict[str, Any] | None = None  # the JSON object the client sent, once parsed
        self.model = ""
        self.cache_state = "bypass"
        self._cache_key: str | None = None
        self._estimated = 0
        self._counted = False  # tokens were counted against the key's rate limit
        self._recorded = False

    @classmethod
    def open(cls, http_request: Request) -> Gate:
        service = getattr(http_request.app.state, "service", None)
        principal = getattr(http_request.state, "principal", None)
        if principal is None:  # no auth middleware ran (no service): the anonymous caller
            principal = service.auth.anonymous() if service is not None else Principal(ANONYMOUS)
            http_request.state.principal = principal
        return cls(http_request, service, principal)

    # -- before the work ------------------------------------------------------------------
    async def admit(self, body: ChatCompletionRequest, spec: PoolSpec) -> JSONResponse | None:
        """Check the request against the key and the limits; a cached answer when there is one."""
        self.model = body.model
        require_model(self.principal, body.model)
        if self.service is None:
            return None
        self._check_max_tokens(body, spec)
        await self._check_budget()
        await self._rate_limit(body, spec)
        return await self._cached(body)

    def _check_max_tokens(self, body: ChatCompletionRequest, spec: PoolSpec) -> None:
        assert self.service is not None
        cap, why = self.service.config.limits.max_tokens, "the service's limits.max_tokens"
        if self.principal.max_tokens is not None and self.principal.max_tokens < cap:
            cap, why = self.principal.max_tokens, f"API key {self.principal.key_name!r}'s max_tokens"
        asked = body.token_budget
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        if asked is not None and asked > cap:
            raise APIError(400, f"{param} {asked} is more than {why} ({cap})", param=param, code="max_tokens_exceeded")
        options = body.moesaic
        if options is not None and options.aggregator_max_tokens is not None and options.aggregator_max_tokens > cap:
            raise APIError(
                400,
                f"moesaic.aggregator_max_tokens {options.aggregator_max_tokens} is more than {why} ({cap})",
                param="moesaic.aggregator_max_tokens",
                code="max_tokens_exceeded",
            )
        if asked is None and _default_max_tokens(spec) > cap:
            body.max_tokens = cap  # an expert's default would go past the cap: the cap applies
            if self.body is not None:
                self.body = {**self.body, "max_tokens": cap}

    async def _check_budget(self) -> None:
        """429 once the key's spend today reached its budget (checked before the work: its cost is known after)."""
        assert self.service is not None
        budget, name = self.principal.budget_usd_per_day, self.principal.key_name
        if budget is None:
            return
        spend = self.service.spend
        spent = await spend.spent(name)
        if spent < budget:
            return
        spend.rejected += 1
        reset = max(1, math.ceil(spend.seconds_until_reset()))
        raise APIError(
            429,
            f"API key {name!r} spent {dollars(spent)} of its {dollars(budget)} daily budget; "
            f"it resets at 00:00 UTC (in {reset} s)",
            "insufficient_quota",  # OpenAI's type for a spent quota: retrying before the reset does not help
            code="budget_exceeded",
            headers={"Retry-After": str(reset)},
        )

    async def _rate_limit(self, body: ChatCompletionRequest, spec: PoolSpec) -> None:
        assert self.service is not None
        principal = self.principal
        if principal.requests_per_minute is None and principal.tokens_per_minute is None:
            return
        prompt_chars = sum(len(message.to_message().content) for message in body.messages)
        self._estimated = body.n * (prompt_chars // 4 + (body.token_budget or _default_max_tokens(spec)))
        decision = await self.service.rate_limiter.acquire(
            principal.key_name, principal.requests_per_minute, principal.tokens_per_minute, self._estimated
        )
        if not decision.allowed:
            limit = decision.limit or "requests"
            per_minute = principal.tokens_per_minute if limit == "tokens" else principal.requests_per_minute
            retry = max(1, math.ceil(decision.retry_after_s))
            raise APIError(
                429,
                f"rate limit reached for API key {principal.key_name!r}: {per_minute} {limit} per minute "
                f"(this request counts about {self._estimated} tokens); retry in {retry} s",
                limit,
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        self._counted = principal.tokens_per_minute is not None

    async def _cached(self, body: ChatCompletionRequest) -> JSONResponse | None:
        assert self.service is not None
        if not self.service.cache_enabled or self.body is None:
            return None
        cache = self.service.cache
        directives = self.http_request.headers.get("cache-control", "").lower()
        if "no-cache" in directives or "no-store" in directives:
            cache.note_bypass()
            return None
        self._cache_key = cache.key_for(body.model, self.body, self.service.cache_scope)
        if self._cache_key is None:
            return None
        stored = await cache.get(self._cache_key)
        if stored is None:
            self.cache_state = "miss"
            return None
        self.cache_state = "hit"
        await self._settle(0)  # an answer from the cache costs no model tokens
        await self._journal(200, stored, None, cache_hit=True)
        headers = {CACHE_HEADER: "hit", "x-moesaic-experts": ",".join(_experts_of(stored))}
        return JSONResponse(stored, headers=headers)

    # -- the work -------------------------------------------------------------------------
    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work`` as a task; if the client disconnects first, cancel it and raise ``ClientDisconnected``."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_disconnect(self.http_request.receive))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this handler itself is cancelled
            if not task.done():
                task.cancel()
            watcher.cancel()
        if task.cancelled() or not task.done():
            await asyncio.gather(task, return_exceptions=True)  # let the cancellation reach the expert calls
            raise ClientDisconnected()
        return task.result()

    # -- after the work -------------------------------------------------------------------
    async def answered(self, response: Response) -> Response:
        """Record a successful response (cache, usage, journal) and mark it; streams are recorded as they end."""
        if isinstance(response, AnswerStream):
            if self.service is not None:
                response.keepalive_s = self.service.config.limits.sse_keepalive_s
            return GatedStream(response, self._recording(response), self.cache_state)
        response.headers[CACHE_HEADER] = self.cache_state
        if self.service is None:
            return response
        body = response.answer if isinstance(response, AnswerResponse) else json.loads(bytes(response.body))
        if self._cache_key is not None and response.status_code == 200 and not _partial(body):
            await self.service.cache.put(self._cache_key, body)
        await self._settle(int(body.get("usage", {}).get("total_tokens", 0)))
        await self._charge(_cost_of(body.get("moesaic")))
        await self._journal(response.status_code, body, None)
        return response

    async def failed(self, error: BaseException) -> None:
        """Record a request that ended in an error (or a disconnect) before any byte of an answer."""
        if isinstance(error, asyncio.CancelledError):
            error = ClientDisconnected()
        status = error.status if isinstance(error, APIError) else 500
        with anyio.CancelScope(shield=True):  # a cancelled request is still recorded
            await self._settle(0)
            await self._journal(status, None, str(error) or type(error).__name__)

    async def _recording(self, stream: AnswerStream) -> AsyncIterator[Any]:
        """Pass the stream's events through; once it ends, record what the client received (``stream.answer``)."""
        chunks, seen = stream.body_iterator, stream.answer
        status = 200
        try:
            async for chunk in chunks:
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            status = CLIENT_CLOSED  # cancelled or closed mid-stream: the client went away
            raise
        except Exception as error:  # the route's stream reports its own errors; this would be a bug
            status, seen.error = 500, f"{type(error).__name__}: {error}"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await close_iterator(chunks)  # stops the pipeline behind the stream if it still runs
                if self.service is not None:
                    await self._settle(seen.total_tokens())
                    await self._charge(_cost_of(seen.metadata))
                    error = seen.error or ("the client closed the stream" if status == CLIENT_CLOSED else None)
                    await self._journal(status, seen.response(), error)

    async def _settle(self, actual: int) -> None:
        if self._counted and self.service is not None:
            self._counted = False
            await self.service.rate_limiter.settle(
                self.principal.key_name, self.principal.tokens_per_minute, self._estimated, actual
            )

    async def _charge(self, usd: float) -> None:
        """Add what an answer cost to the key's spend today (only keys with a budget are counted)."""
        if self.service is not None and self.principal.budget_usd_per_day is not None and usd > 0:
            await self.service.spend.add(self.principal.key_name, usd)

    async def _journal(
        self, status: int, response: dict[str, Any] | None, error: str | None, cache_hit: bool = False
    ) -> None:
        if self._recorded or self.service is None or self.service.journal is None:
            return
        self._recorded = True
        request_id = getattr(self.http_request.state, "request_id", None) or ""
        entry = JournalEntry(
            request_id=request_id,
            key_name=self.principal.key_name,
            model=self.model or str((self.body or {}).get("model", "")),
            request=self.body or {},
            status=status,
            response=response,
            error=error,
            started=self.started,
            duration_ms=round((time.perf_counter() - self._clock) * 1000, 3),
            cache_hit=cache_hit,
        )
        await self.service.journal.append(entry)


class GatedStream(StreamingResponse):
    """The route's stream, recorded, and closed however it ends, so the work behind it stops."""

    def __init__(self, original: StreamingResponse, body: AsyncIterator[Any], cache_state: str) -> None:
        super().__init__(body, status_code=original.status_code, background=original.background)
        self.raw_headers = list(original.raw_headers)
        self.headers[CACHE_HEADER] = cache_state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await close_iterator(self.body_iterator)


def require_model(principal: Principal, model: str) -> None:
    """403 unless the caller's key may use ``model`` (``/v1/chat/completions`` and ``/v1/route``)."""
    if not principal.allows(model):
        raise APIError(
            403,
            f"API key {principal.key_name!r} may not use model {model!r}; it may use {', '.join(principal.models)}",
            "permission_error",
            param="model",
            code="model_not_allowed",
        )


async def _disconnect(receive: Receive) -> None:
    """Return when the client has gone (the body is already read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _default_max_tokens(spec: PoolSpec) -> int:
    """The token budget a request without ``max_tokens`` gets: the largest of the experts' defaults."""
    return max((expert.generation.max_tokens for expert in spec.experts), default=256)


def _experts_of(body: dict[str, Any]) -> list[str]:
    metadata = body.get("moesaic") or {}
    if "expert" in metadata:
        return [str(metadata["expert"])]
    return [str(name) for name in (metadata.get("decision") or {}).get("experts", [])]


def _cost_of(metadata: Any) -> float:
    """The dollars an answer cost: its ``moesaic.cost``, else the sum of its calls' costs."""
    if not isinstance(metadata, dict):
        return 0.0
    cost = metadata.get("cost")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        return float(cost)
    return sum(float(call.get("cost") or 0.0) for call in metadata.get("calls", []) if isinstance(call, dict))


def _partial(body: dict[str, Any]) -> bool:
    """A partial answer (some experts failed) is served once, never cached."""
    return bool((body.get("moesaic") or {}).get("partial"))
