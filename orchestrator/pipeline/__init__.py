"""The pipeline: a request through route, experts and aggregation, as a LangGraph graph or as a batch.

Runs in: the driver (the API server, the CLI, batch mode, the Serve replica). May import: ``router``,
``aggregator``, ``experts.runtime`` (the pool), ``experts.config``, ``experts.types``; never ``orchestrator.server``.

Public surface: ``Orchestrator`` (``orchestrator``: run, stream, route, one expert directly), ``PipelineRequest`` and
``PipelineResult`` (``state``); inside: ``graph`` (the nodes and their wiring), ``escalation`` (the review after a
first stage), ``replacements``, ``tool_calls``, ``batch`` and ``batch_io`` (batch mode on the same rules).
"""
