"""The ``vllm`` engine of a ``local`` expert, seen from the expert's own actor: a client of the shared engine.

Runs in: a persona's expert actor (the API server's environment; vLLM is not imported here). The pool starts the
model's engine actor (``experts.runtime._engines``) and tells each persona its name; ``load`` prepares the model's
directory (an ``embedded:`` model is dequantised once, as for the native engine) and has the engine load it, and
``generate`` streams every request of a batch into the engine at once, where vLLM's scheduler batches them with
the other personas' requests. A request whose caller goes away is cancelled here, which cancels its engine task, and
vLLM aborts it. Usage comes from vLLM's token counts, priced at the expert's price; token log-probabilities, when
the request asks for them, come with each piece of text and with the completion; tool calls (``tools.py``, in the
engine) come with the completion.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from experts._schema_limits import SchemaLimits, SchemaTooLarge, check_schema
from experts.backends.base import Backend, DeltaSink
from experts.config import ExpertSpec
from experts.errors import BackendError, ErrorCode
from experts.types import (
    Completion,
    GenerationRequest,
    TextDelta,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
    as_text_turns,
)
from experts.vllm.engine_actor import kv_cache_gb

DEFAULT_SLOTS = 64  # requests one persona lets into the engine at once (the engine's own max_num_seqs bounds all)


class VllmBackend(Backend):
    """One persona of a model served by a shared vLLM engine actor named ``engine_name``."""

    def __init__(self, spec: ExpertSpec, engine_name: str, namespace: str | None = None) -> None:
        self.spec = spec
        self.engine_name = engine_name
        self.namespace = namespace
        self.max_slots = int(spec.options.get("max_slots", DEFAULT_SLOTS))
        self._engine: Any = None
        self._facts: dict[str, Any] = {}
        self.limits = schema_limits_of(spec)  # checked here: the shared engine compiles schemas into grammars

    schedules_itself = True  # vLLM's scheduler is the batcher: the actor hands requests over one by one

    @property
    def joins_running_batch(self) -> bool:
        return True  # vLLM's scheduler takes requests between two steps: let many through at once

    async def load(self) -> None:
        import ray

        from experts.engine.embedded import prepare_model, resolve_model

        directory = await asyncio.to_thread(lambda: prepare_model(resolve_model(self.spec.model)))
        try:
            self._engine = ray.get_actor(self.engine_name, namespace=self.namespace)
        except ValueError:
            raise BackendError(
                f"expert {self.spec.name!r}: its vLLM engine actor {self.engine_name!r} is not running "
                "(the pool starts it; see the pool's log for why it did not start)"
            ) from None
        self._facts = await self._engine.start.remote(str(directory), self.spec.name)

    async def park(self) -> bool:
        """Put the engine to sleep (weights to host RAM) where it has vLLM's sleep mode and no other persona holds
        it; False where it has none (the lifecycle unloads instead)."""
        if self._engine is None or not self._facts.get("sleep_mode"):
            return False
        where = await self._engine.release.remote(self.spec.name, True)
        self._engine, self._facts = None, {**self._facts, "engine_loaded": where == "resident"}
        return bool(where in ("parked", "resident"))

    async def unload(self) -> None:
        """Let go of the model: the engine stops when no other persona holds it (its memory freed)."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            where = await engine.release.remote(self.spec.name)
            self._facts = {**self._facts, "engine_loaded": where == "resident"}

    @property
    def runtime_memory_gb(self) -> float:
        """What the engine takes beyond the weights: its KV cache (``options.kv_cache_gb``; whole GiB on CPU)."""
        return kv_cache_gb(float(self.spec.options.get("kv_cache_gb", 1.0)), "cuda" if self.spec.on_gpu else "cpu")

    def describe(self) -> dict[str, object]:
        return {"backend": "local", "model": self.spec.model, "engine_actor": self.engine_name, **self._facts}

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        if self._engine is None:
            raise BackendError(f"expert {self.spec.name!r} was asked to generate before its engine started")
        return list(await asyncio.gather(*(self._one(i, request, on_delta) for i, request in enumerate(batch))))

    async def _one(self, index: int, request: GenerationRequest, on_delta: DeltaSink | None) -> Completion:
        import ray

        refused = self.over_limits(request)
        if refused is not None:
            return refused

        started = time.perf_counter()
        stream = self._engine.generate.remote(payload_of(request))
        pieces: list[str] = []
        logprobs: list[TokenLogprob] = []
        done: dict[str, Any] = {}
        try:
            async for ref in stream:
                item = await ref
                if "text" in item:
                    tokens = tuple(logprobs_of(item.get("logprobs", ())))
                    pieces.append(item["text"])
                    logprobs.extend(tokens)
                    if on_delta is not None:
                        on_delta(TextDelta(index, item["text"], tokens))
                else:
                    done = item
        except asyncio.CancelledError:
            ray.cancel(stream)  # the engine's task ends, and vLLM aborts the request
            raise
        if done.get("error"):
            return Completion.failed(f"expert {self.spec.name!r}: {done['error']}", self.spec.model, done["error_code"])
        prompt, written = int(done.get("prompt_tokens", 0)), int(done.get("completion_tokens", 0))
        calls = tuple(ToolCall(_call_id(), name, args) for name, args in done.get("tool_calls", []))
        return Completion(
            text="".join(pieces),
            finish_reason=done.get("finish_reason", "stop"),
            tool_calls=calls,
            usage=Usage(prompt, written, self.spec.cost_of(prompt, written) or 0.0),
            model=self.spec.model,
            latency_s=time.perf_counter() - started,
            batch_size=int(done.get("batch_size", 1)),
            logprobs=tuple(logprobs) if request.logprobs is not None else None,
        )

    def over_limits(self, request: GenerationRequest) -> Completion | None:
        """A response_format schema or a tool's parameters over the expert's ``options.schema_max_*`` limits,
        refused before it reaches the engine, as our engine refuses them (requests reach experts from batch mode and
        Python callers too, not only through the HTTP edge's own limits)."""
        schema = ((request.response_format or {}).get("json_schema") or {}).get("schema")
        checks = [("response_format.json_schema.schema", schema, ErrorCode.INVALID_RESPONSE_FORMAT)]
        for index, tool in enumerate(request.tools or []):
            where = f"tools[{index}].function.parameters"
            checks.append((where, (tool.get("function") or {}).get("parameters"), ErrorCode.INVALID_TOOLS))
        for where, schema, code in checks:
            if schema is None:
                continue
            try:
                check_schema(schema, where, self.limits, setting_prefix="options.schema_")
            except SchemaTooLarge as error:
                return Completion.failed(f"expert {self.spec.name!r}: {error}", self.spec.model, code)
        return None


def schema_limits_of(spec: ExpertSpec) -> SchemaLimits:
    """The expert's schema limits (``options.schema_max_*``), as our engine reads them."""
    from experts.backends.local import grammar_settings

    return grammar_settings(spec).limits


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def payload_of(request: GenerationRequest) -> dict[str, Any]:
    """The request as plain data for the engine actor (another environment: no classes of ours cross)."""
    return {
        "request_id": request.request_id,
        "messages": as_text_turns(request.messages),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "seed": request.seed,
        "response_format": request.response_format,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "logprobs": request.logprobs,
    }


def logprobs_of(rows: Any) -> list[TokenLogprob]:
    """The engine's plain ``[token, logprob, [[token, logprob], ...]]`` rows as ``TokenLogprob``s."""
    return [TokenLogprob(token, logprob, tuple(TopLogprob(t, lp) for t, lp in top)) for token, logprob, top in rows]
