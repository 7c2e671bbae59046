"""Schemas shared by the tests of schema limits (``test_schema_limits.py``) and of compiled grammars
(``test_grammar_limits.py``): builders, and the patterns measured for issue 27, row 5."""

from __future__ import annotations

import json
from typing import Any

from experts._schema_limits import SchemaLimits

WHERE = "response_format.json_schema.schema"
UNLIMITED_PATTERNS = SchemaLimits(max_pattern_cost=10**12)
# The two schemas measured before patterns had a limit (xgrammar 0.2.9, SmolLM2's tokenizer): 3-6 s, and minutes.
NESTED = "^([a-z]{1,10}){1,10}$"
NESTED_DEEPER = "^(([a-z]{1,10}){1,10}){1,3}$"
UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def compact_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def with_fields(count: int, kind: str = "integer") -> dict[str, Any]:
    properties = {f"field_{i}": {"type": kind} for i in range(count)}
    return {"type": "object", "properties": properties, "required": list(properties)}


def json_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def with_pattern(pattern: str) -> dict[str, Any]:
    """The schema the compile times were measured with: one required string property ``x`` with ``pattern``."""
    return {"type": "object", "properties": {"x": {"type": "string", "pattern": pattern}}, "required": ["x"]}


def nested(levels: int, inner: Any = None) -> Any:
    """A JSON document ``levels`` objects deep (built without recursion)."""
    value: Any = {} if inner is None else inner
    for _ in range(levels - 1):
        value = {"a": value}
    return value
