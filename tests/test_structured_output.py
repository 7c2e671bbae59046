"""Structured output end to end: ``response_format`` and ``stop`` reach the experts and the aggregator, and our
local engine enforces JSON with a grammar, so even the embedded pool (SmolLM2-135M) at k = 3 returns JSON that
validates against the caller's schema.

Greedy decoding (temperature 0) makes the small model's answers the same run to run, and loop: it writes
``{"answer": 121212...`` until the grammar's bound on integers ends the number. Driven by the clients people use:
the official ``openai`` client's ``chat.completions.parse`` with a pydantic model, LangChain's
``ChatOpenAI(base_url=...).with_structured_output``, and LiteLLM's ``openai/`` provider.
"""

from __future__ import annotations

import json
import os
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from aggregator._strategies import ModelStep, Verdict
from aggregator._synthesize import synthesis_request
from experts.backends.local import LocalBackend
from experts.config._pool_spec import load_pool
from experts.engine.grammar import ANY_OBJECT, GrammarError, OutputFormat, bounded
from experts.types import Completion, GenerationRequest, Message, Usage
from orchestrator.pipeline.steps import model_step_call, step_verdict
from tests.conftest import ServerThread

QUESTION = [{"role": "user", "content": "What is 12 * 7? Answer in JSON."}]


class Answer(BaseModel):
    answer: int


SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "Answer", "schema": Answer.model_json_schema()}}


# -- the pieces ---------------------------------------------------------------------------------------------
def test_unbounded_numbers_are_held_to_the_safe_integer_range() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": ["number", "null"]},
            "c": {"type": "integer", "maximum": 5},
        },
        "$defs": {"d": {"type": "array", "items": {"type": "number"}}},
    }
    held = bounded(schema)
    for number in (held["properties"]["a"], held["properties"]["b"], held["$defs"]["d"]["items"]):
        assert (number["minimum"], number["maximum"]) == (-(2**53 - 1), 2**53 - 1)
    assert held["properties"]["c"] == {"type": "integer", "maximum": 5}  # the caller's own bound stays


def test_output_formats_from_openai_response_formats() -> None:
    assert OutputFormat.of(None) is None and OutputFormat.of({"type": "text"}) is None
    assert OutputFormat.of({"type": "json_object"}) == OutputFormat(ANY_OBJECT)
    parsed = OutputFormat.of(SCHEMA_FORMAT)
    assert parsed is not None and json.loads(parsed.schema) == bounded(Answer.model_json_schema())
    with pytest.raises(GrammarError, match="json_schema.schema"):
        OutputFormat.of({"type": "json_schema", "json_schema": {"name": "x"}})


def test_the_synthesiser_follows_the_callers_stop_and_format_and_the_judge_does_not() -> None:
    caller = GenerationRequest([Message("user", "q")], seed=5, stop=["END"], response_format=SCHEMA_FORMAT)
    asked = synthesis_request([Message("user", "q")], [], _sampling())
    fallback = Verdict("a", "stop", "vote", "e1")
    synthesis = model_step_call(ModelStep("aggregator", "agg", asked, True, lambda t, f: fallback, fallback), caller)
    assert synthesis.stop == ["END"] and synthesis.response_format == SCHEMA_FORMAT and synthesis.seed == 5
    assert '"answer"' in synthesis.messages[0].content and "JSON Schema" in synthesis.messages[0].content
    judged = model_step_call(ModelStep("judge", "j", asked, False, lambda t, f: fallback, fallback), caller, 9)
    assert judged.stop == [] and judged.response_format is None and judged.max_tokens == 9


def test_a_synthesis_cut_at_max_tokens_gives_way_to_the_vote_when_json_was_asked() -> None:
    asked = synthesis_request([Message("user", "q")], [], _sampling())
    voted = Verdict('{"answer": 84}', "stop", "synthesize", "e1")
    step = ModelStep(
        "aggregator", "agg", asked, True, lambda text, reason: Verdict(text, reason, "synthesize", None), voted
    )
    cut = Completion('{"answer": 8888', "length", Usage())
    as_json = model_step_call(step, GenerationRequest([Message("user", "q")], response_format=SCHEMA_FORMAT))
    fallback = step_verdict(step, cut, as_json)
    assert fallback.text == voted.text and "cut at max_tokens" in (fallback.note or "")
    as_text = model_step_call(step, GenerationRequest([Message("user", "q")]))
    assert step_verdict(step, cut, as_text).text == cut.text  # plain text: the cut synthesis stands, as before


def _sampling() -> Any:
    from aggregator._synthesize import Sampling

    return Sampling(max_tokens=32, temperature=0.0)


