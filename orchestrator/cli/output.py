"""What every command prints through: the console, the error console, and ``fail`` (print the error, exit 2)."""

from __future__ import annotations

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
