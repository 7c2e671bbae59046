"""The ``moe`` backend: a real (tiny, random) MoE chat checkpoint served on our MoE path.

The checkpoint is a Qwen3-MoE model with the embedded model's tokenizer and chat template,
saved with ``save_pretrained``; the backend must decode exactly what transformers' own
greedy ``generate`` decodes, take per-request routing controls, and reject controls that do
not fit the model. Then the same through a Ray actor, uvicorn and the openai client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch

from experts.backends import create_backend
from experts.config._pool_spec import parse_pool
from experts.errors import BackendError
from experts.moe.options import RoutingOptions
from experts.runtime._pool import ExpertPool
from experts.types import GenerationRequest, Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.conftest import ServerThread

pytestmark = [pytest.mark.model]

QUESTIONS = ["What is two plus two?", "Name a colour of the sky at noon on a clear day."]


@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import transformers as t

    from experts.engine.embedded import prepare_model, resolve_model

    tokenizer = t.AutoTokenizer.from_pretrained(prepare_model(resolve_model("embedded:smollm2-135m-instruct")))
    config = t.Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = t.AutoModelForCausalLM.from_config(config).eval()
    folder = tmp_path_factory.mktemp("tiny-qwen3-moe")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def expert_entry(folder: Path, **options: Any) -> dict[str, Any]:
    return {
        "name": "tiny-moe",
        "backend": "moe",
        "model": str(folder),
        "generation": {"max_tokens": 8, "temperature": 0.0},
        "resources": {"num_cpus": 0, "torch_threads": 1, "device": "cpu"},
        "options": {"dtype": "float32", **options},
    }


def spec_of(folder: Path, **options: Any) -> Any:
    return parse_pool({"name": "moe-pool", "experts": [expert_entry(folder, **options)]}, "<moe pool>").experts[0]


def request(question: str, routing: RoutingOptions | None = None) -> GenerationRequest:
    return GenerationRequest([Message("user", question)], max_tokens=8, temperature=0.0, moe_routing=routing)


def transformers_greedy(folder: Path, question: str) -> str:
    import transformers as t

    tokenizer = t.AutoTokenizer.from_pretrained(folder)
    model = t.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    prompt = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)


def in_process_answer(folder: Path, question: str, routing: RoutingOptions) -> str:
    """The answer of the ``moe`` backend run here, with the pool file's default options."""
    import asyncio

    async def answer() -> str:
        backend = create_backend(spec_of(folder))
        await backend.load()
        return (await backend.generate([request(question, routing)]))[0].text

    return asyncio.run(answer())


async def test_backend_decodes_what_transformers_decodes(moe_checkpoint: Path) -> None:
    backend = create_backend(spec_of(moe_checkpoint))
    await backend.load()
    facts = backend.describe()
    assert facts | {"backend": "moe", "family": "qwen3_moe", "experts": 8, "top_k": 2, "moe_layers": 2} == facts
    assert facts["engine"] == "grouped"  # auto on CPU
    answers = await backend.generate([request(q) for q in QUESTIONS])
    for question, answer in zip(QUESTIONS, answers):
        assert answer.finish_reason in ("stop", "length") and answer.error is None
        assert answer.text == transformers_greedy(moe_checkpoint, question)


async def test_requests_steer_routing_per_request_within_one_batch(moe_checkpoint: Path) -> None:
    backend = create_backend(spec_of(moe_checkpoint, engine="reference"))
    await backend.load()
    plain, steered, again, bad = await backend.generate(
        [
            request(QUESTIONS[0]),
            request(QUESTIONS[0], RoutingOptions(forced=(0, 1))),
            request(QUESTIONS[0]),
            request(QUESTIONS[0], RoutingOptions(disabled=(9,))),
        ]
    )
    alone = (await backend.generate([request(QUESTIONS[0], RoutingOptions(forced=(0, 1)))]))[0]
    assert plain.text == again.text and steered.text == alone.text
    assert steered.text != plain.text  # forcing two fixed experts in every layer changes this random model's answer
    assert bad.finish_reason == "error" and bad.error_code == "invalid_moe_routing"
    assert "disabled experts [9] out of range: the model has experts 0..7" in bad.error


