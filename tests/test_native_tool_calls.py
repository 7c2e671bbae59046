"""Tool calls on our own engine: a forced call (``required`` or a named function) held by the grammar to the call's
JSON, so even SmolLM2-135M returns a well-formed call of an offered function; with ``auto`` the model may answer or
call, every ``<tool_call>`` it opens held by xgrammar's structural tag to a call of an offered function; ``none``
answers in text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from experts.backends.local import LocalBackend
from experts.config import load_pool
from experts.engine.tool_calls import (
    auto_call_tag,
    calls_from_text,
    calls_in_text,
    forced_call_schema,
    tools_preamble,
    with_tools_preamble,
)
from experts.types import GenerationRequest, Message

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
        },
    },
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def test_the_schema_of_a_forced_call() -> None:
    named = forced_call_schema(TOOLS, NAMED)
    assert named is not None and named["properties"]["name"] == {"const": "get_weather"}
    assert named["properties"]["arguments"]["required"] == ["city"]
    required = forced_call_schema(TOOLS, "required")
    assert required is not None and (required["minItems"], required["maxItems"]) == (1, 2)  # one per offered function
    offered = [option["properties"]["name"]["const"] for option in required["items"]["anyOf"]]
    assert offered == ["get_weather", "get_time"]
    assert forced_call_schema(TOOLS, "required", parallel=False)["maxItems"] == 1  # type: ignore[index]
    for free in ("auto", "none", None):
        assert forced_call_schema(TOOLS, free) is None
    assert forced_call_schema(None, "required") is None


def test_calls_are_read_from_the_held_text() -> None:
    [one] = calls_from_text('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert one.name == "get_weather" and json.loads(one.arguments) == {"city": "Paris"} and one.id.startswith("call_")
    two = calls_from_text(
        '[{"name": "get_time", "arguments": {"zone": "CET"}}, {"name": "get_weather", "arguments": {}}]'
    )
    assert [call.name for call in two] == ["get_time", "get_weather"] and two[0].id != two[1].id
    assert calls_from_text('{"name": "get_weather", "argu') == ()  # cut short by max_tokens: no call
    assert calls_from_text('{"arguments": {}}') == ()


def test_auto_calls_are_read_out_of_their_tags_and_the_model_is_shown_the_tools() -> None:
    text, [call] = calls_in_text(
        'Let me check.\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
    )
    assert text == "Let me check." and call.name == "get_time" and json.loads(call.arguments) == {"zone": "CET"}
    assert calls_in_text("It is sunny.") == ("It is sunny.", ())
    assert calls_in_text('<tool_call>\n{"name": "get_ti') == ('<tool_call>\n{"name": "get_ti', ())  # cut short
    preamble = tools_preamble(TOOLS)
    assert "<tools>" in preamble and '"get_weather"' in preamble and "<tool_call>" in preamble
    [system, user] = with_tools_preamble(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "?"}], TOOLS
    )
    assert system["content"].startswith("Be brief.") and preamble in system["content"] and user["content"] == "?"
    assert with_tools_preamble([{"role": "user", "content": "?"}], TOOLS)[0] == {"role": "system", "content": preamble}


@pytest.mark.model
def test_the_structural_tag_holds_every_call_to_an_offered_function() -> None:
    """The grammar ``auto`` decodes under, on the model's own tokenizer: free text, then only well-formed calls of
    offered functions with their parameters."""
    import xgrammar
    from transformers import AutoTokenizer

    from experts.engine.embedded import prepare_model, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_model(resolve_model("embedded:smollm2-135m-instruct")))
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer)
    compiled = xgrammar.GrammarCompiler(info).compile_structural_tag(auto_call_tag(TOOLS))

    def accepted(text: str) -> bool:
        return bool(xgrammar.GrammarMatcher(compiled).accept_string(text))

    assert accepted("It is sunny in Paris.")  # free text: the model may answer
    assert accepted('Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert not accepted('<tool_call>\n{"name": "get_stock", "arguments": {}}')  # no such function
    assert not accepted('<tool_call>\n{"name": "get_weather", "arguments": {"town": "Paris"}}')  # not its parameters


@pytest.mark.model
async def test_the_embedded_model_makes_well_formed_calls_when_forced() -> None:
    spec = load_pool("default").expert("math")
    backend = LocalBackend(spec.model_copy(update={"options": {**spec.options, "engine": "continuous"}}))
    await backend.load()
    try:
        question = [Message("user", "What is the weather in Paris, and what time is it in Tokyo?")]

        def ask(tool_choice: object, parallel: bool | None = None) -> GenerationRequest:
            return GenerationRequest(
                question,
                max_tokens=80,
                temperature=0.0,
                tools=TOOLS,
                tool_choice=tool_choice,
                parallel_tool_calls=parallel,
            )

        named, required, single, auto, nothing = await backend.generate(
            [ask(NAMED), ask("required"), ask("required", parallel=False), ask("auto"), ask("none")]
        )
    finally:
        await backend.unload()
    assert named.finish_reason == "tool_calls" and named.text == ""
    assert [call.name for call in named.tool_calls] == ["get_weather"]
    assert set(json.loads(named.tool_calls[0].arguments)) == {"city"}
    for forced in (required, single):
        assert forced.finish_reason == "tool_calls" and forced.tool_calls
        for call in forced.tool_calls:
            wanted = {"get_weather": {"city"}, "get_time": {"zone"}}[call.name]  # offered functions only
            assert set(json.loads(call.arguments)) == wanted
    assert len(single.tool_calls) == 1  # parallel_tool_calls: false
    assert auto.text or auto.tool_calls  # auto: an answer, or calls the structural tag held well-formed
    for call in auto.tool_calls:
        assert call.name in {"get_weather", "get_time"} and isinstance(json.loads(call.arguments), dict)
    assert not nothing.tool_calls and nothing.text  # none: the model is not shown the tools


@pytest.mark.model
@pytest.mark.ray
def test_the_pool_votes_over_three_experts_forced_calls(openai_client: Any) -> None:
    """Three experts of the embedded pool forced to call: the answer is the vote's calls, every expert's in the
    metadata (on our engine or vLLM's, whichever the pool's experts run on: both hold a forced call to its JSON)."""
    reply = openai_client.chat.completions.create(
        model="moesaic",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS,
        tool_choice=NAMED,
        max_tokens=40,
        temperature=0,
        extra_body={"moesaic": {"experts": ["math", "coder", "writer"]}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and [call.function.name for call in choice.message.tool_calls] == [
        "get_weather"
    ]
    metadata = reply.model_extra["moesaic"]
    assert metadata["strategy"] == "tool_calls"
    called = [answer for answer in metadata["answers"] if answer["tool_calls"]]
    assert len(called) == 3 and all(answer["tool_calls"][0]["name"] == "get_weather" for answer in called)
    votes = metadata["aggregation"]["votes"]
    assert votes and metadata["aggregation"]["chosen_expert"] in {"math", "coder", "writer"}
    assert 0 < metadata["aggregation"]["agreement"] <= 1
