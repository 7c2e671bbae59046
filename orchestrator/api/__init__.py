"""The OpenAI-compatible HTTP API."""

from orchestrator.api.app import create_app

__all__ = ["create_app"]
