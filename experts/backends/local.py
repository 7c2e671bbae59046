"""``local`` backend: a Hugging Face causal LM (safetensors or GGUF) run in this process.

Generation is CPU/GPU-bound and blocking, so it runs in a worker thread; the actor's
event loop stays free to queue the next batch. torch's thread count is set here, per
actor, on purpose: on small CPUs several actors with many threads each are much slower
than one thread each.

Our engine (``options.engine: native``, or ``auto`` where vLLM does not win; the pool puts ``auto`` and ``vllm``
experts on vLLM's engine instead where it can, ``experts.config._engine_choice``). Two modes (``local`` only):

- ``continuous`` (default): one ``experts.engine.continuous.ContinuousEngine`` per model, a decode
  loop over ``options.max_slots`` slots (default: ``batching.max_batch_size``) of
  ``options.max_len`` tokens (default: the model's context, at most 2048). Every batch the
  actor hands over is submitted to the running loop and joins it between two decode steps,
  so the actor lets several batches through at once (``joins_running_batch``). A
  completion's ``batch_size`` is the most requests that shared a forward with it; its
  ``latency_s`` runs from this call to its own last token.
- ``static``: ``experts.engine.static.BatchDecoder``, one batch per call, run to its end in a
  worker thread. The ``moe`` backend always uses it (its routing options apply per forward).

Structured output (``response_format``, ``experts.engine.grammar``), options of both ``local`` and ``moe``:

- ``schema_max_bytes`` (16384), ``schema_max_depth`` (16, at most 128), ``schema_max_properties`` (256),
  ``schema_max_pattern_cost`` (1000): the largest JSON Schema a request may bring, and the most its regex patterns
  may cost to compile (``experts._schema_limits``); a larger one fails as ``invalid_response_format`` before it is
  compiled;
- ``grammar_cache_size`` (64) and ``grammar_cache_mb`` (128): how many compiled grammars are kept per model, and
  their memory at most; the least recently used leave first;
- ``grammar_compile_timeout_s`` (10): how long a request waits for its schema's compile.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import Any, Callable

from experts.backends.base import Backend, DeltaSink
from experts.config import ExpertSpec
from experts.engine.tool_calls import (
    auto_call_tag,
    calls_from_text,
    calls_in_text,
    forced_call_schema,
    offers_calls,
    with_tools_preamble,
)
from experts.errors import BackendError, ErrorCode
from experts.types import Completion, GenerationRequest, TextDelta, Usage, as_text_turns

TextSinkFn = Callable[[int, str], None]  # (row of the batch, new text), called from the decoding thread

ENGINES = ("continuous", "static")
# options.engine names that mean our continuous engine here: the pool resolved them (experts.config._engine_choice)
CONTINUOUS_NAMES = ("auto", "native", "continuous")


class LocalBackend(Backend):
    """Runs one local model with batched decoding (see ``experts.engine.static``)."""

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec
        self._decoder: Any = None
        self._device = "cpu"
        self._dtype = "float32"
        self._continuous: Any = None  # ContinuousEngine while the model is resident (continuous engine)
        # options.engine means the MoE kernels to the moe backend; only ``local`` reads it as the decode engine.
        asked = str(spec.options.get("engine", "auto")) if spec.backend == "local" else "static"
        self._engine_kind = "continuous" if asked in CONTINUOUS_NAMES else asked
        self._wanted_vllm = asked == "vllm"  # the pool put it on no vLLM engine: load says why
        if self._engine_kind not in ENGINES and not self._wanted_vllm:
            names = ", ".join(("auto", "vllm", "native", *ENGINES))
            raise BackendError(f"expert {spec.name!r}: options.engine {asked!r} is not one of {names}")
        self.max_slots = _positive_option(spec, "max_slots", spec.batching.max_batch_size)
        self.grammar_settings = grammar_settings(spec)

    @property
    def joins_running_batch(self) -> bool:
        """True when batches join one running decode loop, so the actor should hand over several at once."""
        return self._engine_kind == "continuous"

    async def load(self) -> None:
        if self._wanted_vllm:
            from experts.config import PYTHON_VARIABLE, find_engine_environment

            raise BackendError(
                f"expert {self.spec.name!r} asks for engine vllm, but there is no engine environment "
                f"({find_engine_environment().source}): run `make engine-env`, or set ${PYTHON_VARIABLE} to a "
                "Python with vLLM (docs/local-models-and-moe.md)"
            )
        if self._decoder is not None:  # parked (or already resident): back onto its device, no disk read
            await asyncio.to_thread(self._decoder.model.to, self._device)
            await asyncio.to_thread(self._start_engine)
            return
        await asyncio.to_thread(self._load_blocking)

    async def park(self) -> bool:
        """Weights to host RAM so a later ``load`` is fast; False on CPU, where parking would free nothing."""
        if self._decoder is None or self._device != "cuda":
            return False
        await asyncio.to_thread(self._stop_engine)  # its KV cache is on the GPU too
        await asyncio.to_thread(self._decoder.model.to, "cpu")
        await asyncio.to_thread(_free_cuda_cache)
        return True

    async def unload(self) -> None:
        """Drop the model; its memory returns to the system (and to the GPU's allocator)."""
        await asyncio.to_thread(self._stop_engine)
        self._decoder = None
        await asyncio.to_thread(_free_cuda_cache)

    def _load_blocking(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from disk only
        import torch
        from transformers.utils import logging as hf_logging

        from experts.engine.static import BatchDecoder

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
        self._decoder = BatchDecoder(model, tokenizer, device, self.grammar_settings)
        self._device, self._dtype = device.type, str(dtype_name)
        self._start_engine()

    def _start_engine(self) -> None:
        """Start the continuous engine on the loaded model (no-op for the static engine or if running)."""
        if not self.joins_running_batch or self._continuous is not None:
            return
        from experts.engine.continuous import ContinuousEngine

        context = self._decoder.context_window
        max_len = _positive_option(self.spec, "max_len", min(context, 2048))
        try:
            self._continuous = ContinuousEngine(
                self._decoder.model,
                self._decoder.tokenizer,
                self._decoder.device,
                max_slots=self.max_slots,
                max_len=max_len,
                rows=self._decoder.rows,  # one cache of compiled grammars for _prepare's compile and the rows
            )
        except ValueError as error:
            raise BackendError(f"expert {self.spec.name!r}: {error}") from None

    def _stop_engine(self) -> None:
        engine, self._continuous = self._continuous, None
        if engine is not None:
            engine.close()

    def close(self) -> None:
        """Stop the continuous engine's thread (requests still running fail); the model stays loaded."""
        self._stop_engine()

    def _load_model(self, device: Any, dtype: Any) -> tuple[Any, Any, Any]:
        """(model on ``device``, tokenizer, directory) for the pool entry's ``model``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from experts.engine.embedded import prepare_model, resolve_model

        directory = prepare_model(resolve_model(self.spec.model))
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to(device)
        return model, tokenizer, directory

    def describe(self) -> dict[str, object]:
        facts: dict[str, object] = {"backend": "local", "model": self.spec.model, "device": self._device}
        facts.update(dtype=self._dtype, engine=self._engine_kind)
        if self.joins_running_batch:
            facts["max_slots"] = self.max_slots
        if self._decoder is not None:  # prompt plus answer, in tokens: a continuous engine's slot, else the model's
            engine = self._continuous if self._continuous is not None else self._decoder
            facts["context_window"] = engine.context_window
        return facts

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        if self._decoder is None:
            raise BackendError(f"expert {self.spec.name!r} was asked to generate before its model loaded")
        loop = asyncio.get_running_loop()
        forced = [forced_call_schema(r.tools, r.tool_choice, r.parallel_tool_calls) is not None for r in batch]
        offered = [not is_forced and offers_calls(r.tools, r.tool_choice) for r, is_forced in zip(batch, forced)]
        sink = None
        if on_delta is not None:
            # Deltas come from the decoding thread; hand them to the event loop that owns the sink. An answer that
            # holds or may hold calls is not streamed as text: it comes whole, its calls read out of it.
            def sink(index: int, text: str) -> None:
                if not forced[index] and not offered[index]:
                    loop.call_soon_threadsafe(on_delta, TextDelta(index, text))

        if self._continuous is not None:
            completions = await self._generate_continuous(batch, sink)
        else:
            completions = await asyncio.to_thread(self._generate_blocking, batch, sink)
        return [
            _as_calls(c) if is_forced else _with_calls(c) if may_call else c
            for c, is_forced, may_call in zip(completions, forced, offered)
        ]

    async def _generate_continuous(self, batch: list[GenerationRequest], sink: TextSinkFn | None) -> list[Completion]:
        """Submit every request to the running decode loop and wait for all of them."""
        engine, started = self._continuous, time.perf_counter()
        results: list[Completion | None] = [None] * len(batch)
        submitted = await asyncio.to_thread(self._submit_all, engine, batch, sink, results)
        queued_s = time.perf_counter() - started
        try:
            outputs = await asyncio.gather(*(asyncio.wrap_future(future) for _, future in submitted))
        except asyncio.CancelledError:  # the caller went away: free the slots
            for _, future in submitted:
                engine.cancel(future)
            raise
        for (position, _), output in zip(submitted, outputs):
            results[position] = self._completion(output, queued_s + output.seconds, output.batch_size)
        return [result for result in results if result is not None]

    def _submit_all(
        self, engine: Any, batch: list[GenerationRequest], sink: TextSinkFn | None, results: list[Completion | None]
    ) -> list[tuple[int, Any]]:
        """Tokenise and submit; requests that cannot run get a failed completion in ``results`` instead."""
        submitted = []
        try:
            for position, request in enumerate(batch):
                prepared = self._prepare(request, engine.context_window)
                if isinstance(prepared, Completion):
                    results[position] = prepared
                    continue
                ids, params = prepared
                on_text = (lambda text, position=position: sink(position, text)) if sink else None
                submitted.append((position, engine.submit(ids, params, on_text)))
        except Exception:  # e.g. the model was unloaded meanwhile: do not leave the others running
            for _, future in submitted:
                engine.cancel(future)
            raise
        return submitted

    def _prepare(self, request: GenerationRequest, window: int) -> tuple[list[int], Any] | Completion:
        """The request's tokens and sampling settings, or the failed completion of a request that cannot run (its
        response_format cannot be enforced, or it does not fit the context window); the rest of the batch runs."""
        from experts.engine.grammar import GrammarError, OutputFormat

        rows, grammar = self._decoder.rows, None
        call = forced_call_schema(request.tools, request.tool_choice, request.parallel_tool_calls)
        held = {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": call}} if call else None
        try:
            # a forced tool call, else calls the model may make (auto), else the response_format, as a grammar
            if call is None and offers_calls(request.tools, request.tool_choice):
                output_format = OutputFormat(auto_call_tag(request.tools or [], request.parallel_tool_calls), True)
            else:  # checked against the schema limits
                output_format = rows.output_format(held or request.response_format)
            if output_format is not None:
                grammar = rows.grammars.compile(output_format)  # cached per schema; the request's row takes it
        except (GrammarError, ValueError) as error:  # ValueError: tools xgrammar's structural tag refuses
            code = ErrorCode.INVALID_TOOLS if call or request.tools else ErrorCode.INVALID_RESPONSE_FORMAT
            return Completion.failed(str(error), self.spec.model, code=code)
        ids, params = self._tokenise(request), self._params(request, output_format, grammar)
        return self._context_error(ids, params.max_tokens, window) or (ids, params)

    def _params(self, request: GenerationRequest, output_format: Any, grammar: Any = None) -> Any:
        from experts.engine.decoding import SamplingParams

        return SamplingParams(
            max_tokens=request.max_tokens or self.spec.generation.max_tokens,
            temperature=request.temperature if request.temperature is not None else 0.0,
            top_p=request.top_p if request.top_p is not None else 1.0,
            stop=list(request.stop),
            seed=request.seed,
            output_format=output_format,
            grammar=grammar,
        )

    def _context_error(self, ids: list[int], budget: int, window: int) -> Completion | None:
        if len(ids) + budget <= window:
            return None
        context = self._decoder.context_window
        limit = f"{window} tokens" + (f" (options.max_len; the model allows {context})" if window < context else "")
        return Completion.failed(
            f"prompt of {len(ids)} tokens plus max_tokens {budget} exceeds the context window of {limit} of "
            f"{self.spec.model}; shorten the conversation or max_tokens",
            self.spec.model,
            code=ErrorCode.CONTEXT_LENGTH_EXCEEDED,
        )

    def _completion(self, output: Any, latency_s: float, batch_size: int) -> Completion:
        prompt_tokens, completion_tokens = output.prompt_tokens, len(output.token_ids)
        return Completion(
            text=output.text,
            finish_reason=output.finish_reason,
            usage=Usage(prompt_tokens, completion_tokens, self.spec.cost_of(prompt_tokens, completion_tokens) or 0.0),
            model=self.spec.model,
            latency_s=latency_s,
            batch_size=batch_size,
        )

    def _generate_blocking(self, batch: list[GenerationRequest], sink: TextSinkFn | None) -> list[Completion]:
        """The static engine: the whole batch in one ``BatchDecoder.generate``."""
        decoder = self._decoder
        started = time.perf_counter()
        results: list[Completion | None] = [None] * len(batch)
        prompts, params, positions = [], [], []
        for position, request in enumerate(batch):
            prepared = self._prepare(request, decoder.context_window)
            if isinstance(prepared, Completion):
                results[position] = prepared
                continue
            ids, request_params = prepared
            prompts.append(ids)
            params.append(request_params)
            positions.append(position)
        if prompts:
            # The decoder numbers rows 0..n-1; map them back to positions in the caller's batch.
            row_sink = (lambda row, text: sink(positions[row], text)) if sink else None
            outputs = decoder.generate(prompts, params, row_sink)
            elapsed = time.perf_counter() - started
            for position, output in zip(positions, outputs):
                results[position] = self._completion(output, elapsed, len(prompts))
        return [result for result in results if result is not None]

    def _tokenise(self, request: GenerationRequest) -> list[int]:
        tokenizer = self._decoder.tokenizer
        messages = as_text_turns(request.messages)  # a tool exchange earlier in the conversation is kept as text
        if offers_calls(request.tools, request.tool_choice) and request.tools:  # the model may call: show it how
            messages = with_tools_preamble(messages, request.tools)
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _as_calls(completion: Completion) -> Completion:
    """A forced call's answer as OpenAI's calls (the grammar held its text to the call's JSON)."""
    calls = calls_from_text(completion.text) if completion.error is None else ()
    if not calls:
        return completion  # failed, or cut short by max_tokens: the text stands, with its finish_reason
    return replace(completion, text="", finish_reason="tool_calls", tool_calls=calls)


def _with_calls(completion: Completion) -> Completion:
    """An answer the model was free to make with calls (``tool_choice: auto``): its ``<tool_call>`` blocks as
    OpenAI's calls, the text before them as the content; the answer as it is when it made none."""
    if completion.error is not None:
        return completion
    text, calls = calls_in_text(completion.text)
    if not calls:
        return completion
    return replace(completion, text=text, finish_reason="tool_calls", tool_calls=calls)


def _free_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _positive_option(spec: ExpertSpec, name: str, default: int, most: int | None = None) -> int:
    value = spec.options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackendError(f"expert {spec.name!r}: options.{name} must be a positive integer, not {value!r}")
    if most is not None and value > most:
        raise BackendError(f"expert {spec.name!r}: options.{name} must be at most {most}, not {value!r}")
    return value


# Deeper than this, the recursion of json.dumps and of xgrammar's schema reader is the risk the limit is there for.
MOST_SCHEMA_DEPTH = 128


def grammar_settings(spec: ExpertSpec) -> Any:
    """The expert's structured-output settings (``GrammarSettings``) from its options, with their defaults."""
    from experts._schema_limits import SchemaLimits
    from experts.engine.grammar import GrammarSettings

    default, limits = GrammarSettings(), SchemaLimits()
    timeout = _number_option(spec, "grammar_compile_timeout_s", default.compile_timeout_s, "seconds", 3600)
    cache_mb = _number_option(spec, "grammar_cache_mb", default.cache_mb, "MiB", 1024**2)
    return GrammarSettings(
        limits=SchemaLimits(
            max_bytes=_positive_option(spec, "schema_max_bytes", limits.max_bytes),
            max_depth=_positive_option(spec, "schema_max_depth", limits.max_depth, most=MOST_SCHEMA_DEPTH),
            max_properties=_positive_option(spec, "schema_max_properties", limits.max_properties),
            max_pattern_cost=_positive_option(spec, "schema_max_pattern_cost", limits.max_pattern_cost),
        ),
        cache_size=_positive_option(spec, "grammar_cache_size", default.cache_size),
        cache_mb=cache_mb,
        compile_timeout_s=timeout,
    )


def _number_option(spec: ExpertSpec, name: str, default: float, unit: str, most: float) -> float:
    value = spec.options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
        raise BackendError(
            f"expert {spec.name!r}: options.{name} must be a number of {unit} above 0 and at most {most}, not {value!r}"
        )
    return float(value)
