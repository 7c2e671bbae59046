"""OpenAI-compatible request and response shapes, validated at the HTTP edge.

Fields OpenAI defines that we do not act on (``frequency_penalty``, ``logit_bias``...)
are accepted and ignored, as OpenAI-compatible servers commonly do, so existing clients
work unchanged; a field OpenAI does not define is a 400 naming it, as OpenAI answers an
unrecognized argument (a typo such as ``max_token`` must not pass silently). Our extension
lives in one optional ``moesaic`` object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from experts.moe import RoutingOptions
from experts.types import Message
from orchestrator.server.api.tool_schemas import ResponseFormatIn, ToolCallIn, ToolChoice, ToolIn


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    """A message as clients send it; ``developer`` is OpenAI's newer name for ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCallIn], Field(max_length=128)] | None = None  # an assistant turn's calls
    tool_call_id: str | None = None  # a tool turn: the call it answers

    @model_validator(mode="after")
    def _tool_turns_complete(self) -> ChatMessageIn:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message may carry tool_calls")
        return self

    def to_message(self) -> Message:
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        calls = tuple(call.to_call() for call in self.tool_calls or [])
        return Message("system" if self.role == "developer" else self.role, text, calls, self.tool_call_id)


class StreamOptions(BaseModel):
    include_usage: bool = False


ExpertIndex = Annotated[int, Field(ge=0, le=4095)]


class MoERoutingIn(BaseModel):
    """Steering for experts served by the ``moe`` backend: how their MoE layers pick experts.

    Ranges against a particular model (how many experts it has) are checked by the expert;
    a request that does not fit gets a 400 naming the problem.
    """

    model_config = ConfigDict(extra="forbid")

    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="keep each token's best experts until their probability reaches top_p"
    )
    min_weight: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="null experts: drop routing slots whose weight is below this floor"
    )
    disabled: Annotated[list[ExpertIndex], Field(max_length=4096)] = Field(
        default_factory=list, description="expert indices never chosen"
    )
    forced: Annotated[list[ExpertIndex], Field(max_length=64)] = Field(
        default_factory=list, description="expert indices always chosen"
    )
    max_experts: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="routing slots per token (default: the model's top-k)"
    )

    @model_validator(mode="after")
    def _disjoint(self) -> MoERoutingIn:
        both = sorted(set(self.disabled) & set(self.forced))
        if both:
            raise ValueError(f"experts {both} are both disabled and forced")
        return self

    def to_options(self) -> RoutingOptions:
        return RoutingOptions(
            top_p=self.top_p,
            min_weight=self.min_weight,
            disabled=tuple(sorted(set(self.disabled))),
            forced=tuple(dict.fromkeys(self.forced)),
            max_experts=self.max_experts,
        )


class MoesaicOptions(BaseModel):
    """Per-request control of the pipeline (``extra_body={"moesaic": {...}}`` in the openai client)."""

    model_config = ConfigDict(extra="forbid")

    k: Annotated[int, Field(ge=1, le=16)] | None = Field(None, description="how many experts answer")
    experts: Annotated[list[str], Field(min_length=1, max_length=16)] | None = Field(
        None, description="answer with exactly these experts, skipping routing"
    )
    strategy: Literal["passthrough", "vote", "synthesize", "rank"] | None = Field(
        None, description="how the answers become one (default: the pool's aggregation.strategy)"
    )
    consensus: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="share of agreeing answers that skips the aggregator (default: the pool's)"
    )
    shortcut: bool = Field(True, description="false: never take the consensus short-cut for this request")
    aggregator_max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = Field(
        None, description="the aggregator's own token budget (default: the pool's aggregation.max_tokens)"
    )
    moe_routing: MoERoutingIn | None = Field(None, description="steer experts on the moe backend (others ignore it)")
    events: bool = Field(
        False,
        description="streaming only: also send the pipeline's progress as chunks without choices whose moesaic "
        "object is an event (decision, each expert's answer as it lands, escalation)",
    )
    budget: Annotated[float, Field(gt=0.0, le=100.0)] | None = Field(
        None,
        description="moesaic/cost and moesaic/escalate: spend like a mean cost of this x the best single "
        "expert's (default: the pool's routing.budget)",
    )

    def consensus_share(self) -> float | None | Literal["pool"]:
        """What the pipeline's ``consensus`` gets: a share, None (never), or "pool" (the pool's setting)."""
        if not self.shortcut:
            return None
        return "pool" if self.consensus is None else self.consensus


