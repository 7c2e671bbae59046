"""Errors in OpenAI's shape, with the status that tells a client whose fault it was.

400 a malformed request or a field with an invalid value (``param`` names it; OpenAI, vLLM and
the LiteLLM proxy answer 400 too, so clients catch ``BadRequestError``), 404 unknown model or path,
502 every model call failed upstream, 503 no healthy expert. A 500 means a bug of ours;
a client's mistake never produces one.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


RETRY_UNAVAILABLE_S = 5  # Retry-After of a 503: the pool re-reads its experts' health every few seconds


class APIError(Exception):
    """An error to send to the client as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 429, WWW-Authenticate on a 401

    @classmethod
    def unavailable(cls, message: str, code: str) -> APIError:
        """A 503: nothing can answer now (an expert's replicas are gone, its circuit is open, none is healthy);
        ``Retry-After`` says when trying again may help."""
        return cls(503, message, "service_unavailable", code=code, headers={"Retry-After": str(RETRY_UNAVAILABLE_S)})

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(status_code=self.status, content=self.body(), headers={**self.headers, **(headers or {})})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def from_validation_error(error: ValidationError | RequestValidationError) -> APIError:
    """400 naming the first bad field, listing all of them in the message."""
    problems = error.errors()
    descriptions = []
    for problem in problems:
        where = ".".join(str(part) for part in problem["loc"] if part != "body") or "body"
        descriptions.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
    first = problems[0]["loc"] if problems else ()
    param = ".".join(str(part) for part in first if part != "body") or None
    return APIError(400, "invalid request: " + "; ".join(descriptions), param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        return from_validation_error(error).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return APIError(error.status_code, str(error.detail), kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return APIError(500, f"internal error: {type(error).__name__}: {error}", "internal_error").response()