async def test_a_response_format_holds_on_the_moe_path_too(moe_checkpoint: Path) -> None:
    """The moe backend decodes with our static engine, so a random model still writes the schema's JSON."""
    import json
    from dataclasses import replace

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    form = {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}
    backend = create_backend(spec_of(moe_checkpoint))
    await backend.load()
    constrained, free = await backend.generate(
        [replace(request(QUESTIONS[0]), max_tokens=24, response_format=form), request(QUESTIONS[0])]
    )
    assert set(json.loads(constrained.text)) == {"ok"} and constrained.finish_reason == "stop"
    assert free.error is None


def test_bad_engine_and_missing_checkpoint_are_named(moe_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="options.engine 'cuda-magic' is not one of"):
        create_backend(spec_of(moe_checkpoint, engine="cuda-magic"))


async def test_a_folder_that_is_not_an_moe_checkpoint_fails_at_load(tmp_path: Path) -> None:
    backend = create_backend(spec_of(tmp_path / "nowhere"))
    with pytest.raises(BackendError, match="is not a directory"):
        await backend.load()
    backend = create_backend(spec_of(tmp_path))
    with pytest.raises(BackendError, match="no config.json"):
        await backend.load()


@pytest.fixture(scope="module")
def moe_client(ray_session: None, moe_checkpoint: Path) -> Iterator[openai.OpenAI]:
    import asyncio

    spec = parse_pool({"name": "moe-pool", "experts": [expert_entry(moe_checkpoint)]}, "<moe pool>")
    pool = ExpertPool(spec)
    loop = asyncio.new_event_loop()
    health = loop.run_until_complete(pool.start())
    assert health["tiny-moe"]["state"] == "ready", health
    try:
        with ServerThread(create_app(orchestrator=Orchestrator(pool))) as server:
            yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    finally:
        loop.run_until_complete(pool.shutdown())
        loop.close()


@pytest.mark.ray
def test_served_through_ray_and_the_http_api(moe_client: openai.OpenAI, moe_checkpoint: Path) -> None:
    messages = [{"role": "user", "content": QUESTIONS[1]}]
    reply = moe_client.chat.completions.create(model="expert/tiny-moe", messages=messages, temperature=0)
    assert reply.choices[0].message.content == transformers_greedy(moe_checkpoint, QUESTIONS[1])
    steered = moe_client.chat.completions.create(
        model="expert/tiny-moe",
        messages=messages,
        temperature=0,
        extra_body={"moesaic": {"moe_routing": {"forced": [3], "top_p": 0.9, "min_weight": 0.01}}},
    )
    # the actor runs the same backend as this process would: the steered answer must be exactly that one
    expected = in_process_answer(moe_checkpoint, QUESTIONS[1], RoutingOptions(forced=(3,), top_p=0.9, min_weight=0.01))
    assert steered.choices[0].message.content == expected
    assert expected != reply.choices[0].message.content  # the steering reached the model
    with pytest.raises(openai.BadRequestError) as bad:
        moe_client.chat.completions.create(
            model="expert/tiny-moe",
            messages=messages,
            extra_body={"moesaic": {"moe_routing": {"forced": [1, 2, 3]}}},
        )
    assert bad.value.body["param"] == "moesaic.moe_routing" and "3 forced experts do not fit in 2 slots" in str(
        bad.value
    )
    with pytest.raises(openai.BadRequestError):
        moe_client.chat.completions.create(
            model="expert/tiny-moe",
            messages=messages,
            extra_body={"moesaic": {"moe_routing": {"disabled": [1], "forced": [1]}}},
        )