# -- our engines, on the embedded model ---------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.parametrize("engine", ["continuous", "static"])
async def test_both_engines_enforce_the_schema_per_request(engine: str) -> None:
    spec = load_pool("default").expert("math")
    backend = LocalBackend(spec.model_copy(update={"options": {**spec.options, "engine": engine}}))
    await backend.load()
    try:

        def ask(seed: int, response_format: dict[str, Any] | None) -> GenerationRequest:
            messages = [Message("system", spec.system_prompt or ""), Message("user", "What is 12 * 7?")]
            return GenerationRequest(
                messages, max_tokens=48, temperature=0.7, top_p=0.9, seed=seed, response_format=response_format
            )

        bad = {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}}
        batch = [ask(seed, SCHEMA_FORMAT) for seed in range(4)] + [ask(9, {"type": "json_object"}), ask(1, None)]
        outputs = await backend.generate([*batch, ask(2, bad)])
        grammars = backend._decoder.rows.grammars  # the backend's own compiled grammars, to check the outputs by
    finally:
        await backend.unload()
    for request, output in zip(batch[:5], outputs[:5]):
        form = OutputFormat.of(request.response_format)
        assert form is not None and grammars.matcher(form).accept_string(output.text)  # always on the grammar
        if output.finish_reason == "stop":  # complete (not cut at max_tokens): valid JSON of the schema
            value = json.loads(output.text)
            assert isinstance(value, dict) and (form.schema == ANY_OBJECT or Answer.model_validate(value))
    assert sum(output.finish_reason == "stop" for output in outputs[:4]) >= 3
    assert outputs[5].error is None and not outputs[5].text.startswith("{")  # free text beside them, unconstrained
    assert outputs[6].error_code == "invalid_response_format" and "no-such-type" in (outputs[6].error or "")


# -- over HTTP, with the clients people use ------------------------------------------------------------------
@pytest.mark.model
@pytest.mark.ray
def test_the_embedded_pool_at_k3_returns_json_that_validates(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.parse(
        model="moesaic",
        messages=QUESTION,
        response_format=Answer,
        max_tokens=48,
        temperature=0,
        extra_body={"moesaic": {"k": 3}},
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)
    metadata = completion.model_extra["moesaic"]
    assert len(metadata["decision"]["experts"]) == 3
    complete = [answer for answer in metadata["answers"] if answer["finish_reason"] == "stop"]
    assert complete and all(Answer.model_validate_json(answer["text"]) for answer in complete)
    assert metadata["passthrough"]["not_supported_by"] == []  # local experts enforce the format


@pytest.mark.model
@pytest.mark.ray
def test_json_object_streamed_and_one_expert_directly(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="moesaic",
        messages=QUESTION,
        max_tokens=48,
        temperature=0,
        stream=True,
        response_format={"type": "json_object"},
        extra_body={"moesaic": {"experts": ["math", "writer"]}},
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert isinstance(json.loads(text), dict)
    direct = openai_client.chat.completions.parse(
        model="expert/math", messages=QUESTION, response_format=Answer, max_tokens=32, temperature=0
    )
    assert isinstance(direct.choices[0].message.parsed, Answer)


@pytest.mark.model
@pytest.mark.ray
def test_a_format_that_cannot_be_enforced_is_a_400(openai_client: openai.OpenAI) -> None:
    unenforceable = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    for model in ("moesaic", "expert/math"):
        with pytest.raises(openai.BadRequestError) as refused:
            openai_client.chat.completions.create(
                model=model, messages=QUESTION, max_tokens=8, response_format=unenforceable
            )
        assert refused.value.body["param"] == "response_format"
        assert refused.value.body["code"] == "invalid_response_format"
    with pytest.raises(openai.BadRequestError) as missing:
        openai_client.chat.completions.create(
            model="moesaic", messages=QUESTION, response_format={"type": "json_schema", "json_schema": {"name": "x"}}
        )
    assert missing.value.body["param"] == "response_format"


@pytest.mark.model
@pytest.mark.ray
def test_langchain_chat_openai_structured_output(api_server: ServerThread) -> None:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(base_url=api_server.url + "/v1", api_key="unused", model="moesaic", max_tokens=48, temperature=0)
    structured = model.with_structured_output(Answer, method="json_schema")
    assert isinstance(structured.invoke("What is 12 * 7? Answer in JSON."), Answer)


@pytest.mark.model
@pytest.mark.ray
async def test_litellm_client_structured_output(api_server: ServerThread) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    reply = await litellm.acompletion(
        model="openai/moesaic",
        api_base=api_server.url + "/v1",
        api_key="unused",
        messages=QUESTION,
        max_tokens=48,
        temperature=0,
        response_format=Answer,
    )
    Answer.model_validate_json(reply.choices[0].message.content)
