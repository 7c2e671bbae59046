"""Plain data that crosses the backend protocol and the Ray actor boundary.

These are dataclasses, not pydantic models: they live inside the system, are pickled by
Ray on every call and must stay cheap. Validation happens at the edges (HTTP schemas,
pool files), never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from experts.moe.options import RoutingOptions


class AnswerKind(StrEnum):
    """How a final answer is read out of an expert's text, for votes and grading (``aggregator/_extract.py``).

    Named by pool files (``aggregation.answer_kind``, or ``auto``: inferred per query), by labelled data sets,
    and by the aggregator; it lives here, beside the other data every package shares.
    """

    CHOICE = "choice"  # a multiple-choice letter
    NUMBER = "number"  # a number, normalised (1,234.50 -> 1234.5)
    EXACT = "exact"  # the short answer after "Answer:"
    TEXT = "text"  # the whole answer, normalised


Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "error", "tool_calls"]


@dataclass(frozen=True)
class ToolCall:
    """A function call a model asked for (OpenAI's ``tool_calls`` item); ``arguments`` is its JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One chat turn. An assistant turn may carry the tool calls it made; a ``tool`` turn answers one of them."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


def as_text_turns(messages: list[Message]) -> list[dict[str, str]]:
    """The conversation for a model that cannot call tools: tool calls and results written out as text.

    Local chat templates know system, user and assistant turns; a tool exchange earlier in the
    conversation is kept as text (``[called name(arguments)]``, ``[result of tool call ID]``), not dropped.
    """
    turns: list[dict[str, str]] = []
    for message in messages:
        if message.role == "tool":
            result = f"[result of tool call {message.tool_call_id}]\n{message.content}"
            turns.append({"role": "user", "content": result})
            continue
        calls = [f"[called {call.name}({call.arguments})]" for call in message.tool_calls]
        turns.append({"role": message.role, "content": "\n".join(filter(None, [message.content, *calls]))})
    return turns


@dataclass
class GenerationRequest:
    """What one model call needs: the conversation and its sampling parameters.

    ``None`` means "use the expert's default" (from the pool file); the actor fills the
    defaults in before the backend sees the request, so backends can rely on values.
    """

    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    request_id: str = ""
    traceparent: str = ""  # the calling span (W3C trace context), so the actor's span joins the request's trace
    moe_routing: RoutingOptions | None = None  # steers MoE experts (``moe`` backend); others ignore it
    # OpenAI's tools, tool_choice and response_format, validated at the HTTP edge; backends that can use them
    # pass them to the model or enforce them (``local``: response_format), see ExpertSpec.supports
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # False: at most one call per answer; None: the model's default
    # token log-probabilities: the sampled token's and this many alternatives' (0-20); None: not asked. Only
    # experts on vLLM's engine answer them (``ExpertPool.honours``); the HTTP edge refuses the others
    logprobs: int | None = None


@dataclass(frozen=True)
class TopLogprob:
    """A candidate token at one position of an answer, and its log-probability (OpenAI's ``top_logprobs`` item)."""

    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log-probability, and the most likely candidates at its position (most likely first)."""

    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


class TextPiece(str):
    """A piece of streamed text that carries its tokens' log-probabilities (when the request asked for them).

    A ``str``, so everything that passes streamed text along or joins it keeps working unchanged; the chat route,
    which answers with log-probabilities, reads ``logprobs``.
    """

    logprobs: tuple[TokenLogprob, ...]

    def __new__(cls, text: str, logprobs: tuple[TokenLogprob, ...] = ()) -> TextPiece:
        piece = super().__new__(cls, text)
        piece.logprobs = logprobs
        return piece


@dataclass(frozen=True)
class Usage:
    """Token counts and cost of one or more model calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost + other.cost,
        )


@dataclass(frozen=True)
class Completion:
    """One model answer, with what it cost and how long it took."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str = ""
    latency_s: float = 0.0
    batch_size: int = 1
    error: str | None = None
    error_code: str | None = None  # e.g. "context_length_exceeded": the caller's mistake, not ours
    tool_calls: tuple[ToolCall, ...] = ()  # finish_reason "tool_calls": the model asks the caller to run these
    logprobs: tuple[TokenLogprob, ...] | None = None  # every generated token's, when the request asked for them

    @classmethod
    def failed(cls, message: str, model: str = "", code: str | None = None) -> Completion:
        """A request the backend could not answer (the rest of its batch still could)."""
        return cls(text="", finish_reason="error", usage=Usage(), model=model, error=message, error_code=code)


@dataclass(frozen=True)
class TextDelta:
    """A piece of streamed text for the request at ``index`` of a batch (with its tokens' log-probabilities, when
    the request asked for them)."""

    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
