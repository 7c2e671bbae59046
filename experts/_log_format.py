"""Log lines for machines (one JSON object per line) or for people (text), in any process.

It lives in ``experts`` because the expert actors run in Ray workers, possibly on other
machines where only this package travels; the API process uses the same formatters through
``orchestrator.server.observability.logs``. Each JSON line has ``ts`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, ``request_id`` (null when the line belongs to no request) and every
``extra={...}`` field the call passed. The format and level reach the workers through
``MOESAIC_LOG_FORMAT`` and ``MOESAIC_LOG_LEVEL``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]
FORMAT_ENV, LEVEL_ENV = "MOESAIC_LOG_FORMAT", "MOESAIC_LOG_LEVEL"
_HANDLER_MARK = "_moesaic_handler"
# libraries that log every call at INFO (LiteLLM: each completion; httpx: each HTTP request): WARNING unless DEBUG
_CHATTY = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore")
# attributes every LogRecord has; anything else on a record came from ``extra``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# written elsewhere in the line, or a duplicate (uvicorn's ANSI-coloured copy of the message)
_NOT_EXTRA = {"request_id", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values JSON cannot hold are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        payload.update(extra_fields(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = record.stack_info
        return json.dumps(payload, default=str)  # ASCII-escaped: a stray surrogate cannot break the stream


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger [request id] message key=value ...`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        text = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        return f"{text} {extras}" if extras else text


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call added with ``extra={...}``."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and key not in _NOT_EXTRA and not key.startswith("_")
    }


def configure_logging(
    log_format: LogFormat = "json",
    level: str = "INFO",
    stream: TextIO | None = None,
    filters: Iterable[logging.Filter] = (),
) -> logging.Handler:
    """Route every logger through one handler on the root logger (replacing a previous call's); returns it."""
    if log_format not in ("json", "text"):
        raise ValueError(f"log format must be 'json' or 'text', not {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    for log_filter in filters:
        handler.addFilter(log_filter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING)
    return handler


def configure_from_env() -> logging.Handler:
    """In a worker process: the format and level the serving process exported (default JSON at INFO)."""
    log_format = os.environ.get(FORMAT_ENV, "json")
    return configure_logging("text" if log_format == "text" else "json", os.environ.get(LEVEL_ENV, "INFO"))
