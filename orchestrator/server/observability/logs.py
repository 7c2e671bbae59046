"""Logging for the API process: the shared formatters plus the request id of the current request.

``configure_logging`` installs one handler on the root logger, so our loggers, uvicorn's and
the libraries' come out in one format (``experts._log_format``: JSON lines or text). A
``RequestIdFilter`` stamps each record with the id of the request being handled in this
context, so a line logged anywhere inside a request (a graph node, the aggregator) carries it
without being told. ``export_for_workers`` hands the same choice to the Ray workers that this
process starts, where the expert actors log each batch with the ids of its requests.
"""

from __future__ import annotations

import logging
import os
from typing import TextIO

from experts import FORMAT_ENV, LEVEL_ENV, LogFormat
from experts import configure_logging as configure_handler
from orchestrator.server.observability.context import current_request_id

ACCESS_LOGGER = "moesaic.access"


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` from the context when the call did not pass one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


def configure_logging(log_format: LogFormat = "json", level: str = "INFO", stream: TextIO | None = None) -> None:
    """One handler on the root logger in ``log_format``, stamping every line with its request's id."""
    configure_handler(log_format, level, stream, filters=[RequestIdFilter()])


def export_for_workers(log_format: LogFormat, level: str) -> None:
    """Let processes started from here (the local Ray instance's workers) log the same way."""
    os.environ[FORMAT_ENV] = log_format
    os.environ[LEVEL_ENV] = level.upper()
