"""Tool plans on vLLM's engine (``experts/vllm/tools.py``) against vLLM's own classes, in the engine environment:
the schema a forced call is held to, calls read out of answers by vLLM's parsers (``hermes`` here) or, without one,
out of the ``<tool_call>`` blocks the structural tag holds, on canned answers, so every path is checked without
depending on what a model chooses (``tests/test_vllm_engine.py`` runs forced calls on the embedded SmolLM2 for real).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.engine_env import engine_environment

pytestmark = [pytest.mark.model]
ENVIRONMENT = engine_environment()

ROOT = Path(__file__).resolve().parent.parent
CHECKS = r"""
import json, sys
from transformers import AutoTokenizer
from experts.vllm.tools import calls_of, known_parser, plan_tools

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
tools = json.loads(sys.argv[2])
named = plan_tools({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, None,
                   tokenizer)
required = plan_tools({"tools": tools, "tool_choice": "required"}, None, tokenizer)
parsed = plan_tools({"tools": tools}, "hermes", tokenizer)
tagged = plan_tools({"tools": tools}, None, tokenizer)
hermes = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
try:
    plan_tools({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, None, tokenizer)
    unknown_choice = None
except ValueError as error:
    unknown_choice = str(error)
print(json.dumps({
    "named_schema": named.schema,
    "named_calls": calls_of(named, '{"city": "Paris"}', tokenizer),
    "required_schema": required.schema,
    "required_calls": calls_of(required, '[{"name": "get_time", "parameters": {"zone": "UTC"}}]', tokenizer),
    "no_tools": plan_tools({"tools": tools, "tool_choice": "none"}, "hermes", tokenizer),
    "tagged_mode": tagged.mode,
    "tagged_triggers": json.loads(tagged.tag)["format"]["triggers"],
    "tagged_calls": calls_of(tagged, "Let me look.\n" + hermes, tokenizer),
    "tagged_text_only": calls_of(tagged, "It is sunny.", tokenizer),
    "parsed_mode": parsed.mode,
    "parsed_skips_special": parsed.skip_special_tokens,
    "parsed_calls": calls_of(parsed, "Let me look.\n" + hermes, tokenizer),
    "parsed_text_only": calls_of(parsed, "It is sunny.", tokenizer),
    "known": [known_parser("hermes"), known_parser("no-such-parser")],
    "unknown_choice": unknown_choice,
}))
"""
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {field: {"type": "string"}}, "required": [field]},
        },
    }
    for name, field in (("get_weather", "city"), ("get_time", "zone"))
]


@pytest.fixture(scope="module")
def checked() -> dict:
    from experts.engine.embedded import prepare_model, resolve_model

    model = prepare_model(resolve_model("embedded:smollm2-135m-instruct"))
    assert ENVIRONMENT.python is not None
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    done = subprocess.run(
        [ENVIRONMENT.python, "-c", CHECKS, str(model), json.dumps(TOOLS)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_named_call_is_held_to_the_functions_parameters(checked: dict) -> None:
    assert checked["named_schema"] == TOOLS[0]["function"]["parameters"]
    assert checked["named_calls"] == ["", [["get_weather", '{"city": "Paris"}']]]
    assert "nope" in checked["unknown_choice"]  # a tool_choice naming no offered function is refused


def test_a_required_call_is_a_list_of_calls_of_offered_functions(checked: dict) -> None:
    schema = checked["required_schema"]
    assert schema["type"] == "array" and schema["minItems"] == 1
    names = [option["properties"]["name"]["enum"] for option in schema["items"]["anyOf"]]
    assert names == [["get_weather"], ["get_time"]]
    assert checked["required_calls"] == ["", [["get_time", '{"zone": "UTC"}']]]


def test_auto_reads_calls_with_the_experts_parser_or_holds_them_to_the_structural_tag(checked: dict) -> None:
    assert checked["no_tools"] is None
    assert checked["tagged_mode"] == "tagged" and checked["tagged_triggers"] == ["<tool_call>"]  # no parser: the tag
    assert checked["tagged_calls"] == ["Let me look.", [["get_time", '{"zone": "UTC"}']]]
    assert checked["tagged_text_only"] == ["It is sunny.", []]
    assert checked["parsed_mode"] == "parsed" and checked["parsed_skips_special"] is False  # hermes keeps its tags
    text, calls = checked["parsed_calls"]
    assert text.strip() == "Let me look." and calls == [["get_time", '{"zone": "UTC"}']]
    assert checked["parsed_text_only"] == ["It is sunny.", []]
    assert checked["known"] == [True, False]
