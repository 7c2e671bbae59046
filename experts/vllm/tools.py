"""Tool calls on vLLM's engine, as vLLM's own OpenAI server makes them.

Runs in: the engine actor (imports vLLM).

- ``tool_choice`` ``"required"`` or a named function: the answer is held by vLLM's structured outputs to the JSON
  schema vLLM's server uses for them (``get_json_schema_from_tools``): a list of ``{"name", "parameters"}`` calls of
  the offered functions, or the named function's arguments. So the call is always well-formed and names a function
  that exists, whatever the model's chat template knows of tools.
- ``"auto"`` (or no ``tool_choice``) with tools: where the expert names a vLLM tool parser (``options.tool_parser``,
  e.g. ``hermes`` for Qwen2.5 and Hermes models, ``llama3_json``, ``mistral``), the tools go into the chat template
  and the parser reads the calls out of the answer; without a parser, as on our engine
  (``experts/engine/tool_calls.py``): the tools are described in the system prompt, the answer is held by vLLM's
  structured outputs to xgrammar's structural tag (free text, every ``<tool_call>`` a well-formed call of an
  offered function), and the calls are read out of the ``<tool_call>`` blocks.
- ``"none"``: no tools.

A plan that reads calls needs the whole answer, so its text is not streamed piece by piece: it comes at the end,
with the calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from experts.engine.tool_calls import auto_call_tag, calls_in_text

Mode = Literal["named", "required", "parsed", "tagged"]


@dataclass(frozen=True)
class ToolPlan:
    """How one request's tools are used: the mode, the schema its output is held to, the parser that reads it."""

    mode: Mode
    tools: list[dict[str, Any]]
    schema: dict[str, Any] | None = None  # named and required: what structured outputs holds the answer to
    name: str | None = None  # named: the function
    parser: str | None = None  # parsed: vLLM's tool parser
    tag: str | None = None  # tagged: the structural tag (JSON) the answer is held to
    skip_special_tokens: bool = True  # parsed: as the parser wants (tool-call tags are special tokens in some models)


def plan_tools(payload: dict[str, Any], parser: str | None, tokenizer: Any) -> ToolPlan | None:
    """The request's tool plan, or None when it offers no tools the model can call here."""
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionNamedToolChoiceParam,
        ChatCompletionToolsParam,
    )
    from vllm.tool_parsers.utils import get_json_schema_from_tools

    tools, choice = payload.get("tools") or [], payload.get("tool_choice")
    if not tools or choice == "none":
        return None
    offered = [ChatCompletionToolsParam.model_validate(tool) for tool in tools]
    if isinstance(choice, dict):
        named = ChatCompletionNamedToolChoiceParam.model_validate(choice)
        schema = get_json_schema_from_tools(named, offered)
        return ToolPlan("named", tools, _object(schema), name=named.function.name)
    if choice == "required":
        return ToolPlan("required", tools, _object(get_json_schema_from_tools("required", offered)))
    if not parser:
        return ToolPlan("tagged", tools, tag=auto_call_tag(tools, payload.get("parallel_tool_calls")))
    request = _request(tools)
    adjusted = _parser(parser, tokenizer, request).adjust_request(request)  # what the parser needs of decoding
    return ToolPlan("parsed", tools, parser=parser, skip_special_tokens=bool(adjusted.skip_special_tokens))


def calls_of(plan: ToolPlan, text: str, tokenizer: Any) -> tuple[str, list[list[str]]]:
    """The answer's text and its calls (``[name, arguments JSON]`` each) under ``plan``."""
    if plan.mode == "named":
        return "", [[str(plan.name), _compact(text)]]
    if plan.mode == "required":
        return "", [[str(call["name"]), json.dumps(call.get("parameters", {}))] for call in json.loads(text)]
    if plan.mode == "tagged":
        content, tagged = calls_in_text(text)
        return content, [[call.name, call.arguments] for call in tagged]
    request = _request(plan.tools)
    found = _parser(str(plan.parser), tokenizer, request).extract_tool_calls(text, request)
    if not found.tools_called:
        return text, []
    calls = [[call.function.name, call.function.arguments] for call in found.tool_calls]
    return found.content or "", calls


def _request(tools: list[dict[str, Any]]) -> Any:
    """The request as vLLM's parsers read it (they look at its tools and tool_choice)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest(model="expert", messages=[], tools=tools, tool_choice="auto")


def _parser(name: str, tokenizer: Any, request: Any) -> Any:
    from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

    return ToolParserManager.get_tool_parser(name)(tokenizer, request.tools)


def known_parser(name: str) -> bool:
    """Whether vLLM has a tool parser of that name."""
    from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

    try:
        ToolParserManager.get_tool_parser(name)
    except KeyError:
        return False
    return True


def _object(schema: Any) -> dict[str, Any]:
    return json.loads(schema) if isinstance(schema, str) else dict(schema)


def _compact(text: str) -> str:
    """Arguments as compact JSON (structured outputs held them to the schema; a cut-off answer stays as it is)."""
    try:
        return json.dumps(json.loads(text))
    except json.JSONDecodeError:
        return text
