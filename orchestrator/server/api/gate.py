"""The gate of ``POST /v1/chat/completions``: what happens around the pipeline for every request.

The key's controls are the service's one admission path (``service/admission.py``), in its order: the request
is counted against the key's requests per minute before its body is read; then the key must allow the model and
every expert the request names (403), ``max_tokens`` must fit the caps (400), and the request's worst case
(``api/estimate.py``: ``k``, ``n``, the aggregator) is held against the key's tokens per minute and daily budget
(429 with ``Retry-After``). A deterministic request may then be answered from the cache (``x-moesaic-cache``).
During: the work runs as a task raced against the client going away, so a disconnect cancels it (and with it
the expert calls); every call writes itself into the request's ``CallLedger`` as it ends. After, however the
request ended (answered, failed, dropped mid-stream): what was held is settled with the ledger's bill, the
answer is cached (not a partial one), and the request is journaled — whole once it was admitted, as a short
record (size, digest, error) when it was refused before.

``Gate.open`` works without a ``ServiceState`` too (an app whose lifespan has not run): every check then passes
and nothing is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from experts import Price
from experts.config import PoolSpec
from orchestrator.pipeline.ledger import Bill, CallLedger
from orchestrator.server.api.answers import AnswerResponse, AnswerStream, ClosingStream, close_iterator
from orchestrator.server.api.body import parse_json_object
from orchestrator.server.api.disconnect import CLIENT_CLOSED, ClientDisconnected, unless_disconnected
from orchestrator.server.api.estimate import default_max_tokens, estimate_chat, price_lookup, prompt_tokens
from orchestrator.server.api.model_names import EXPERT_PREFIX, expert_model
from orchestrator.server.api.schema_checks import check_schemas
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.errors import APIError
from orchestrator.server.service.admission import Admission, Surface, rejected_body
from orchestrator.server.service.auth import ANONYMOUS, Principal
from orchestrator.server.service.service_state import ServiceState

T = TypeVar("T")
CACHE_HEADER = "x-moesaic-cache"


class Gate:
    """One chat request on its way through its key's controls, the cache and the recording of its answer."""

    def __init__(self, http_request: Request, service: ServiceState | None, principal: Principal) -> None:
        self.http_request = http_request
        self.service = service
        request_id = getattr(http_request.state, "request_id", None) or ""
        self.admission = Admission(service, principal, Surface.CHAT, request_id)
        self.body: dict[str, Any] | None = None  # the JSON object the client sent, once parsed
        self.ledger = CallLedger()  # every model call of the request, written as it ends
        self.cache_state = "bypass"
        self._raw = b""
        self._cache_key: str | None = None
        catalog = getattr(http_request.app.state, "catalog", None)
        self._prices: dict[str, Price] = dict(catalog.prices) if catalog is not None else {}

    @classmethod
    def open(cls, http_request: Request) -> Gate:
        return cls(http_request, getattr(http_request.app.state, "service", None), principal_of(http_request))

    @property
    def principal(self) -> Principal:
        return self.admission.principal

    # -- before the work ------------------------------------------------------------------------------------
    async def read_body(self) -> dict[str, Any]:
        """Count the request against the key's rate (429), then read and parse its body (413, 415, 400)."""
        await self.admission.count_request()
        self._raw = await self.http_request.body()
        self.body = parse_json_object(self._raw, self.http_request.headers.get("content-type"))
        return self.body

    async def admit(self, body: ChatCompletionRequest, spec: PoolSpec) -> JSONResponse | None:
        """Check the request against the key and the limits, hold its worst case; a cached answer when there is
        one."""
        admission = self.admission
        admission.model = body.model
        named = body.moesaic.experts if body.moesaic and body.moesaic.experts else []
        admission.allow([body.model])
        admission.allow([expert_model(name) for name in named], param="moesaic.experts")
        self._check_max_tokens(body, spec)
        if self.service is not None:
            check_schemas(body, self.service.config.limits)
        self.ledger.prompt_tokens = prompt_tokens(body)
        await admission.reserve(estimate_chat(body, spec, self._prices, EXPERT_PREFIX))
        if self.service is None:
            return None
        return await self._cached(body)

    def _check_max_tokens(self, body: ChatCompletionRequest, spec: PoolSpec) -> None:
        admission = self.admission
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        admission.check_max_tokens(body.token_budget, param)
        options = body.moesaic
        if options is not None:
            admission.check_max_tokens(options.aggregator_max_tokens, "moesaic.aggregator_max_tokens")
        cap, _ = admission.max_tokens_cap()
        if body.token_budget is None and default_max_tokens(spec) > cap:
            body.max_tokens = cap  # an expert's default would go past the cap: the cap applies
            if self.body is not None:
                self.body = {**self.body, "max_tokens": cap}

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
        await self.admission.settle(None)  # an answer from the cache costs no model tokens
        await self.admission.journal(200, self.body, stored, None, cache_hit=True)
        headers = {CACHE_HEADER: "hit", "x-moesaic-experts": ",".join(_experts_of(stored))}
        return JSONResponse(stored, headers=headers)

    # -- the work -------------------------------------------------------------------------------------------
    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work`` as a task; if the client disconnects first, cancel it and raise ``ClientDisconnected``."""
        return await unless_disconnected(work, self.http_request.receive)

    # -- after the work -------------------------------------------------------------------------------------
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
        await self.admission.settle(self._bill())
        await self.admission.journal(response.status_code, self.body, body, None)
        return response

    async def failed(self, error: BaseException) -> None:
        """Record a request that ended in an error (or a disconnect) before any byte of an answer: the calls that
        ran are still billed; a request refused before its work is journaled as a short record."""
        if isinstance(error, asyncio.CancelledError):
            error = ClientDisconnected()
        status = error.status if isinstance(error, APIError) else 500
        with anyio.CancelScope(shield=True):  # a cancelled request is still recorded
            await self.admission.settle(self._bill())
            await self.admission.journal(
                status, self._journaled_request(error), None, str(error) or type(error).__name__
            )

    def _journaled_request(self, error: BaseException) -> dict[str, Any]:
        """The whole body once the request was admitted; before, a short record of what was refused."""
        if self.admission.admitted and self.body is not None:
            return self.body
        record = rejected_body(self._raw, error if isinstance(error, APIError) else None)
        model = (self.body or {}).get("model")
        if isinstance(model, str) and len(model) <= 200:
            record["model"] = model
        return record

    def _bill(self) -> Bill:
        return self.ledger.bill(price_lookup(self._prices))

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
                await self.admission.settle(self._bill())  # the calls that ran, the stream whole or dropped
                error = seen.error or ("the client closed the stream" if status == CLIENT_CLOSED else None)
                await self.admission.journal(status, self.body, seen.response(), error)


def principal_of(http_request: Request) -> Principal:
    """The caller, as the auth middleware found it; the anonymous caller where no middleware ran (no service)."""
    principal = getattr(http_request.state, "principal", None)
    if principal is None:
        service = getattr(http_request.app.state, "service", None)
        principal = service.auth.anonymous() if service is not None else Principal(ANONYMOUS)
        http_request.state.principal = principal
    return principal


def admission_for(http_request: Request, surface: Surface) -> Admission:
    """An endpoint's admission (``/v1/route``, ``/v1/routing/evaluate``): its caller and the app's service."""
    service = getattr(http_request.app.state, "service", None)
    request_id = getattr(http_request.state, "request_id", None) or ""
    return Admission(service, principal_of(http_request), surface, request_id)


class GatedStream(ClosingStream):
    """The route's stream, recorded, and closed however it ends, so the work behind it stops."""

    def __init__(self, original: StreamingResponse, body: AsyncIterator[Any], cache_state: str) -> None:
        super().__init__(body, status_code=original.status_code, background=original.background)
        self.raw_headers = list(original.raw_headers)
        self.headers[CACHE_HEADER] = cache_state


def _experts_of(body: dict[str, Any]) -> list[str]:
    metadata = body.get("moesaic") or {}
    if "expert" in metadata:
        return [str(metadata["expert"])]
    return [str(name) for name in (metadata.get("decision") or {}).get("experts", [])]


def _partial(body: dict[str, Any]) -> bool:
    """A partial answer (some experts failed) is served once, never cached."""
    return bool((body.get("moesaic") or {}).get("partial"))
