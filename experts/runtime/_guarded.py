"""``GuardedExpert``: one expert's calls with its timeout, retries, circuit breaker and actor restarts.

Every call from the pool goes through here. A call is one or more *tries*:

1. the circuit breaker must let the try through (an open circuit fails the call at once with
   ``ExpertUnavailable``, so routing recruits someone else);
2. the try runs on the expert (``ExpertLink``: its actor, or its Serve deployment) within the expert's
   ``resilience.timeout_s``;
3. its outcome goes to the breaker: a success, a failure, or neither for a caller's mistake;
4. a transient failure (``experts.runtime._retry``) is tried again after an exponential, jittered
   wait, or, when the actor died, once its replacement is ready; a stream only until its
   first piece went out (after that the caller already holds part of an answer).

A try abandoned by its caller (cancelled) gives the breaker no verdict.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from experts.config import ResilienceSpec
from experts.errors import ErrorCode, ExpertCallFailed, ExpertUnavailable
from experts.runtime._breaker import CircuitBreaker, Ticket
from experts.runtime._link import ExpertLink
from experts.runtime._retry import Backoff, is_client_mistake, is_transient
from experts.types import Completion, GenerationRequest

log = logging.getLogger(__name__)

Outcome = Completion | ExpertCallFailed


class GuardedExpert:
    """Retries, breaker and restarts around one ``ExpertLink``."""

    def __init__(
        self,
        handle: ExpertLink,
        settings: ResilienceSpec,
        max_batch_size: int,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.handle = handle
        self.settings = settings
        self.max_batch_size = max_batch_size
        self.breaker = CircuitBreaker(settings.breaker, clock)
        self.backoff = Backoff(settings.retry, rng or random.Random())
        self._sleep = sleep
        self.retries = 0  # tries after the first, over the expert's life (health, metrics)

    @property
    def name(self) -> str:
        return self.handle.name

    def available(self) -> bool:
        """Routable: the actor is ready and the circuit lets calls through."""
        return self.handle.ready and self.breaker.available()

    def why_unavailable(self) -> str:
        if self.handle.restarting:
            return "its actor is restarting"
        if not self.handle.ready:
            return str(self.handle.report.get("error") or "not started")
        return f"circuit open after repeated failures; a probe call is let through in {self.breaker.retry_in_s():.1f} s"

    # -- calls -----------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> Completion:
        outcome: Outcome | None = None
        for attempt in range(1, self.backoff.attempts + 1):
            ticket = self._ticket(attempt)
            if ticket is None:
                break
            outcome = await self._try(ticket, self.handle.call("generate", request, timeout_s=self.settings.timeout_s))
            if not await self._again(attempt, _code(outcome)):
                break
        return _result(outcome)

    async def generate_batch(self, requests: list[GenerationRequest]) -> list[Completion | ExpertCallFailed]:
        """One actor call for all of ``requests``; tries again only the ones that failed transiently."""
        if not requests:
            return []
        results: list[Outcome] = []
        pending = list(range(len(requests)))
        for attempt in range(1, self.backoff.attempts + 1):
            ticket = self._ticket(attempt)
            if ticket is None:
                break
            outcomes = await self._try_batch(ticket, [requests[index] for index in pending])
            if not results:
                results = list(outcomes)
            for index, outcome in zip(pending, outcomes):
                results[index] = outcome
            pending = [index for index, outcome in zip(pending, outcomes) if is_transient(_code(outcome))]
            if not pending or not await self._again(attempt, _code(results[pending[0]])):
                break
        return results

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        """The actor's pieces, then its ``Completion``; retried only while nothing has been sent."""
        outcome: Outcome | None = None
        for attempt in range(1, self.backoff.attempts + 1):
            ticket = self._ticket(attempt)
            if ticket is None:
                break
            sent = False
            try:
                async with aclosing(self.handle.stream(request, self.settings.timeout_s)) as items:
                    async for item in items:
                        if isinstance(item, str):
                            sent = True
                            yield item
                            continue
                        outcome = item
                        break
                    else:
                        outcome = ExpertCallFailed(f"expert {self.name!r} ended its stream without a completion")
            except ExpertCallFailed as error:
                outcome = error
            except BaseException:
                self.breaker.release(ticket)  # cancelled, or the consumer stopped listening
                raise
            self._settle(ticket, outcome)
            if sent or not await self._again(attempt, _code(outcome)):
                break
        result = _result(outcome)
        yield result

    async def control(self, action: str) -> dict[str, Any]:
        """Load, park or unload (residency): one try, no timeout (loading takes what it takes)."""
        if not self.handle.ready:
            raise ExpertUnavailable(f"expert {self.name!r} is not healthy: {self.why_unavailable()}")
        try:
            return await self.handle.call(action)
        except ExpertCallFailed as error:
            raise ExpertCallFailed(f"expert {self.name!r} could not {action}: {error}", error.code) from error

    # -- the pieces ------------------------------------------------------------------------
    def _ticket(self, attempt: int) -> Ticket | None:
        """The breaker's permission for a try; the first refusal fails the call, later ones end the retries."""
        ticket = self.breaker.try_acquire()
        if ticket is None and attempt == 1:
            raise ExpertUnavailable(f"expert {self.name!r} is not healthy: {self.why_unavailable()}")
        if ticket is None:
            log.warning("expert %s: circuit opened; no more retries", self.name)
        return ticket

    async def _try(self, ticket: Ticket, call: Awaitable[Any]) -> Outcome:
        try:
            outcome: Outcome = await call
        except ExpertCallFailed as error:
            outcome = error
        except BaseException:
            self.breaker.release(ticket)
            raise
        self._settle(ticket, outcome)
        return outcome

    async def _try_batch(self, ticket: Ticket, requests: list[GenerationRequest]) -> list[Outcome]:
        groups = math.ceil(len(requests) / self.max_batch_size)
        timeout = None if self.settings.timeout_s is None else self.settings.timeout_s * groups
        try:
            raw = await self.handle.call("generate_batch", requests, timeout_s=timeout)
        except ExpertCallFailed as error:
            self._settle(ticket, error)
            return [error] * len(requests)
        except BaseException:
            self.breaker.release(ticket)
            raise
        outcomes: list[Outcome] = [
            item
            if isinstance(item, Completion)
            else ExpertCallFailed(f"expert {self.name!r} failed: {type(item).__name__}: {item}")
            for item in raw
        ]
        # the expert is failing when nothing came back; a single bad item is that request's problem
        faults = [outcome for outcome in outcomes if _expert_fault(outcome)]
        if outcomes and len(faults) == len(outcomes):
            self.breaker.failure(ticket)
        else:
            self.breaker.success(ticket)
        return outcomes

    def _settle(self, ticket: Ticket, outcome: Outcome | None) -> None:
        if outcome is not None and _expert_fault(outcome):
            self.breaker.failure(ticket)
        else:
            self.breaker.success(ticket)

    async def _again(self, attempt: int, code: str | None) -> bool:
        """Whether to try again after a failure with ``code``; waits (backoff, or for the restart) first."""
        if not is_transient(code) or attempt >= self.backoff.attempts:
            return False
        self.retries += 1
        if code == ErrorCode.ACTOR_DIED:
            wait = self.settings.timeout_s or self.handle.start_timeout_s
            if not await self.handle.wait_restarted(wait):
                log.warning("expert %s: actor not ready again within %.1f s; no more retries", self.name, wait)
                return False
            log.info("expert %s: actor restarted; try %d", self.name, attempt + 1)
            return True
        delay = self.backoff.delay(attempt)
        log.info("expert %s: %s; try %d in %.2f s", self.name, code, attempt + 1, delay)
        await self._sleep(delay)
        return True


def _code(outcome: Outcome | None) -> str | None:
    if isinstance(outcome, ExpertCallFailed):
        return outcome.code
    if isinstance(outcome, Completion):
        return outcome.error_code if outcome.error is not None else None
    return None


def _expert_fault(outcome: Outcome) -> bool:
    """A failure held against the expert: anything but a success or the caller's mistake."""
    code = _code(outcome)
    failed = isinstance(outcome, ExpertCallFailed) or outcome.error is not None
    return failed and not is_client_mistake(code)


def _result(outcome: Outcome | None) -> Completion:
    if isinstance(outcome, ExpertCallFailed):
        raise outcome
    assert outcome is not None, "a call makes at least one try"
    return outcome
