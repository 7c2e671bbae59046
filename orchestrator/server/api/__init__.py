"""The OpenAI-compatible HTTP API: ``create_app`` builds the FastAPI application over an ``Orchestrator``.

Runs in: the serving process. May import: ``orchestrator.server.service``, ``orchestrator.server.observability``,
``orchestrator.server.errors``, ``orchestrator.pipeline``, ``router``, ``experts`` (config, types, errors,
pricing, the pool's client protocol).
"""

from orchestrator.server.api.app import create_app

__all__ = ["create_app"]
