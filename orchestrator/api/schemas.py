"""OpenAI-compatible request and response shapes, validated at the HTTP edge.

Fields OpenAI defines that we do not act on (``frequency_penalty``, ``logit_bias``...)
are accepted and ignored, as OpenAI-compatible servers commonly do, so existing clients
work unchanged. Our extension lives in one optional ``moesaic`` object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from experts.moe.options import RoutingOptions
from experts.types import Message


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    """A message as clients send it; ``developer`` is OpenAI's newer name for ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def to_message(self) -> Message:
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        return Message("system" if self.role == "developer" else self.role, text)


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

    def consensus_share(self) -> float | None | Literal["pool"]:
        """What the pipeline's ``consensus`` gets: a share, None (never), or "pool" (the pool's setting)."""
        if not self.shortcut:
            return None
        return "pool" if self.consensus is None else self.consensus


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    seed: int | None = None
    user: str | None = None
    moesaic: MoesaicOptions | None = None

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
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "moesaic"
    description: str = ""


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


def _envelope(response_id: str, created: int, model: str, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": response_id, "object": kind, "created": created, "model": model, "choices": choices}


def completion_body(
    *,
    response_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """A ``chat.completion`` object, plus our ``moesaic`` metadata."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": openai_finish_reason(finish_reason),
        "logprobs": None,
    }
    body = _envelope(response_id, created, model, "chat.completion", [choice])
    return {**body, "usage": usage_body(prompt_tokens, completion_tokens), "moesaic": metadata}


def chunk_body(
    response_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with a single choice."""
    choice = {
        "index": 0,
        "delta": delta,
        "finish_reason": openai_finish_reason(finish_reason) if finish_reason else None,
        "logprobs": None,
    }
    return _envelope(response_id, created, model, "chat.completion.chunk", [choice])


def usage_chunk_body(
    response_id: str, created: int, model: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """The chunk sent when ``stream_options.include_usage``: no choices, the whole request's usage."""
    body = _envelope(response_id, created, model, "chat.completion.chunk", [])
    return {**body, "usage": usage_body(prompt_tokens, completion_tokens)}


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def openai_finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"
