"""What every command prints through: the console, the error console, and ``fail`` (print the error, exit 2).

With ``--json`` a command's stdout is one JSON document and nothing else: ``json_output`` sends whatever it prints for
people (tables, "wrote FILE") to stderr while it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (2: the user's input was wrong)."""
    # the message is plain text: escaped, so that brackets in it (moesaic[plot], experts[0]) are printed, not markup
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def json_output(active: bool) -> Iterator[None]:
    """While ``active`` (the command's ``--json``): the console prints to stderr, leaving stdout to the JSON."""
    if not active:
        yield
        return
    console.file = sys.stderr
    try:
        yield
    finally:
        console.file = None  # type: ignore[assignment]  # back to whatever sys.stdout is then
