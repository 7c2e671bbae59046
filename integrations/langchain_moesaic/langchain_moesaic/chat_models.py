"""``ChatMoesaic``: LangChain's OpenAI chat model, pointed at a Moesaic server, with its routing metadata.

Moesaic speaks the OpenAI chat-completions protocol, so the model builds on
``langchain_openai.BaseChatOpenAI`` (sync, async, streaming, tool calling and structured output
come from there, as for other OpenAI-compatible providers) and adds what is Moesaic's own:

- ``response_metadata["moesaic"]``: the server's ``moesaic`` object (routing ``decision``, each
  expert's ``answers``, every ``call``, ``timings_ms``; on the last chunk when streaming);
- routing per model instance or per call: ``k``, ``experts``, ``strategy`` (sent as the request's
  ``moesaic`` object; ``model="moesaic/<policy>"`` or ``"expert/<name>"`` choose the route);
- ``base_url`` and ``api_key`` from ``MOESAIC_BASE_URL`` and ``MOESAIC_API_KEY``; usage is streamed
  by default (the server supports ``stream_options.include_usage``).

``bind_tools`` sends the tools to the server, which passes them to every expert that can call tools
(hosted models, and local ones on either engine, whose calls a grammar holds well-formed); the pool votes
over the experts' calls, and ``moesaic.passthrough`` in the metadata names who saw the tools and who did not.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import LangSmithParams
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.utils import from_env, secret_from_env
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import ConfigDict, Field, SecretStr

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# sent when no key is configured: the openai client insists on one, a server with auth off ignores it,
# and one with auth on answers 401 (then set MOESAIC_API_KEY to a key from `moesaic keys create`)
NO_KEY = "no-key"

Strategy = Literal["passthrough", "vote", "synthesize", "rank"]


class ChatMoesaic(BaseChatOpenAI):
    """Chat model for a Moesaic server: several LLM experts answer together behind one OpenAI-style API.

    Setup: run a server (``moesaic serve``), then::

        from langchain_moesaic import ChatMoesaic

        model = ChatMoesaic(base_url="http://127.0.0.1:8000/v1", k=2)
        reply = model.invoke("What is 12 * 7?")
        reply.content                                   # the answer
        reply.usage_metadata                            # tokens of every model call of the request
        reply.response_metadata["moesaic"]["decision"]  # who answered, and why

    Key init args: ``model`` (``"moesaic"``, ``"moesaic/<policy>"`` or ``"expert/<name>"``), ``base_url``
    (env ``MOESAIC_BASE_URL``), ``api_key`` (env ``MOESAIC_API_KEY``; only when the server has auth on),
    ``k``, ``experts``, ``strategy``, plus the usual ``temperature``, ``max_tokens``, ``stop``, ``timeout``,
    ``max_retries``, ``streaming``.
    """

    model_config = ConfigDict(populate_by_name=True)

    model_name: str = Field(default="moesaic", alias="model")
    """``moesaic`` (the routed pipeline), ``moesaic/<policy>``, or ``expert/<name>`` (one expert)."""
    openai_api_key: SecretStr | None = Field(
        alias="api_key", default_factory=secret_from_env("MOESAIC_API_KEY", default=NO_KEY)
    )
    """The server's API key (``Authorization: Bearer msk-...``); needed only when the server has auth on."""
    openai_api_base: str | None = Field(
        alias="base_url", default_factory=from_env("MOESAIC_BASE_URL", default=DEFAULT_BASE_URL)
    )
    """The server's ``/v1`` URL."""
    stream_usage: bool | None = True
    """Moesaic reports the whole request's usage at the end of a stream."""
    use_responses_api: bool | None = False
    """Moesaic serves chat completions, not OpenAI's Responses API."""
    k: int | None = Field(default=None, ge=1, le=16)
    """How many experts answer (default: the pool's ``routing.k``)."""
    experts: list[str] | None = None
    """Answer with exactly these experts, skipping routing."""
    strategy: Strategy | None = None
    """How the experts' answers become one (default: the pool's ``aggregation.strategy``)."""

    @property
    def _llm_type(self) -> str:
        return "moesaic-chat"

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"openai_api_key": "MOESAIC_API_KEY"}

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_moesaic", "chat_models"]

    @classmethod
    def is_lc_serializable(cls) -> bool:
        # langchain_core.load revives only the classes of its own allowlist, which a package outside
        # LangChain cannot join: rebuild the model from its parameters instead of dumpd/load
        return False

    @property
    def _default_params(self) -> dict[str, Any]:
        """OpenAI's parameters, plus the routing settings as the request's ``moesaic`` object."""
        params = super()._default_params
        routing = {
            key: value
            for key, value in (("k", self.k), ("experts", self.experts), ("strategy", self.strategy))
            if value is not None
        }
        if routing:
            extra = dict(params.get("extra_body") or {})
            extra["moesaic"] = {**routing, **(extra.get("moesaic") or {})}  # extra_body's own keys win
            params["extra_body"] = extra
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "moesaic"
        return params

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> ChatResult:
        result = super()._create_chat_result(response, generation_info)
        body = response if isinstance(response, dict) else response.model_dump()
        if body.get("moesaic") is not None:
            for generation in result.generations:
                generation.message.response_metadata["moesaic"] = body["moesaic"]
        return result

    def _convert_chunk_to_generation_chunk(
        self, chunk: dict, default_chunk_class: type, base_generation_info: dict | None
    ) -> ChatGenerationChunk | None:
        generation = super()._convert_chunk_to_generation_chunk(chunk, default_chunk_class, base_generation_info)
        if generation is not None and chunk.get("moesaic") is not None:  # the stream's last content chunk
            generation.message.response_metadata["moesaic"] = chunk["moesaic"]
        return generation
