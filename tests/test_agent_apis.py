"""The agent APIs on the embedded pool, asked with their own clients: OpenAI's Responses API (``/v1/responses``,
``openai``'s ``responses.create``) and Anthropic's Messages API (``/v1/messages``, ``anthropic``'s
``messages.create``): plain, streamed, and a tool round trip, through the same pipeline as the chat API."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import ServerThread

pytestmark = pytest.mark.model

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": WEATHER["parameters"],
}


@pytest.fixture(scope="module")
def claude(api_server: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=api_server.url, api_key="unused", max_retries=0, timeout=120)


# -- /v1/responses ----------------------------------------------------------------------------------------------------
def test_a_response_with_its_text_usage_and_metadata(openai_client: openai.OpenAI) -> None:
    response = openai_client.responses.create(
        model="expert/math", input="What is 2 + 2?", instructions="Answer briefly.", max_output_tokens=12
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0 and response.usage.input_tokens > 0
    assert response.model_extra["moesaic"]["expert"] == "math"
    assert response.instructions == "Answer briefly." and response.max_output_tokens == 12


def test_a_streamed_response_sends_its_events_in_order(openai_client: openai.OpenAI) -> None:
    events = list(
        openai_client.responses.create(model="moesaic", input="Name a colour.", max_output_tokens=8, stream=True)
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas and final.output_text == deltas
    assert final.model_extra["moesaic"]["decision"]["experts"]  # the pipeline's metadata, as in the chat API


def test_a_tool_round_trip_continues_the_stored_conversation(openai_client: openai.OpenAI) -> None:
    first = openai_client.responses.create(
        model="expert/generalist",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=48,
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)  # well-formed, a known tool
    second = openai_client.responses.create(
        model="expert/generalist",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=16,
    )
    assert second.previous_response_id == first.id and second.output_text
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the question, the call and its result came back


def test_a_response_held_to_a_json_schema(openai_client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    response = openai_client.responses.create(
        model="expert/math",
        input="What is 6 times 7?",
        text={"format": {"type": "json_schema", "name": "result", "schema": schema}},
        max_output_tokens=24,
    )
    assert isinstance(json.loads(response.output_text)["answer"], int)  # structured output, through text.format
    assert response.text.format.type == "json_schema"


def test_bad_response_requests_get_openais_error_shape(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown_field:
        openai_client.responses.create(model="moesaic", input="hi", extra_body={"reasoning_effort_x": 1})
    assert "reasoning_effort_x" in str(unknown_field.value)
    with pytest.raises(openai.BadRequestError) as unknown_previous:
        openai_client.responses.create(model="moesaic", input="hi", previous_response_id="resp_gone")
    body: Any = unknown_previous.value.body
    assert body["code"] == "previous_response_not_found" and body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.create(model="no-such-model", input="hi")


# -- /v1/messages -----------------------------------------------------------------------------------------------------
def test_a_message_with_its_text_usage_and_metadata(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="expert/writer",
        max_tokens=12,
        system="Answer in one sentence.",
        messages=[{"role": "user", "content": "Describe the sea."}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0
    assert message.model_extra["moesaic"]["expert"] == "writer"


def test_a_streamed_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="moesaic", max_tokens=8, messages=[{"role": "user", "content": "Name a fruit."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.usage.output_tokens > 0


def test_the_pool_votes_on_a_tool_call_and_takes_the_result(claude: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = claude.messages.create(
        model="moesaic", max_tokens=48, messages=[question], tools=[ANTHROPIC_WEATHER], tool_choice={"type": "any"}
    )
    assert first.stop_reason == "tool_use"
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input, dict)
    metadata = first.model_extra["moesaic"]
    assert metadata["strategy"] == "tool_calls" and metadata["aggregation"]["votes"]  # the experts' calls, voted on
    assert all(answer["tool_calls"] for answer in metadata["answers"])  # tool_choice any: every expert called
    answer = claude.messages.create(
        model="moesaic",
        max_tokens=16,
        tools=[ANTHROPIC_WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Rain, 9 C"}]},
        ],
    )
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.content


def test_bad_message_requests_get_anthropics_error_shape(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as missing:
        claude.messages.create(model="moesaic", messages=[{"role": "user", "content": "hi"}], max_tokens=0)
    body: Any = missing.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.create(model="claude-x", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
