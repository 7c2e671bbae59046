"""``GET /console`` (the page) and ``GET /console/static/<file>`` (its script and style), from the package's files.

The page holds no data: everything it shows comes from ``/v1`` calls made with the user's key, so the page itself
is served without one (like ``/docs``). Every answer carries a content security policy that lets the page load
scripts, styles and data from this origin only, and never be framed.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a new release's files are picked up on the next load
}


class _SecuredFiles(StaticFiles):
    """Starlette's static files, with the console's security headers on every answer."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, with_headers)


async def _page(_: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


async def _slash(_: Request) -> Response:
    return RedirectResponse("/console", status_code=308)


def console_routes() -> list[BaseRoute]:
    """The console's routes, for ``create_app`` to add (outside ``/v1``: no key needed to load the page)."""
    return [
        Route("/console", _page, methods=["GET", "HEAD"], include_in_schema=False),
        Route("/console/", _slash, methods=["GET", "HEAD"], include_in_schema=False),
        Mount("/console/static", app=_SecuredFiles(directory=STATIC), name="console-static"),
    ]
