"""``VllmEngineActor``: one vLLM ``AsyncLLM`` holding one model, fed by every expert that names the model.

Runs in: the model's engine actor, in the engine environment (vLLM imported on ``start``, never at import time, so
the driver can name this class without vLLM installed). The pool starts one per engine group
(``experts.runtime._engines``) with the group's resources; each persona's ``vllm`` backend calls ``start`` with the
model's directory (the first call loads, the others wait for it) and then streams its requests through ``generate``.
A persona whose residency manager evicts it calls ``release``: when no persona holds the model any more, the engine
sleeps (parked, where vLLM has sleep mode: CUDA) or stops (its memory freed; the next ``start`` builds it again).

vLLM's scheduler is the batcher: requests from every persona join the running batch at the next step, and share
one KV cache (prefix caching on: the personas' system prompts repeat). ``generate`` streams text deltas (with each
token's log-probability, when asked) and ends with the request's usage as vLLM counted it; when the caller goes away
(its Ray task is cancelled) the generator is closed and vLLM aborts the request, freeing its slot. ``stats`` says how
many requests ran at once, which is how the tests see that requests share steps.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from experts.errors import ErrorCode


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs one model (from the pool file's ``options``, the same for every persona of a group)."""

    dtype: str = "float32"  # CPU: float32 (bf16 is fast only with AVX-512 BF16 or AMX); CUDA: "auto"
    device: str = "cpu"
    max_model_len: int = 2048
    max_num_seqs: int = 64  # requests in the running batch at once
    kv_cache_gb: float = 1.0  # CPU: VLLM_CPU_KVCACHE_SPACE (set by the pool in the actor's environment)
    gpu_memory_utilization: float = 0.85  # CUDA: the share of the GPU the engine takes
    tensor_parallel_size: int = 1  # CUDA: GPUs one model spans (the expert's resources.num_gpus)
    enable_prefix_caching: bool = True
    enforce_eager: bool = True  # no graph capture: start-up in seconds (CUDA graphs: set false)
    sleep_mode: bool = False  # CUDA: parking puts the engine to sleep (weights to host RAM), waking brings it back
    kv_cache_pinned: bool = False  # CUDA: the KV cache takes exactly kv_cache_gb (residency budgets count on it)
    tool_parser: str | None = None  # vLLM's tool parser for tool_choice auto (hermes, llama3_json, ...): tools.py
    seed: int = 0

    def engine_args(self, model: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": model,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
            "disable_log_stats": True,
        }
        if self.device == "cuda":
            args.update(
                gpu_memory_utilization=self.gpu_memory_utilization,
                tensor_parallel_size=self.tensor_parallel_size,
                enable_sleep_mode=self.sleep_mode,
            )
            if self.kv_cache_pinned:
                args["kv_cache_memory_bytes"] = int(self.kv_cache_gb * 1024**3)
        return args


def kv_cache_gb(asked: float, device: str) -> float:
    """The KV cache an engine takes for ``asked`` GiB: as asked on CUDA; on CPU whole GiB, at least one (vLLM's CPU
    build reads ``VLLM_CPU_KVCACHE_SPACE`` as an integer), a fraction rounded up."""
    return float(asked) if device == "cuda" else float(max(1, math.ceil(asked)))


@dataclass
class EngineStats:
    """What the engine has served: requests, tokens, aborts, and the most requests it held at once."""

    requests: int = 0
    aborted: int = 0
    failed: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    loads: int = 0  # engines built (the first start, and every start after a stop)
    stops: int = 0  # engines shut down because no persona held the model any more
    sleeps: int = 0  # times put to sleep (parked) instead


