"""Work raced against its client going away: when the client disconnects first, the work is cancelled.

A request's work (the pipeline and its expert calls, a routing evaluation's worker process) runs as a task while
the request's ``receive`` channel is watched; the body has been read already, so the next message there is the
disconnect. Cancelling the task reaches the expert calls' Ray tasks, or kills the evaluation's worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from orchestrator.server.errors import APIError

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection first": journal only


class ClientDisconnected(APIError):
    def __init__(self) -> None:
        super().__init__(CLIENT_CLOSED, "the client closed the connection; the work was cancelled", code="client_gone")


async def unless_disconnected(work: Awaitable[T], receive: Receive) -> T:
    """Await ``work`` as a task; if the client disconnects first, cancel it and raise ``ClientDisconnected``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the handler itself is cancelled
        if not task.done():
            task.cancel()
        watcher.cancel()
    if task.cancelled() or not task.done():
        await asyncio.gather(task, return_exceptions=True)  # let the cancellation reach the work
        raise ClientDisconnected()
    return task.result()


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone (the body is already read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
