"""``local`` backend: a Hugging Face causal LM (safetensors or GGUF) run in this process.

Generation is CPU/GPU-bound and blocking, so it runs in a worker thread; the actor's
event loop stays free to queue the next batch. torch's thread count is set here, per
actor, on purpose: on small CPUs several actors with many threads each are much slower
than one thread each.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable

from experts.backends.base import BackendError, DeltaSink
from experts.spec import ExpertSpec
from experts.types import Completion, GenerationRequest, TextDelta, Usage

TextSinkFn = Callable[[int, str], None]  # (row of the batch, new text), called from the decoding thread


class LocalBackend:
    """Runs one local model with batched decoding (see ``experts.engine``)."""

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec
        self._decoder: Any = None
        self._device = "cpu"
        self._dtype = "float32"

    async def load(self) -> None:
        await asyncio.to_thread(self._load_blocking)

    def _load_blocking(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from disk only
        import torch
        from transformers.utils import logging as hf_logging

        from experts.engine import BatchDecoder

        hf_logging.disable_progress_bar()  # one bar per actor per load only clutters the server log
        torch.set_num_threads(self.spec.resources.torch_threads)
        wanted = self.spec.resources.device
        if wanted == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"expert {self.spec.name!r} asks for device cuda, but no CUDA device is visible")
        device = torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")
        dtype_name = self.spec.options.get("dtype", "bfloat16" if device.type == "cuda" else "float32")
        dtype = getattr(torch, str(dtype_name), None)
        if not isinstance(dtype, torch.dtype):
            raise BackendError(f"expert {self.spec.name!r}: options.dtype {dtype_name!r} is not a torch dtype")
        model, tokenizer, directory = self._load_model(device, dtype)
        model.eval()
        if tokenizer.chat_template is None:
            raise BackendError(f"{directory}: the tokenizer has no chat template; local experts need a chat model")
        self._decoder = BatchDecoder(model, tokenizer, device)
        self._device, self._dtype = device.type, str(dtype_name)

    def _load_model(self, device: Any, dtype: Any) -> tuple[Any, Any, Any]:
        """(model on ``device``, tokenizer, directory) for the pool entry's ``model``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from experts.embedded import prepare_model, resolve_model

        directory = prepare_model(resolve_model(self.spec.model))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to(device)
        return model, tokenizer, directory

    def describe(self) -> dict[str, object]:
        return {"backend": "local", "model": self.spec.model, "device": self._device, "dtype": self._dtype}

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        if self._decoder is None:
            raise BackendError(f"expert {self.spec.name!r} was asked to generate before its model loaded")
        loop = asyncio.get_running_loop()
        sink = None
        if on_delta is not None:
            # Deltas come from the decoding thread; hand them to the event loop that owns the sink.
            def sink(index: int, text: str) -> None:
                loop.call_soon_threadsafe(on_delta, TextDelta(index, text))

        return await asyncio.to_thread(self._generate_blocking, batch, sink)

    def _generate_blocking(self, batch: list[GenerationRequest], sink: TextSinkFn | None) -> list[Completion]:
        from experts.engine import SamplingParams

        decoder = self._decoder
        started = time.perf_counter()
        results: list[Completion | None] = [None] * len(batch)
        prompts, params, positions = [], [], []
        for position, request in enumerate(batch):
            ids = self._tokenise(request)
            budget = request.max_tokens or self.spec.generation.max_tokens
            if len(ids) + budget > decoder.context_window:
                results[position] = Completion.failed(
                    f"prompt of {len(ids)} tokens plus max_tokens {budget} exceeds the context window of "
                    f"{decoder.context_window} tokens of {self.spec.model}; shorten the conversation or max_tokens",
                    self.spec.model,
                    code="context_length_exceeded",
                )
                continue
            prompts.append(ids)
            params.append(
                SamplingParams(
                    max_tokens=budget,
                    temperature=request.temperature if request.temperature is not None else 0.0,
                    top_p=request.top_p if request.top_p is not None else 1.0,
                    stop=list(request.stop),
                    seed=request.seed,
                )
            )
            positions.append(position)
        if prompts:
            # The decoder numbers rows 0..n-1; map them back to positions in the caller's batch.
            row_sink = (lambda row, text: sink(positions[row], text)) if sink else None
            outputs = decoder.generate(prompts, params, row_sink)
            elapsed = time.perf_counter() - started
            for position, output in zip(positions, outputs):
                prompt_tokens, completion_tokens = output.prompt_tokens, len(output.token_ids)
                results[position] = Completion(
                    text=output.text,
                    finish_reason=output.finish_reason,
                    usage=Usage(
                        prompt_tokens, completion_tokens, self.spec.cost_of(prompt_tokens, completion_tokens) or 0.0
                    ),
                    model=self.spec.model,
                    latency_s=elapsed,
                    batch_size=len(prompts),
                )
        return [result for result in results if result is not None]

    def _tokenise(self, request: GenerationRequest) -> list[int]:
        tokenizer = self._decoder.tokenizer
        messages = [{"role": message.role, "content": message.content} for message in request.messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
