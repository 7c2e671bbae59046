"""The ``moesaic`` command: one module per command group, the shared console helpers in ``output``.

Runs in: the user's shell process. May import: ``orchestrator.pipeline``, ``orchestrator.server`` (``serve``),
``orchestrator.frameworks`` (``mcp``), ``router``, ``aggregator``, ``experts``.

Public surface: ``app`` (the typer application) and ``main``; ``python -m orchestrator.cli`` runs it.
"""

from orchestrator.cli.main import app, main

__all__ = ["app", "main"]
