"""The continuous engine on the embedded model: same answers as one-at-a-time decoding, joined mid-flight.

The reference is the static ``BatchDecoder`` with one prompt at a time (no padding, no
company), greedy. The engine must return the same token ids and text while requests join
and leave a running batch, slots are reused, and the KV cache stays where it was allocated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest
import torch

from experts.engine.continuous import ContinuousEngine, PromptTooLong
from experts.engine.decoding import EngineOutput, SamplingParams
from experts.engine.static import BatchDecoder

pytestmark = pytest.mark.model

MODEL = "embedded:smollm2-135m-instruct"
CPU = torch.device("cpu")
QUESTIONS = [
    "Tell me a long story about a dragon.",
    "What is 2 + 2?",
    "Name a primary colour.",
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain gravity in two sentences.",
    "Why is the sky blue?",
]


class Loaded:
    """The model, its tokenizer, and greedy one-at-a-time references (computed once each)."""

    def __init__(self, attn_implementation: str = "sdpa") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from experts.engine.embedded import prepare_model, resolve_model

        directory = prepare_model(resolve_model(MODEL))
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, attn_implementation=attn_implementation
        ).eval()
        self.static = BatchDecoder(self.model, self.tokenizer, CPU)
        self._references: dict[tuple[int, int], EngineOutput] = {}

    def prompt(self, index: int) -> list[int]:
        messages = [{"role": "user", "content": QUESTIONS[index]}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def reference(self, index: int, max_tokens: int) -> EngineOutput:
        key = (index, max_tokens)
        if key not in self._references:
            [self._references[key]] = self.static.generate([self.prompt(index)], [SamplingParams(max_tokens)])
        return self._references[key]

    def engine(self, **options: Any) -> ContinuousEngine:
        return ContinuousEngine(self.model, self.tokenizer, CPU, **{"max_slots": 3, "max_len": 512, **options})


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    torch.set_num_threads(1)  # as in an actor; two threads are slower for these small matmuls
    return Loaded()


@pytest.fixture()
def engine(loaded: Loaded) -> Iterator[ContinuousEngine]:
    engine = loaded.engine()
    yield engine
    engine.close()


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the engine did not get there in time"
        time.sleep(0.005)


def test_staggered_requests_match_one_at_a_time_decoding(loaded: Loaded, engine: ContinuousEngine) -> None:
    # long answers first, so that shorter prompts later reuse slots that held longer sequences
    plan = [(0, 40), (5, 30), (1, 6), (2, 12), (3, 9), (4, 20), (6, 16)]
    pointers = engine.cache.data_ptrs()
    futures: list[Future[EngineOutput]] = []
    for index, max_tokens in plan:
        futures.append(engine.submit(loaded.prompt(index), SamplingParams(max_tokens)))
        steps = engine.stats.steps
        wait_for(lambda: engine.stats.steps >= steps + 2)  # the next one arrives mid-decode
    outputs = [future.result(timeout=120) for future in futures]
    for (index, max_tokens), output in zip(plan, outputs):
        expected = loaded.reference(index, max_tokens)
        assert output.token_ids == expected.token_ids, QUESTIONS[index]
        assert output.text == expected.text and output.finish_reason == expected.finish_reason
        assert output.prompt_tokens == len(loaded.prompt(index)) and output.seconds > 0
        assert len(output.token_ids) <= max_tokens
    stats = engine.stats
    assert stats.joined_running >= 3, stats  # requests joined a batch that was decoding
    assert stats.admitted == stats.finished == len(plan) and stats.peak_active == 3  # 7 requests, 3 slots
    assert max(output.batch_size for output in outputs) == 3
    assert engine.cache.data_ptrs() == pointers  # the KV cache was never reallocated
    assert engine.active == 0 and engine.waiting == 0


def test_greedy_answers_equal_transformers_generate(loaded: Loaded, engine: ContinuousEngine) -> None:
    # an independent reference: transformers' own decoding loop, one prompt at a time, greedy; the engine runs
    # the same prompts together (three slots shared), and must produce the same tokens up to EOS or the limit
    plan = [(1, 12), (3, 20), (4, 16)]
    futures = [engine.submit(loaded.prompt(index), SamplingParams(max_tokens)) for index, max_tokens in plan]
    outputs = [future.result(timeout=120) for future in futures]
    eos = loaded.tokenizer.eos_token_id
    for (index, max_tokens), output in zip(plan, outputs):
        prompt = torch.tensor([loaded.prompt(index)])
        with torch.no_grad():
            generated = loaded.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=max_tokens,
                eos_token_id=eos,
                pad_token_id=eos,
            )
        expected = generated[0, prompt.shape[1] :].tolist()
        if expected and expected[-1] == eos:
            expected = expected[:-1]  # generate keeps the EOS token; the engine's answer ends before it
        assert output.token_ids == expected, QUESTIONS[index]
    assert max(output.batch_size for output in outputs) > 1  # they were decoded together


def test_more_requests_than_slots_wait_in_order_and_reuse_slots(loaded: Loaded, engine: ContinuousEngine) -> None:
    plan = [(index % len(QUESTIONS), 5 + 3 * (index % 4)) for index in range(8)]
    futures = [engine.submit(loaded.prompt(index), SamplingParams(max_tokens)) for index, max_tokens in plan]
    for (index, max_tokens), future in zip(plan, futures):
        assert future.result(timeout=120).token_ids == loaded.reference(index, max_tokens).token_ids
    assert engine.stats.admitted == 8 and engine.stats.peak_active == 3


def test_stop_strings_cut_the_text_and_streaming_adds_up(loaded: Loaded, engine: ContinuousEngine) -> None:
    free = loaded.reference(0, 30)
    words = free.text.split()
    stop = " " + words[5]  # a string the model is known to produce, greedily
    pieces: dict[int, list[str]] = {0: [], 1: [], 2: []}
    params = [SamplingParams(30, stop=[stop]), SamplingParams(12), SamplingParams(3)]
    futures = [
        engine.submit(loaded.prompt(index), p, pieces[row].append)
        for row, (index, p) in enumerate(zip([0, 6, 0], params))
    ]
    stopped, other, short = (future.result(timeout=120) for future in futures)
    assert stopped.finish_reason == "stop" and stopped.text == free.text[: free.text.index(stop)]
    assert short.finish_reason == "length" and len(short.token_ids) == 3
    assert other.token_ids == loaded.reference(6, 12).token_ids
    for row, output in enumerate([stopped, other, short]):
        assert "".join(pieces[row]) == output.text
    assert len(pieces[0]) > 1 and stop not in "".join(pieces[0])


def test_seeded_sampling_does_not_depend_on_company(loaded: Loaded, engine: ContinuousEngine) -> None:
    sampled = SamplingParams(10, temperature=1.0, top_p=0.9, seed=11)
    alone = engine.submit(loaded.prompt(4), sampled).result(timeout=120)
    crowd = [engine.submit(loaded.prompt(1), SamplingParams(8)), engine.submit(loaded.prompt(4), sampled)]
    assert crowd[1].result(timeout=120).token_ids == alone.token_ids
    assert crowd[0].result(timeout=120).token_ids == loaded.reference(1, 8).token_ids


def test_a_too_long_prompt_is_rejected_with_what_to_do(loaded: Loaded) -> None:
    engine = loaded.engine(max_len=64)
    try:
        with pytest.raises(PromptTooLong, match="exceeds the engine's max_len of 64 tokens; shorten"):
            engine.submit(list(range(100, 150)), SamplingParams(max_tokens=20))
        # the same prompt with a budget that fits is fine
        assert engine.submit(list(range(100, 150)), SamplingParams(max_tokens=10)).result(timeout=60).token_ids
    finally:
        engine.close()


def test_cache_shape_and_cancelled_requests_free_their_slot(loaded: Loaded, engine: ContinuousEngine) -> None:
    config = loaded.model.config
    layer = engine.cache.layers[0]
    assert tuple(layer.keys.shape) == (3, config.num_key_value_heads, 512, config.head_dim)
    assert len(engine.cache.layers) == config.num_hidden_layers
    long = engine.submit(loaded.prompt(0), SamplingParams(400, min_tokens=400))
    wait_for(lambda: engine.stats.steps >= 3)
    engine.cancel(long)
    with pytest.raises(CancelledError):
        long.result(timeout=30)
    wait_for(lambda: engine.active == 0)
    assert engine.submit(loaded.prompt(1), SamplingParams(6)).result(timeout=60).token_ids == (
        loaded.reference(1, 6).token_ids
    )


def test_a_failing_forward_fails_its_requests_not_the_engine(loaded: Loaded, engine: ContinuousEngine) -> None:
    broken = engine.submit([1, 2, 10**7], SamplingParams(4))  # a token id the embedding does not have
    with pytest.raises(IndexError):
        broken.result(timeout=60)
    assert engine.submit(loaded.prompt(2), SamplingParams(5)).result(timeout=60).token_ids == (
        loaded.reference(2, 5).token_ids
    )


def test_close_fails_what_is_left_and_refuses_more(loaded: Loaded) -> None:
    engine = loaded.engine(max_slots=1)
    running = engine.submit(loaded.prompt(0), SamplingParams(400, min_tokens=400))
    queued = engine.submit(loaded.prompt(1), SamplingParams(5))
    wait_for(lambda: engine.stats.steps >= 1)
    engine.close()
    for future in (running, queued):
        with pytest.raises(RuntimeError, match="closed"):
            future.result(timeout=30)
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(loaded.prompt(1), SamplingParams(5))


def test_eager_attention_takes_the_additive_mask() -> None:
    eager = Loaded("eager")
    engine = eager.engine(max_slots=2)
    try:
        futures = [engine.submit(eager.prompt(index), SamplingParams(10)) for index in (3, 0, 2)]
        for index, future in zip((3, 0, 2), futures):
            assert future.result(timeout=120).token_ids == eager.reference(index, 10).token_ids
    finally:
        engine.close()


async def test_local_backend_batches_join_the_running_loop(loaded: Loaded) -> None:
    from experts.actor.expert_actor import ExpertActor
    from experts.backends.local import LocalBackend
    from experts.config._pool_spec import ExpertSpec
    from experts.types import GenerationRequest, Message

    spec = {"name": "cb", "backend": "local", "model": MODEL, "batching": {"max_batch_size": 4}}
    assert ExpertActor(spec).batcher.concurrency == 4  # one worker per slot hands batches over at once
    backend = LocalBackend(ExpertSpec.model_validate(spec))
    await backend.load()
    try:
        assert backend.describe()["engine"] == "continuous" and backend.joins_running_batch

        def ask(index: int, max_tokens: int) -> GenerationRequest:
            return GenerationRequest([Message("user", QUESTIONS[index])], max_tokens=max_tokens, temperature=0.0)

        first = asyncio.create_task(backend.generate([ask(0, 24)]))
        engine = backend._continuous
        while engine.stats.steps < 2:
            await asyncio.sleep(0.005)
        second = await backend.generate([ask(1, 6), ask(2, 8)])
        [long] = await first
        assert engine.stats.joined_running == 2
        assert long.text == loaded.reference(0, 24).text
        assert [c.text for c in second] == [loaded.reference(1, 6).text, loaded.reference(2, 8).text]
        assert all(c.batch_size == 3 and c.latency_s > 0 for c in second + [long])
    finally:
        backend.close()


def test_engine_option_is_checked() -> None:
    from experts.backends.local import LocalBackend
    from experts.config._pool_spec import ExpertSpec
    from experts.errors import BackendError

    static = LocalBackend(ExpertSpec(name="s", backend="local", model=MODEL, options={"engine": "static"}))
    assert not static.joins_running_batch and static.describe()["engine"] == "static"
    with pytest.raises(BackendError, match="not one of"):
        LocalBackend(ExpertSpec(name="x", backend="local", model=MODEL, options={"engine": "turbo"}))
    with pytest.raises(BackendError, match="options.max_slots must be a positive integer"):
        LocalBackend(ExpertSpec(name="x", backend="local", model=MODEL, options={"max_slots": 0}))
