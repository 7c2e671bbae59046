"""Orchestrator: the pipeline graph, the HTTP API, the CLI and their settings."""
