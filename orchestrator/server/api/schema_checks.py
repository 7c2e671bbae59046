"""Bounded schemas at the edge: a request's ``response_format`` schema and its tools' parameters, within the
service's ``limits`` before they reach an expert.

A JSON schema becomes a grammar compiled inside the expert's actor (``experts/engine/grammar.py``), and a hosted
model reads tools as prompt: both cost in proportion to the schema, and the client writes it. So each schema is
held to ``limits.schema_max_bytes``, ``schema_max_depth``, ``schema_max_properties`` and ``schema_max_pattern_cost``
(its regular expressions' expansion), and the whole ``tools`` list to ``limits.tools_max_bytes``; a request over
one gets 400 naming the limit and the field. (The actors apply their own, pool-file limits too: requests reach
them from batch mode as well.)
"""

from __future__ import annotations

import json

from experts import SchemaLimits, SchemaTooLarge, check_schema
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.errors import APIError
from orchestrator.server.service.service_config import LimitsSection


def edge_limits(limits: LimitsSection) -> SchemaLimits:
    """The service config's schema limits as the shared ``SchemaLimits``."""
    return SchemaLimits(
        max_bytes=limits.schema_max_bytes,
        max_depth=limits.schema_max_depth,
        max_properties=limits.schema_max_properties,
        max_pattern_cost=limits.schema_max_pattern_cost,
    )


def check_schemas(body: ChatCompletionRequest, limits: LimitsSection) -> None:
    """400 when ``body``'s response_format schema, a tool's parameters or the tools list is over its limit."""
    bounds = edge_limits(limits)
    try:
        if body.response_format is not None and body.response_format.json_schema is not None:
            schema = body.response_format.json_schema.get("schema")
            check_schema(schema, "response_format.json_schema.schema", bounds)
        for index, tool in enumerate(body.tools or []):
            if tool.function.parameters is not None:
                where = f"tools[{index}].function.parameters"
                check_schema(tool.function.parameters, where, bounds)
    except SchemaTooLarge as error:
        param = error.where.split(".json_schema")[0].split(".function")[0]
        raise APIError(400, str(error), param=param, code="schema_too_large") from None
    if body.tools:
        size = len(json.dumps([tool.model_dump(exclude_none=True) for tool in body.tools], separators=(",", ":")))
        if size > limits.tools_max_bytes:
            raise APIError(
                400,
                f"tools take {size} bytes as JSON, more than the {limits.tools_max_bytes} allowed "
                "(limits.tools_max_bytes); send fewer or shorter tool definitions",
                param="tools",
                code="schema_too_large",
            )
