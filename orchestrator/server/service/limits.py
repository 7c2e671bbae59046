"""Limits and backpressure: request size, concurrent requests, a bounded waiting line.

``LimitsMiddleware`` (ASGI, so it sees the raw byte stream and holds a slot for the whole
response, streamed ones included) applies three rules:

* a body over ``max_body_bytes`` gets 413: at once when ``Content-Length`` says so, otherwise
  while it is read (a chunked upload is counted and cut off; nothing past the limit is kept);
* at most ``max_concurrent`` ``POST /v1/*`` requests run at once; the next ``max_queue`` wait
  in line (first come, first served) up to ``queue_timeout_s`` for a slot;
* a full line, or a wait that times out, gets 429 ``server_overloaded`` with ``Retry-After``.

So memory is bounded by the slots and the line, whatever the load. ``GET`` requests
(``/v1/models``, ``/healthz``, ``/metrics``) never wait: probes keep answering under load.
``RequestLimits.drained`` lets the app's shutdown wait for the requests still in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.server.errors import APIError
from orchestrator.server.service.auth import is_guarded, routed_path, service_of
from orchestrator.server.service.service_config import LimitsSection


class BodyTooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body is larger than {limit} bytes (limits.max_body_bytes); send a shorter prompt",
            code="request_too_large",
        )


class Overloaded(APIError):
    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        retry = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
        super().__init__(429, message, "overloaded_error", code="server_overloaded", headers=retry)


class RequestLimits:
    """Slots for concurrent requests and a bounded first-come-first-served line for them.

    Counters (read by ``/metrics``): ``in_flight`` holding a slot, ``queued`` waiting for one,
    ``rejected`` turned away with 429, ``too_large`` turned away with 413.
    """

    def __init__(self, settings: LimitsSection) -> None:
        self.settings = settings
        self.in_flight = 0
        self.rejected = 0
        self.too_large = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in line if needed; raise ``Overloaded`` when the line is full or too slow."""
        settings = self.settings
        if self.in_flight < settings.max_concurrent and not self._waiters:
            self._take()
            return
        if len(self._waiters) >= settings.max_queue:
            self.rejected += 1
            raise Overloaded(
                f"server busy: {self.in_flight} requests running and {len(self._waiters)} waiting "
                f"(limits.max_concurrent {settings.max_concurrent}, limits.max_queue {settings.max_queue}); "
                "retry after the Retry-After seconds"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._idle.clear()
        try:
            async with asyncio.timeout(settings.queue_timeout_s):
                await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived as we gave up: hand it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            self._check_idle()
            if isinstance(error, TimeoutError):
                self.rejected += 1
                raise Overloaded(
                    f"server busy: no slot within {settings.queue_timeout_s:g} s (limits.queue_timeout_s); retry later"
                ) from None
            raise

    def release(self) -> None:
        """Give the slot to the first in line that still waits, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; in_flight stays the same
                return
        self.in_flight -= 1
        self._check_idle()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until nothing is running or waiting (at most ``timeout_s``); True when drained."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _take(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _check_idle(self) -> None:
        if self.in_flight == 0 and not self._waiters:
            self._idle.set()


class LimitsMiddleware:
    """ASGI middleware applying ``app.state.service.limits`` (pass-through until the lifespan built it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = service_of(scope)
        if service is None:
            await self.app(scope, receive, send)
            return
        limits: RequestLimits = service.limits
        max_bytes = limits.settings.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            limits.too_large += 1
            await BodyTooLarge(max_bytes).response()(scope, receive, send)
            return
        queued = scope["method"] == "POST" and is_guarded(routed_path(scope))
        if queued:
            try:
                await limits.acquire()
            except Overloaded as error:
                await error.response()(scope, receive, send)
                return
        try:
            await self._counted(scope, receive, send, limits, max_bytes)
        finally:
            if queued:
                limits.release()

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limits: RequestLimits, max_bytes: int) -> None:
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    limits.too_large += 1
                    raise BodyTooLarge(max_bytes)  # the app's APIError handler answers 413
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as error:  # read outside a route (no handler there): answer it here
            if started:
                raise
            await error.response()(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
