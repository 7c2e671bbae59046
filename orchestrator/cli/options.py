"""Options several commands share, each with its environment variable (a flag beats the variable, which beats the
default; ``--help`` shows both)."""

from __future__ import annotations

from typing import Any

import typer

POOL_HELP = "pool file path, or a name in deploy/pools"


def pool_option() -> Any:
    """``--pool/-p``, or ``MOESAIC_POOL``; default: the embedded pool."""
    return typer.Option("default", "--pool", "-p", envvar="MOESAIC_POOL", help=POOL_HELP)


def ray_address_option() -> Any:
    """``--ray-address``, or ``MOESAIC_RAY_ADDRESS``; default: start a local Ray instance."""
    return typer.Option(
        None, "--ray-address", envvar="MOESAIC_RAY_ADDRESS", help="join this Ray cluster instead of starting one"
    )


def version_text() -> str:
    """``moesaic <installed version>`` (the distribution's metadata, so it matches what pip installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"moesaic {version('moesaic')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "moesaic (not installed: run `make install`)"
