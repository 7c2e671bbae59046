"""Tool calls on our engine: a forced call held to a JSON Schema by the grammar, and read back as OpenAI's calls.

When a request offers ``tools`` and forces a call (``tool_choice: "required"`` or a named function), the answer must
be a call: the grammar (``grammar.py``, as for ``response_format``) holds the model to the JSON of the call, so the
call is well-formed and names a function that exists whatever the model, SmolLM2 included:

* a named function: ``{"name": <that name>, "arguments": <its parameters' schema>}``;
* ``required``: a list of such calls, any offered function each, at least one and at most as many as there are
  offered functions (a small model left unbounded repeats calls until ``max_tokens``), one when the request says
  ``parallel_tool_calls: false``.

``tool_choice: "auto"`` (or none given) leaves the model free to answer or to call: the tools are described in the
system prompt (``tools_preamble``, the Hermes/Qwen format most open models were tuned on: a ``<tools>`` list, and a
call as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``), and the grammar is xgrammar's structural tag for
that format (``auto_call_tag``): text is free until the model opens ``<tool_call>``, and from there it is held to
the JSON of a call of an offered function with its parameters, so a call it makes is well-formed and names a
function that exists. ``calls_in_text`` reads the calls out of the answer. ``"none"`` gives the model no tools.
vLLM's engine uses the same three for ``auto`` where the expert names no vLLM tool parser (``experts/vllm/tools.py``).

Runs in: the expert's actor (the ``local`` and ``moe`` backends), and vLLM's engine actor.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from experts.types import ToolCall

ANY_ARGUMENTS: dict[str, Any] = {"type": "object"}
TAG_FORMAT = (
    "qwen_3"  # xgrammar's builtin structural tag for <tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>
)
CALL_BLOCK = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def offers_calls(tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any) -> bool:
    """Whether the model may call the request's tools of its own accord (``auto``, or no tool_choice)."""
    return bool(tools) and tool_choice in (None, "auto")


def auto_call_tag(tools: Sequence[Mapping[str, Any]], parallel: bool | None = None) -> str:
    """The structural tag (JSON) that leaves text free and holds every ``<tool_call>`` to a call of ``tools``."""
    from xgrammar import get_builtin_structural_tag

    functions = [
        {
            "type": "function",
            "function": {**tool["function"], "parameters": tool["function"].get("parameters") or ANY_ARGUMENTS},
        }
        for tool in tools
        if tool.get("type", "function") == "function"
    ]
    tag = get_builtin_structural_tag(
        TAG_FORMAT, tools=functions, tool_choice="auto", reasoning=False, parallel_tool_calls=parallel is not False
    )
    return str(tag.model_dump_json())


def tools_preamble(tools: Sequence[Mapping[str, Any]]) -> str:
    """The system prompt's part that shows the model the tools and how to call them."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "# Tools\n\nYou may call one or more of these functions to help with the user's request. Their signatures "
        f"are inside <tools></tools>:\n<tools>\n{listed}\n</tools>\n\nTo call one, answer with a JSON object of "
        "its name and arguments inside <tool_call></tool_call> tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <arguments-object>}\n</tool_call>'
    )


def with_tools_preamble(messages: list[dict[str, str]], tools: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``messages`` with the tools described at the end of the system message (a new one first if there is none)."""
    preamble = tools_preamble(tools)
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0].get('content', '')}\n\n{preamble}".strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": preamble}, *messages]


def calls_in_text(text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """The answer's text before its first call, and its ``<tool_call>`` blocks as calls (none: the text whole)."""
    calls = []
    for block in CALL_BLOCK.finditer(text):
        try:
            item = json.loads(block.group(1))
        except json.JSONDecodeError:  # cut short by max_tokens: not a call
            continue
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            arguments = json.dumps(item.get("arguments", {}), ensure_ascii=False)
            calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=item["name"], arguments=arguments))
    if not calls:
        return text, ()
    return text[: text.index("<tool_call>")].strip(), tuple(calls)


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