MAX_CHOICES = 16  # n: each choice is a whole run of the pipeline

# OpenAI's chat-completion parameters that do not change what we do: accepted (any value) and ignored
OPENAI_IGNORED_FIELDS = (
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "metadata",
    "modalities",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "safety_identifier",
    "service_tier",
    "store",
    "verbosity",
    "web_search_options",
)


def _document_ignored(schema: dict[str, Any]) -> None:
    """The OpenAPI document lists the ignored parameters too, as accepted (any value)."""
    for name in OPENAI_IGNORED_FIELDS:
        schema["properties"].setdefault(name, {"description": "OpenAI parameter, accepted and ignored"})


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_ignored)

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = Field(
        1, description="how many independent answers (whole runs; usage and cost are their sums)"
    )
    logprobs: bool | None = Field(
        None,
        description="token log-probabilities: answered by experts on vLLM's engine (expert/<name>, see their card's "
        "capabilities); refused for the pipeline, whose answer is combined from several models",
    )
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = Field(
        None, description="how many of the most likely tokens to list at each position; needs logprobs true"
    )
    seed: int | None = None
    user: str | None = None
    moesaic: MoesaicOptions | None = None
    # passed to the experts that can use them (litellm backend); see orchestrator/pipeline/tool_calls.py
    tools: Annotated[list[ToolIn], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = Field(
        None, description="false: at most one tool call per answer (forced calls on our engine, hosted models)"
    )
    response_format: ResponseFormatIn | None = None

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, choice: Any, info: Any) -> Any:
        tools = info.data.get("tools")
        if choice is None or choice == "none":
            return choice
        if not tools:
            raise ValueError("tool_choice needs tools: list the functions the model may call in 'tools'")
        if not isinstance(choice, str) and choice.function.name not in {tool.function.name for tool in tools}:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not one of the tools")
        return choice

    def passthrough(self) -> dict[str, Any]:
        """``tools``, ``tool_choice`` and ``response_format`` as plain data for the experts (absent ones left out)."""
        return {
            "tools": [tool.model_dump(exclude_none=True) for tool in self.tools] if self.tools else None,
            "tool_choice": (
                self.tool_choice
                if self.tool_choice is None or isinstance(self.tool_choice, str)
                else self.tool_choice.model_dump()
            ),
            "response_format": self.response_format.model_dump(exclude_none=True) if self.response_format else None,
        }

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        """OpenAI's parameters we do not act on are dropped here; anything else unknown stays, to be refused."""
        ignored = [key for key in OPENAI_IGNORED_FIELDS if key not in cls.model_fields]  # a field we act on wins
        if isinstance(data, dict) and any(key in data for key in ignored):
            return {key: value for key, value in data.items() if key not in ignored}
        return data

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, count: int | None, info: Any) -> int | None:
        if count and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: set logprobs to true as well")
        return count

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
        if not any(message.role == "user" for message in messages):
            raise ValueError("at least one message must have role 'user'")
        return messages

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_asked(self) -> int | None:
        """How many candidates per token the caller wants with the log-probabilities; None: none asked."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ModelPricing(BaseModel):
    """What one expert's calls are charged at, in dollars per 1M tokens (``experts/_pricing.py``)."""

    source: Literal["pool_file", "litellm_price_map", "self_hosted", "none"] = Field(
        description="none: a hosted model with no known price; its calls count $0 against spend budgets"
    )
    input_per_1m: float | None = None
    output_per_1m: float | None = None


class ModelCapabilities(BaseModel):
    """What a model answers to: the parameters it honours (the rest are accepted and ignored, or refused)."""

    streaming: bool = True
    tools: bool = Field(description="tools and tool_choice reach a model that can call them")
    response_format: bool = Field(description="json_object / json_schema answers are enforced or passed on")
    logprobs: bool = Field(False, description="logprobs and top_logprobs are answered (experts on vLLM's engine)")
    n: bool = True


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "moesaic"
    description: str = ""
    context_window: int | None = Field(
        None, description="prompt plus answer in tokens, where known (the pipeline: its smallest routable expert's)"
    )
    capabilities: ModelCapabilities | None = None
    pricing: ModelPricing | None = Field(None, description="experts only: their per-token price and its source")
    engine: str | None = Field(
        None, description="local experts: their engine (vllm: a shared vLLM engine; continuous or static: ours)"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