class VllmEngineActor:
    """One model on vLLM's async engine (see the module docstring)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = EngineSettings(**settings)
        self.model_dir: str | None = None
        self.load_seconds: float | None = None
        self.stats_ = EngineStats()
        self._engine: Any = None
        self._tokenizer: Any = None
        self._starting = asyncio.Lock()  # one start or release at a time
        self.holders: set[str] = set()  # the personas that have the model loaded
        self.asleep = False

    async def start(self, model_dir: str, holder: str = "") -> dict[str, Any]:
        """Have ``model_dir`` loaded for ``holder``: built on the first call (concurrent callers wait for it),
        woken if it sleeps, rebuilt if it was stopped; the engine's facts."""
        async with self._starting:
            if self.model_dir is not None and model_dir != self.model_dir:
                raise ValueError(f"this engine holds {self.model_dir}; it cannot also serve {model_dir}")
            if self._engine is None:
                await self._load(model_dir)
            elif self.asleep:
                await self._engine.wake_up()
                self.asleep = False
            self.holders.add(holder)
        return self.describe()

    async def preload(self, model_dir: str) -> None:
        """Build the engine before any persona asks: the pool calls this as it starts the actor (with a model ready
        on disk), so the engine loads while the personas' actors start. It is held for nobody; the personas'
        ``start`` finds it built."""
        async with self._starting:
            if self._engine is None and self.model_dir in (None, model_dir):
                await self._load(model_dir)

    async def _load(self, model_dir: str) -> None:
        started = time.perf_counter()
        self._engine = await asyncio.to_thread(self._build, model_dir)
        self._tokenizer = self._engine.get_tokenizer()
        self.model_dir, self.load_seconds = model_dir, time.perf_counter() - started
        self.stats_.loads += 1

    async def release(self, holder: str, park: bool = False) -> str:
        """``holder`` no longer needs the model (its residency manager evicted it). While another persona holds
        it, nothing changes; when none does, it leaves memory: asleep (``park``, where the engine has vLLM's sleep
        mode: weights to host RAM, back in a moment) or stopped (the next ``start`` loads it from disk). Returns
        where the model is now: ``resident``, ``parked`` or ``disk``."""
        async with self._starting:
            self.holders.discard(holder)
            if self.holders:
                return "resident"
            if self._engine is None:
                return "disk"
            if park and self.settings.sleep_mode:
                if not self.asleep:
                    await self._engine.sleep(level=1)
                    self.asleep = True
                    self.stats_.sleeps += 1
                return "parked"
            await self.shutdown()
            self.stats_.stops += 1
            return "disk"

    def _build(self, model_dir: str) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from experts.vllm.tools import known_parser

        if self.settings.tool_parser and not known_parser(self.settings.tool_parser):
            raise ValueError(
                f"options.tool_parser {self.settings.tool_parser!r} is not one of vLLM's tool parsers "
                "(see vllm/tool_parsers: hermes, llama3_json, mistral, qwen3_xml, ...)"
            )

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from disk only
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.settings.engine_args(model_dir)))

    def describe(self) -> dict[str, Any]:
        """Facts for the personas' health reports."""
        return {
            "engine": "vllm",
            "engine_loaded": self._engine is not None and not self.asleep,
            "sleep_mode": self.settings.sleep_mode,
            "engine_model_dir": self.model_dir,
            "engine_load_seconds": self.load_seconds,
            "context_window": self.settings.max_model_len,
            "prefix_caching": self.settings.enable_prefix_caching,
            "tool_parser": self.settings.tool_parser,
            **{f"engine_{key}": value for key, value in asdict(self.settings).items() if key in ("dtype", "device")},
        }

    async def stats(self) -> dict[str, int]:
        return asdict(self.stats_)

    async def generate(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream one request: ``{"text": delta}`` items, then ``{"done": ...}`` with vLLM's counts and finish."""
        from experts.engine.tool_calls import with_tools_preamble
        from experts.vllm.sampling import prompt_of, sampling_params, token_logprobs
        from experts.vllm.tools import calls_of, plan_tools

        if self._engine is None or self.asleep:
            raise RuntimeError("the engine's model is not loaded (not started, or released): load the expert first")
        stats = self.stats_
        request_id = f"{payload.get('request_id') or 'req'}-{os.urandom(6).hex()}"  # unique within the engine
        try:
            plan = plan_tools(payload, self.settings.tool_parser, self._tokenizer)
            if plan is not None and plan.mode == "tagged":  # the tools described in the system prompt, as ours does
                prompt = prompt_of(self._tokenizer, with_tools_preamble(payload["messages"], plan.tools))
            else:
                prompt = prompt_of(self._tokenizer, payload["messages"], plan.tools if plan else None)
            params = sampling_params(payload, plan.schema if plan else None, plan.tag if plan else None)
            params.skip_special_tokens = plan.skip_special_tokens if plan else True
        except ValueError as error:  # e.g. a response_format vLLM cannot enforce, a tool_choice naming no tool
            code = ErrorCode.INVALID_TOOLS if payload.get("tools") else ErrorCode.INVALID_RESPONSE_FORMAT
            yield _failed(str(error), code)
            return
        held: list[str] = []  # a tool plan reads its calls out of the whole answer: its text comes at the end
        stats.requests += 1
        stats.in_flight += 1
        stats.most_in_flight = max(stats.most_in_flight, stats.in_flight)
        started, prompt_tokens, completion_tokens, finish = time.perf_counter(), 0, 0, None
        shared = 1  # the most requests the engine held at once while this one ran (its "batch size")
        finished = False
        outputs = self._engine.generate(prompt, params, request_id)
        try:
            async for output in outputs:
                prompt_tokens = len(output.prompt_token_ids or ())
                piece = output.outputs[0]
                completion_tokens += len(piece.token_ids)  # DELTA outputs: the new tokens of this step
                finish = piece.finish_reason or finish
                shared = max(shared, stats.in_flight)
                if plan is not None:
                    held.append(piece.text)
                elif params.logprobs is not None and piece.logprobs:
                    rows = token_logprobs(self._tokenizer, piece.token_ids, piece.logprobs, params.logprobs)
                    yield {"text": piece.text, "logprobs": rows}  # text may lag its tokens (stop strings)
                elif piece.text:
                    yield {"text": piece.text}
            finished = True
        except ValueError as error:  # vLLM's validation: a prompt longer than the context, bad parameters
            stats.failed += 1
            code = ErrorCode.CONTEXT_LENGTH_EXCEEDED if "longer than" in str(error) or "context" in str(error) else None
            yield _failed(f"{type(error).__name__}: {error}", code)
            return
        finally:
            await outputs.aclose()  # the caller went away (cancelled, or closed us): vLLM aborts the request
            stats.in_flight -= 1
            if not finished:
                stats.aborted += 1  # the caller went away: vLLM aborted the request when its generator closed
            stats.prompt_tokens += prompt_tokens
            stats.completion_tokens += completion_tokens
        calls: list[list[str]] = []
        if plan is not None:
            try:
                text, calls = calls_of(plan, "".join(held), self._tokenizer)
            except ValueError as error:  # a forced call cut off by max_tokens is not JSON
                if finish != "length":
                    yield _failed(f"the model's tool call could not be read ({error})", None)
                    return
                text, calls = "".join(held), []  # as on our engine: the cut text, finish_reason length
            if text:
                yield {"text": text}
        yield {
            "done": True,
            "tool_calls": calls,
            "finish_reason": "length" if finish == "length" else "tool_calls" if calls else "stop",
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "latency_s": time.perf_counter() - started,
            "batch_size": shared,
        }

    async def shutdown(self) -> None:
        """Stop the engine (its worker process, its memory); ``start`` builds it again."""
        if self._engine is not None:
            engine, self._engine, self.asleep = self._engine, None, False
            await asyncio.to_thread(engine.shutdown)


def _failed(message: str, code: str | None) -> dict[str, Any]:
    return {"done": True, "error": message, "error_code": code}
