"""The OpenAI-compatible HTTP API."""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing a submodule (orchestrator.api.errors, used by orchestrator.service)
    # does not import the whole app, which imports orchestrator.service in turn.
    if name == "create_app":
        from orchestrator.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
