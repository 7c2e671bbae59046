"""The OpenAI-compatible HTTP API: ``create_app`` builds the FastAPI application over an ``Orchestrator``."""

from orchestrator.server.api.app import create_app

__all__ = ["create_app"]
