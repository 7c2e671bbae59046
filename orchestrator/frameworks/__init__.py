"""Moesaic inside other frameworks: Ray Serve (``serve_app``), LangGraph/LangChain (``langgraph_export``), MCP.

Runs in: the host framework's process. May import: ``orchestrator.pipeline``, ``orchestrator.server`` (the Serve
ingress wraps the HTTP app), ``experts.config``.
"""
