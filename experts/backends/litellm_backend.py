"""``litellm`` backend: any model LiteLLM reaches (OpenAI, Anthropic, vLLM, Ollama...).

A batch becomes concurrent async calls: hosted APIs batch on their side. LiteLLM is
imported lazily (its import takes seconds) with the local cost map, so nothing is
fetched at start. For OpenAI-protocol models the backend builds one SDK client at load and
hands it to every call, as LiteLLM's own Router does (otherwise LiteLLM hashes the client
parameters on each call to find its cached client: ~0.4 ms a call, measured by bench/breakdown.py).
An expert that lists ``deployments`` is called through LiteLLM's ``Router`` over them instead
(``litellm_router.py``: balancing, cooldowns, ordered and larger-context fallbacks).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from experts.backends.base import Backend, DeltaSink
from experts.backends.litellm_errors import error_code
from experts.backends.litellm_router import build_router, deployment_states
from experts.config import ExpertSpec
from experts.errors import BackendError
from experts.types import Completion, GenerationRequest, Message, TextDelta, ToolCall, Usage

_PASSED_OPTIONS = ("api_base", "api_version", "timeout", "num_retries", "extra_headers")


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


class LiteLLMBackend(Backend):
    """One LiteLLM model; ``options`` may carry api_base, api_key_env, timeout, num_retries."""

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec
        self._litellm: Any = None
        self._client: Any = None  # an openai.AsyncOpenAI for OpenAI-protocol models, built once
        self._router: Any = None  # LiteLLM's Router over the expert's deployments, when it lists some

    async def load(self) -> None:
        self._litellm = await asyncio.to_thread(_import_litellm)
        if self.spec.deployments:
            self._router = build_router(self.spec, self._litellm)
            return
        key_env = self.spec.options.get("api_key_env")
        if key_env and not os.environ.get(key_env):
            raise BackendError(
                f"expert {self.spec.name!r}: environment variable {key_env} (options.api_key_env) is not set"
            )
        self._client = self._openai_client()

    def _openai_client(self) -> Any:
        """One SDK client for every call, or None to leave the client to LiteLLM.

        Only for a model LiteLLM routes over the OpenAI protocol to an ``api_base`` the pool file names, with a
        key from ``api_key_env``: everything else (the provider's default address, keys and bases read from the
        environment, other providers) stays LiteLLM's own resolution, errors included.
        """
        api_base = self.spec.options.get("api_base")
        key_env = self.spec.options.get("api_key_env")
        if not api_base or not key_env:
            return None
        try:
            provider = self._litellm.get_llm_provider(self.spec.model, api_base=api_base)[1]
        except Exception:  # LiteLLM does not know the provider: let each call report it
            return None
        if provider != "openai":
            return None
        import openai

        # no SDK retries (the pool retries); the per-call timeout is passed with each call
        return openai.AsyncOpenAI(api_key=os.environ[key_env], base_url=api_base, max_retries=0)

    def describe(self) -> dict[str, object]:
        facts: dict[str, object] = {
            "backend": "litellm",
            "model": self.spec.model,
            "api_base": self.spec.options.get("api_base"),
        }
        if self._litellm is not None:  # experts/_pricing.py reads this: None means LiteLLM knows no price
            facts["price_per_1m"] = self._map_price()
            facts["context_window"] = self._context_window()
        if self._router is not None:
            facts["deployments"] = deployment_states(self.spec, self._router)
        return facts

    def _context_window(self) -> int | None:
        """The model's input limit in tokens from LiteLLM's local model map, or None when it has none."""
        try:
            info = self._litellm.get_model_info(self.spec.model)
        except Exception:  # LiteLLM raises a plain Exception for a model it does not know
            return None
        window = info.get("max_input_tokens") or info.get("max_tokens")
        return int(window) if window else None

    def _map_price(self) -> tuple[float, float] | None:
        """(input, output) dollars per 1M tokens from LiteLLM's local price map, or None when it has none."""
        try:
            info = self._litellm.get_model_info(self.spec.model)
        except Exception:  # LiteLLM raises a plain Exception for a model it does not know
            return None
        input_cost, output_cost = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if input_cost is None and output_cost is None:
            return None
        return (float(input_cost or 0.0) * 1e6, float(output_cost or 0.0) * 1e6)

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        if self._litellm is None:
            raise BackendError(f"expert {self.spec.name!r} was asked to generate before load()")
        calls = [self._one(index, request, on_delta) for index, request in enumerate(batch)]
        return list(await asyncio.gather(*calls))

    def _arguments(self, request: GenerationRequest, stream: bool) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [_message_dict(m) for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": stream,
        }
        if request.stop:
            arguments["stop"] = list(request.stop)
        if request.seed is not None:
            arguments["seed"] = request.seed
        # the caller's tools and output format go to the model as they came (this backend can use them)
        for passed in ("tools", "tool_choice", "response_format"):
            if getattr(request, passed) is not None:
                arguments[passed] = getattr(request, passed)
        if request.tools and request.parallel_tool_calls is not None:
            arguments["parallel_tool_calls"] = request.parallel_tool_calls
        if stream:
            arguments["stream_options"] = {"include_usage": True}
        # the pool retries (resilience.retry): LiteLLM's router and the provider SDK's own retries would stack
        # under ours, so both are off unless the pool file asks for LiteLLM's (options.num_retries)
        arguments["num_retries"] = 0
        arguments["max_retries"] = 0
        for option in _PASSED_OPTIONS:
            if option in self.spec.options:
                arguments[option] = self.spec.options[option]
        key_env = self.spec.options.get("api_key_env")
        if key_env:
            arguments["api_key"] = os.environ.get(key_env)
        if self._client is not None:
            arguments["client"] = self._client
        if self._router is not None:  # each deployment carries its own model, endpoint and key
            for per_deployment in ("api_key", "api_base", "api_version", "client", "max_retries", "num_retries"):
                arguments.pop(per_deployment, None)
            arguments["model"] = self.spec.name  # the primaries' group
        return arguments

    async def _one(self, index: int, request: GenerationRequest, on_delta: DeltaSink | None) -> Completion:
        started = time.perf_counter()
        try:
            if on_delta is None:
                response = await self._complete(self._arguments(request, stream=False))
                choice = response.choices[0]
                text = choice.message.content or ""
                finish = choice.finish_reason
                usage = response.usage
                calls = tuple(_tool_call(call) for call in getattr(choice.message, "tool_calls", None) or [])
            else:
                text, finish, usage, calls = await self._stream(index, request, on_delta)
        except Exception as error:  # reported per request, coded by its class and status (litellm_errors.py)
            code = error_code(error, self._litellm)
            return Completion.failed(f"{type(error).__name__}: {error}", self.spec.model, code)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return Completion(
            text=text,
            finish_reason="tool_calls" if calls else "length" if finish == "length" else "stop",
            usage=Usage(prompt_tokens, completion_tokens, self._cost(prompt_tokens, completion_tokens)),
            model=self.spec.model,
            latency_s=time.perf_counter() - started,
            tool_calls=calls,
        )

    async def _stream(
        self, index: int, request: GenerationRequest, on_delta: DeltaSink
    ) -> tuple[str, Any, Any, tuple[ToolCall, ...]]:
        pieces: list[str] = []
        finish, usage = None, None
        calls: dict[int, dict[str, str]] = {}  # tool calls arrive in pieces, keyed by their index
        response = await self._complete(self._arguments(request, stream=True))
        async for chunk in response:
            if getattr(chunk, "usage", None):
                usage = chunk.usage
            for choice in chunk.choices or []:
                content = getattr(choice.delta, "content", None)
                if content:
                    pieces.append(content)
                    on_delta(TextDelta(index, content))
                for piece in getattr(choice.delta, "tool_calls", None) or []:
                    call = calls.setdefault(piece.index or 0, {"id": "", "name": "", "arguments": ""})
                    call["id"] = piece.id or call["id"]
                    call["name"] += (piece.function and piece.function.name) or ""
                    call["arguments"] += (piece.function and piece.function.arguments) or ""
                finish = choice.finish_reason or finish
        return "".join(pieces), finish, usage, tuple(ToolCall(**calls[key]) for key in sorted(calls))

    async def _complete(self, arguments: dict[str, Any]) -> Any:
        """One call: through the Router over the deployments, or straight to LiteLLM."""
        if self._router is not None:
            return await self._router.acompletion(**arguments)
        return await self._litellm.acompletion(**arguments)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        declared = self.spec.cost_of(prompt_tokens, completion_tokens)
        if declared is not None:
            return declared
        try:
            prompt_cost, completion_cost = self._litellm.cost_per_token(
                model=self.spec.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        except Exception:  # model missing from LiteLLM's price map: cost unknown, count 0
            return 0.0
        return float(prompt_cost + completion_cost)


def _message_dict(message: Message) -> dict[str, Any]:
    """A turn in OpenAI's shape, tool calls and tool results included."""
    turn: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        turn["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        turn["tool_call_id"] = message.tool_call_id
    return turn


def _tool_call(call: Any) -> ToolCall:
    return ToolCall(id=call.id or "", name=call.function.name or "", arguments=call.function.arguments or "")
