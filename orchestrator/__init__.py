"""Orchestrator: how requests reach the experts.

- ``pipeline/``: one request (or a batch) through route, experts and aggregation;
- ``server/``: the HTTP API and everything around it (gate, stores, observability);
- ``cli/``: the ``moesaic`` command;
- ``integrations/``: Ray Serve, LangGraph/LangChain, MCP.

Dependencies point one way: cli and integrations → server → pipeline → router / aggregator → experts.
"""
