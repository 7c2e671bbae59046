"""One admission path for every way in: a request under its API key's controls, from arrival to its bill.

Chat completions (the pipeline, one expert, ``moesaic.experts``), ``/v1/route``, ``/v1/routing/evaluate`` and
the MCP tools all pass the same steps, in this order:

1. ``count_request``: the key's requests-per-minute limit, before the body is even parsed, so a key over its
   limit gets 429 however malformed its bodies are (and a flood of invalid bodies costs no parsing);
2. ``allow`` / ``grant``: the key's model patterns, each named expert checked as ``expert/<name>`` (403), and
   the permissions some endpoints need (``routing.evaluate``);
3. ``check_max_tokens``: the key's and the service's ``max_tokens`` cap (400);
4. ``reserve``: the request's worst case (``WorkEstimate``: every call it may make, each at the prompt plus
   ``max_tokens``) against the key's tokens-per-minute limit and its daily budget, both held at once so
   concurrent requests see each other (429);
5. ``settle``: once the work ends, however it ends, the held tokens and dollars are replaced by what the calls
   really used (a ``Bill`` from the request's ``CallLedger``);
6. ``journal``: one record per request; a body that failed validation is kept as a short record (its size and
   digest, the error), never whole.

``Admission`` works without a ``ServiceState`` (an app whose lifespan has not run, ``moesaic mcp`` over stdio):
every check then passes and nothing is recorded, except the model patterns of the principal.

Runs in: the serving process (the API app, a Serve replica, ``moesaic mcp``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.pipeline.ledger import Bill
from orchestrator.server.errors import APIError
from orchestrator.server.service.auth import Principal
from orchestrator.server.service.journal import JournalEntry
from orchestrator.server.service.service_config import Permission
from orchestrator.server.service.service_state import ServiceState
from orchestrator.server.service.spend import Reservation, dollars


class Surface(StrEnum):
    """The way a request came in (the journal's ``surface``)."""

    CHAT = "chat.completions"
    ROUTE = "route"
    ROUTING_EVALUATE = "routing.evaluate"
    MCP_ASK = "mcp.ask"
    MCP_ROUTE = "mcp.route"
    MCP_EXPERTS = "mcp.experts"


@dataclass(frozen=True)
class WorkEstimate:
    """The most a request can use before it runs: model calls, tokens (prompts plus ``max_tokens``), dollars."""

    calls: int = 0
    tokens: int = 0
    usd: float = 0.0

    def describe(self) -> str:
        cost = f", up to {dollars(self.usd)}" if self.usd > 0 else ""
        return f"up to {self.calls} model call{'s' if self.calls != 1 else ''}, about {self.tokens} tokens{cost}"


NOTHING = WorkEstimate()


def rejected_body(raw: bytes, error: APIError | None) -> dict[str, Any]:
    """What the journal keeps of a request refused before its work: the body's size and digest, and why."""
    return {
        "rejected_body": {
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "code": error.code if error is not None else None,
            "param": error.param if error is not None else None,
        }
    }


class Admission:
    """One request on its way through its key's controls; see the module docstring for the order of the steps."""

    def __init__(
        self, service: ServiceState | None, principal: Principal, surface: Surface, request_id: str = ""
    ) -> None:
        self.service = service
        self.principal = principal
        self.surface = surface
        self.request_id = request_id
        self.started = time.time()
        self._clock = time.perf_counter()
        self.model = ""  # what the journal and the 403s name
        self._held_tokens = 0  # counted against tokens per minute, until settled
        self._reservation: Reservation | None = None  # held against the daily budget, until settled
        self.admitted = False  # past every check (``reserve`` done): from here on the journal keeps the whole request
        self._settled = False
        self._journaled = False

    # -- before the body ---------------------------------------------------------------------------------------
    async def count_request(self) -> None:
        """429 when the key has used its requests per minute (counted whatever the body turns out to be)."""
        principal = self.principal
        if self.service is None or principal.requests_per_minute is None:
            return
        decision = await self.service.rate_limiter.acquire(principal.key_name, principal.requests_per_minute, None, 0)
        if not decision.allowed:
            raise self._rate_limited("requests", principal.requests_per_minute, "", decision.retry_after_s)

    # -- what the request asks for -----------------------------------------------------------------------------
    def allow(self, models: Iterable[str], param: str = "model") -> None:
        """403 unless the key may use every model named (``expert/<name>`` for each expert a request names)."""
        for model in models:
            if not self.principal.allows(model):
                raise APIError(
                    403,
                    f"API key {self.principal.key_name!r} may not use model {model!r}; it may use "
                    f"{', '.join(self.principal.models)}",
                    "permission_error",
                    param=param,
                    code="model_not_allowed",
                )

    def grant(self, permission: Permission) -> None:
        """403 unless the key holds ``permission`` (``permissions: [...]`` in its record)."""
        if permission not in self.principal.permissions:
            raise APIError(
                403,
                f"API key {self.principal.key_name!r} lacks the permission {permission.value!r}; an operator "
                f"grants it with `permissions: [{permission.value}]` in the key's record",
                "permission_error",
                code="permission_denied",
            )

    def max_tokens_cap(self) -> tuple[int, str]:
        """The most ``max_tokens`` one call may ask for, and which setting says so."""
        if self.service is None:
            return 32768, "the largest max_tokens any expert accepts"
        cap, why = self.service.config.limits.max_tokens, "the service's limits.max_tokens"
        if self.principal.max_tokens is not None and self.principal.max_tokens < cap:
            cap, why = self.principal.max_tokens, f"API key {self.principal.key_name!r}'s max_tokens"
        return cap, why

    def check_max_tokens(self, asked: int | None, param: str) -> None:
        """400 when ``asked`` is over the cap (``None``: nothing asked, nothing to check)."""
        cap, why = self.max_tokens_cap()
        if asked is not None and asked > cap:
            raise APIError(400, f"{param} {asked} is more than {why} ({cap})", param=param, code="max_tokens_exceeded")

    # -- the work's worst case, held -------------------------------------------------------------------------
    async def reserve(self, estimate: WorkEstimate) -> None:
        """Hold ``estimate`` against the key's tokens per minute and daily budget; 429 when either has no room. The
        last check: the request is admitted once it passes."""
        if self.service is None:
            self.admitted = True
            return
        principal = self.principal
        if principal.tokens_per_minute is not None and estimate.tokens > 0:
            decision = await self.service.rate_limiter.acquire(
                principal.key_name, None, principal.tokens_per_minute, estimate.tokens
            )
            if not decision.allowed:
                detail = f" (this request counts {estimate.describe()})"
                raise self._rate_limited("tokens", principal.tokens_per_minute, detail, decision.retry_after_s)
            self._held_tokens = estimate.tokens
        if principal.budget_usd_per_day is not None:
            await self._reserve_budget(estimate, principal.budget_usd_per_day)
        self.admitted = True

    def _rate_limited(self, limit: str, per_minute: int, detail: str, retry_after_s: float) -> APIError:
        """The 429 of a spent minute: which limit (``requests`` or ``tokens``, the error's type), and when to retry."""
        retry = max(1, math.ceil(retry_after_s))
        return APIError(
            429,
            f"rate limit reached for API key {self.principal.key_name!r}: {per_minute} {limit} per minute{detail}; "
            f"retry in {retry} s",
            limit,
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry)},
        )

    async def _reserve_budget(self, estimate: WorkEstimate, budget: float) -> None:
        assert self.service is not None
        spend, name = self.service.spend, self.principal.key_name
        reservation = await spend.reserve(name, estimate.usd, budget)
        if reservation.granted:
            self._reservation = reservation
            return
        await self._release_tokens()  # refused: the tokens held a moment ago are not used either
        spend.rejected += 1
        reset = max(1, math.ceil(spend.seconds_until_reset()))
        if reservation.spent >= budget:
            message = f"API key {name!r} spent {dollars(reservation.spent)} of its {dollars(budget)} daily budget"
        else:
            message = (
                f"API key {name!r} has {dollars(budget - reservation.spent)} of its {dollars(budget)} daily budget "
                f"left, and this request may cost {dollars(estimate.usd)} ({estimate.describe()}); ask for fewer "
                "max_tokens, experts (moesaic.k) or choices (n)"
            )
        raise APIError(
            429,
            f"{message}; it resets at 00:00 UTC (in {reset} s)",
            "insufficient_quota",  # OpenAI's type for a spent quota: retrying before the reset does not help
            code="budget_exceeded",
            headers={"Retry-After": str(reset)},
        )

    # -- after the work ------------------------------------------------------------------------------------------
    async def settle(self, bill: Bill | None) -> None:
        """Replace what was held by what the calls used (``None``: nothing ran). Runs once; later calls do nothing."""
        if self._settled or self.service is None:
            return
        self._settled = True
        used = bill if bill is not None else Bill(0, 0.0, 0)
        principal = self.principal
        if self._held_tokens:
            held, self._held_tokens = self._held_tokens, 0
            await self.service.rate_limiter.settle(principal.key_name, principal.tokens_per_minute, held, used.tokens)
        if self._reservation is not None:
            await self.service.spend.settle(principal.key_name, self._reservation, used.usd)
        elif principal.budget_usd_per_day is not None and used.usd > 0:
            await self.service.spend.add(principal.key_name, used.usd)  # work admitted before any reservation

    async def _release_tokens(self) -> None:
        if self._held_tokens and self.service is not None:
            held, self._held_tokens = self._held_tokens, 0
            await self.service.rate_limiter.settle(self.principal.key_name, self.principal.tokens_per_minute, held, 0)

    async def journal(
        self,
        status: int,
        request: dict[str, Any] | None,
        response: dict[str, Any] | None,
        error: str | None,
        cache_hit: bool = False,
    ) -> None:
        """Record the request once (the first call wins; later ones do nothing)."""
        if self._journaled or self.service is None or self.service.journal is None:
            return
        self._journaled = True
        entry = JournalEntry(
            request_id=self.request_id,
            key_name=self.principal.key_name,
            model=self.model or str((request or {}).get("model", "")),
            request=request or {},
            status=status,
            response=response,
            error=error,
            started=self.started,
            duration_ms=round((time.perf_counter() - self._clock) * 1000, 3),
            cache_hit=cache_hit,
            surface=self.surface.value,
        )
        await self.service.journal.append(entry)
