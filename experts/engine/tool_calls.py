"""Tool calls on our engine: a forced call held to a JSON Schema by the grammar, and read back as OpenAI's calls.

When a request offers ``tools`` and forces a call (``tool_choice: "required"`` or a named function), the answer must
be a call: the grammar (``grammar.py``, as for ``response_format``) holds the model to the JSON of the call, so the
call is well-formed and names a function that exists whatever the model, SmolLM2 included:

* a named function: ``{"name": <that name>, "arguments": <its parameters' schema>}``;
* ``required``: a list of such calls, any offered function each, at least one and at most as many as there are
  offered functions (a small model left unbounded repeats calls until ``max_tokens``), one when the request says
  ``parallel_tool_calls: false``.

``tool_choice: "auto"`` (or none given) and ``"none"`` leave the model free: our engine has no tool parser, so it
answers in text (as vLLM's engine does without ``options.tool_parser``).

Runs in: the expert's actor (the ``local`` and ``moe`` backends).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from experts.types import ToolCall

ANY_ARGUMENTS: dict[str, Any] = {"type": "object"}


def forced_call_schema(
    tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any, parallel: bool | None = None
) -> dict[str, Any] | None:
    """The JSON Schema a forced call must match; None when the request forces no call."""
    if not tools:
        return None
    functions = {
        tool["function"]["name"]: tool["function"] for tool in tools if tool.get("type", "function") == "function"
    }
    if isinstance(tool_choice, Mapping):
        name = tool_choice.get("function", {}).get("name")
        return _call(name, functions[name]) if name in functions else None
    if tool_choice != "required" or not functions:
        return None
    one_call = {"anyOf": [_call(name, function) for name, function in functions.items()]}
    most = 1 if parallel is False else len(functions)
    return {"type": "array", "items": one_call, "minItems": 1, "maxItems": most}


def _call(name: str, function: Mapping[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters") or ANY_ARGUMENTS
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def calls_from_text(text: str) -> tuple[ToolCall, ...]:
    """The calls in a forced answer (one call object, or a list of them); () when the text holds none (it was cut
    short by max_tokens: the caller sees the text and ``finish_reason: length``)."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return ()
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return ()
        arguments = json.dumps(item.get("arguments", {}), ensure_ascii=False)
        calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=item["name"], arguments=arguments))
    return tuple(calls)
