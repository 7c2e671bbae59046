"""The chat API's pipeline flow (``model: moesaic`` or ``moesaic/<policy>``): run or stream the pipeline, render its
result or events (``chat_render.py``), map its failures to statuses.

Runs in: the API server.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from orchestrator.pipeline.events import DecisionEvent, PipelineEvent
from orchestrator.pipeline.ledger import CallLedger
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineResult
from orchestrator.pipeline.steps import AllExpertsFailed
from orchestrator.pipeline.tool_calls import with_passthrough
from orchestrator.server.api.answers import AnswerResponse, AnswerStream
from orchestrator.server.api.chat_render import ChatChunks, completion_body, pipeline_event_chunks
from orchestrator.server.api.chat_translate import CLIENT_ERROR_PARAMS, REPLACED_CODES, pipeline_request
from orchestrator.server.api.model_names import EXPERT_PREFIX
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.errors import APIError
from orchestrator.server.observability.metrics import record_pipeline
from router import NoExpertAvailable, PolicyUnavailable

log = logging.getLogger(__name__)


async def answer_pipeline(
    orchestrator: Orchestrator, body: ChatCompletionRequest, ledger: CallLedger
) -> AnswerResponse | AnswerStream:
    if body.logprobs:
        having = [name for name in orchestrator.pool.expert_names if orchestrator.pool.honours(name, "logprobs")]
        raise APIError(
            400,
            f"model {body.model!r} combines several models' answers, which has no token log-probabilities; ask one "
            "expert whose engine reports them"
            + (f" ({', '.join(EXPERT_PREFIX + name for name in having)})" if having else " (none in this pool does)"),
            param="logprobs",
            code="logprobs_unavailable",
        )
    request = pipeline_request(body, orchestrator, ledger)
    response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        events = orchestrator.stream(request)
        try:
            first = await anext(events)  # routing happens before any byte is sent, so errors get a status
        except Exception as error:
            raise pipeline_error(error) from None
        assert isinstance(first, DecisionEvent)
        headers = {"x-moesaic-experts": ",".join(first.decision.experts)}
        chunks = ChatChunks(response_id, created, body.model)
        return AnswerStream(_pipeline_chunks(first, events, body, chunks, orchestrator.pool.honours), headers=headers)
    try:
        result = await orchestrator.run(request)
    except Exception as error:
        raise pipeline_error(error) from None
    record_pipeline(body.model, result)
    body_json = completion_body(
        response_id=response_id,
        created=created,
        model=body.model,
        text=result.text,
        finish_reason=result.finish_reason,
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        metadata=with_passthrough(
            result.metadata(), orchestrator.pool.honours, result.decision.experts, body.passthrough()
        ),
        tool_calls=result.verdict.tool_calls,
    )
    return AnswerResponse(body_json, headers={"x-moesaic-experts": ",".join(result.decision.experts)})


def pipeline_error(error: Exception) -> APIError:
    if isinstance(error, APIError):
        return error
    if isinstance(error, PolicyUnavailable):
        return APIError(400, str(error), param=error.param, code="policy_unavailable")
    if isinstance(error, NoExpertAvailable):
        return APIError.unavailable(str(error), "no_healthy_expert")
    if isinstance(error, AllExpertsFailed):
        codes = set(error.codes or ())
        if len(codes) == 1 and (code := next(iter(codes))) in CLIENT_ERROR_PARAMS:
            return APIError(400, str(error), param=CLIENT_ERROR_PARAMS[code], code=code)
        if codes and codes <= REPLACED_CODES:  # every expert's actor or replica was lost: Ray is replacing them
            return APIError.unavailable(str(error), "experts_replaced")
        return APIError(502, str(error), "upstream_error", code="experts_failed")
    log.exception("pipeline failed", exc_info=error)
    return APIError(500, f"internal error: {type(error).__name__}: {error}", "internal_error")


async def _pipeline_chunks(
    first: DecisionEvent,
    events: AsyncIterator[PipelineEvent],
    body: ChatCompletionRequest,
    chunks: ChatChunks,
    honours: Callable[[str, str], bool],
) -> AsyncIterator[dict[str, Any]]:
    """The stream's chunks: the assistant's role, then each event as ``chat_render`` renders it."""
    passed = body.passthrough()
    progress = bool(body.moesaic and body.moesaic.events)  # the pipeline's progress as event chunks, when asked
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def metadata(result: PipelineResult) -> dict[str, Any]:
        record_pipeline(body.model, result)
        return with_passthrough(result.metadata(), honours, result.decision.experts, passed)

    yield chunks.delta({"role": "assistant", "content": ""})
    try:
        for chunk in pipeline_event_chunks(first, chunks, progress, include_usage, metadata):
            yield chunk
        async for event in events:
            for chunk in pipeline_event_chunks(event, chunks, progress, include_usage, metadata):
                yield chunk
    except Exception as error:  # the status line is sent already: report in the stream, OpenAI style
        yield pipeline_error(error).body()
    finally:
        await events.aclose()  # the stream closed early (client gone): this cancels the pipeline's work
