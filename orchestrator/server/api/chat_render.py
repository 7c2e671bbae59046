"""Chat completions as OpenAI shapes them: a ``chat.completion`` object, its chunks, and the pipeline's events as
chunks. The one place a chat answer is rendered; the flows (``chat_pipeline.py``, ``chat_direct.py``) hand their
results and events here.

Runs in: the API server. May import: ``orchestrator.pipeline`` (its events and results), ``experts.types``,
``api/tool_schemas.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from experts.types import TokenLogprob, ToolCall
from orchestrator.pipeline.events import (
    AnswerEvent,
    DecisionEvent,
    DoneEvent,
    EscalationEvent,
    ExpertTextEvent,
    PipelineEvent,
    TextEvent,
)
from orchestrator.pipeline.state import PipelineResult
from orchestrator.server.api.tool_schemas import tool_calls_body, tool_calls_delta


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
    tool_calls: tuple[ToolCall, ...] = (),
    logprobs: tuple[TokenLogprob, ...] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object, plus our ``moesaic`` metadata."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls_body(tool_calls)
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": openai_finish_reason(finish_reason),
        "logprobs": None if logprobs is None else logprobs_body(logprobs),
    }
    body = _envelope(response_id, created, model, "chat.completion", [choice])
    return {**body, "usage": usage_body(prompt_tokens, completion_tokens), "moesaic": metadata}


def chunk_body(
    response_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: tuple[TokenLogprob, ...] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with a single choice (and its tokens' log-probabilities, when asked)."""
    choice = {
        "index": 0,
        "delta": delta,
        "finish_reason": openai_finish_reason(finish_reason) if finish_reason else None,
        "logprobs": None if logprobs is None else logprobs_body(logprobs),
    }
    return _envelope(response_id, created, model, "chat.completion.chunk", [choice])


def logprobs_body(tokens: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    """OpenAI's ``choices[].logprobs``: each token with its log-probability, UTF-8 bytes and top candidates."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    content = [
        {**entry(token.token, token.logprob), "top_logprobs": [entry(top.token, top.logprob) for top in token.top]}
        for token in tokens
    ]
    return {"content": content, "refusal": None}


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
    return reason if reason in ("length", "tool_calls") else "stop"


@dataclass(frozen=True)
class ChatChunks:
    """The chunks of one streamed chat completion: its id, creation time and model on every chunk."""

    response_id: str
    created: int
    model: str

    def delta(
        self, delta: dict[str, Any], finish_reason: str | None = None, logprobs: tuple[TokenLogprob, ...] | None = None
    ) -> dict[str, Any]:
        return chunk_body(self.response_id, self.created, self.model, delta, finish_reason, logprobs)

    def progress(self, event: dict[str, Any]) -> dict[str, Any]:
        """A chunk with no choices that carries one of the pipeline's progress events (``moesaic.events``)."""
        return {**self.delta({}), "choices": [], "moesaic": event}

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return usage_chunk_body(self.response_id, self.created, self.model, prompt_tokens, completion_tokens)


def pipeline_event_chunks(
    event: PipelineEvent,
    chunks: ChatChunks,
    progress: bool,
    include_usage: bool,
    metadata: Callable[[PipelineResult], dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """One pipeline event as chat chunks: the answer's text and its end always, the progress events (the decision,
    each expert's answer and text, an escalation's review) when ``progress``; ``metadata`` renders the result's
    ``moesaic`` object on the last chunk."""
    if isinstance(event, TextEvent):
        yield chunks.delta({"content": event.text})
    elif isinstance(event, DoneEvent):
        result = event.result
        if result.verdict.tool_calls:
            yield chunks.delta(tool_calls_delta(result.verdict.tool_calls))
        final = chunks.delta({}, result.finish_reason)
        final["moesaic"] = metadata(result)
        yield final
        if include_usage:
            yield chunks.usage(result.usage.prompt_tokens, result.usage.completion_tokens)
    elif not progress:
        return
    elif isinstance(event, DecisionEvent):
        yield chunks.progress({"event": "decision", "decision": event.decision.model_dump()})
    elif isinstance(event, AnswerEvent):
        yield chunks.progress({"event": "answer", **asdict(event.answer), "call": asdict(event.call)})
    elif isinstance(event, ExpertTextEvent):
        yield chunks.progress({"event": "expert_delta", "expert": event.expert, "text": event.text})
    elif isinstance(event, EscalationEvent):
        yield chunks.progress({"event": "escalation", "escalation": event.escalation.model_dump()})
