"""The chat API's direct flow (``model: expert/<name>``): one expert's answer, plain or streamed, rendered by
``chat_render.py``, with its failures mapped to statuses.

Runs in: the API server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from experts.runtime import ExpertCallFailed, ExpertUnavailable
from experts.types import Completion, GenerationRequest, TextPiece
from orchestrator.pipeline.ledger import CallLedger
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import CallRecord
from orchestrator.pipeline.tool_calls import with_passthrough
from orchestrator.server.api.answers import AnswerResponse, AnswerStream
from orchestrator.server.api.chat_render import chunk_body, completion_body, usage_chunk_body
from orchestrator.server.api.chat_translate import CLIENT_ERROR_PARAMS, REPLACED_CODES, generation_of
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.api.tool_schemas import tool_calls_delta
from orchestrator.server.errors import APIError
from orchestrator.server.observability.metrics import record_calls


async def answer_direct(
    orchestrator: Orchestrator, body: ChatCompletionRequest, name: str, ledger: CallLedger
) -> AnswerResponse | AnswerStream:
    pool = orchestrator.pool
    if name not in pool.expert_names:
        raise APIError(
            404, f"no expert named {name!r}; see GET /v1/models", "not_found_error", "model", "model_not_found"
        )
    if not pool.is_healthy(name):
        raise APIError.unavailable(f"expert {name!r} is not healthy; see GET /healthz", "expert_unhealthy")
    if body.logprobs and not pool.honours(name, "logprobs"):
        raise APIError(
            400,
            f"expert {name!r} does not report token log-probabilities (its engine has none: only experts on vLLM's "
            "engine do, see capabilities.logprobs in GET /v1/models); leave logprobs unset or false",
            param="logprobs",
            code="logprobs_unavailable",
        )
    request = generation_of(body)
    response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    headers = {"x-moesaic-experts": name}
    if body.stream:
        chunks = _direct_chunks(orchestrator, name, request, body, response_id, created, ledger)
        return AnswerStream(chunks, headers=headers)
    started = time.monotonic()
    try:
        completion = await orchestrator.call_expert(name, request)
    except (ExpertCallFailed, ExpertUnavailable) as error:
        if isinstance(error, ExpertCallFailed):  # counted as the expert's failed call (/metrics, /v1/pool)
            record_calls(body.model, [CallRecord.failure(name, "direct", str(error), time.monotonic() - started)])
        raise direct_error(error) from None
    record = CallRecord.of(name, "direct", completion)
    ledger.record(record)
    record_calls(body.model, [record])
    if completion.error is not None:
        raise direct_error(ExpertCallFailed(completion.error, completion.error_code))
    usage = completion.usage
    metadata = {"expert": name, "calls": [asdict(record)], "cost": usage.cost}
    metadata = with_passthrough(metadata, pool.honours, [name], body.passthrough())
    return AnswerResponse(
        completion_body(
            response_id=response_id,
            created=created,
            model=body.model,
            text=completion.text,
            finish_reason=completion.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            metadata=metadata,
            tool_calls=completion.tool_calls,
            logprobs=completion.logprobs if body.logprobs else None,
        ),
        headers=headers,
    )


def direct_error(error: Exception) -> APIError:
    if isinstance(error, ExpertUnavailable):
        return APIError.unavailable(str(error), "expert_unhealthy")
    if isinstance(error, ExpertCallFailed) and error.code in CLIENT_ERROR_PARAMS:
        return APIError(400, str(error), param=CLIENT_ERROR_PARAMS[error.code], code=error.code)
    if isinstance(error, ExpertCallFailed) and error.code in REPLACED_CODES:
        return APIError.unavailable(str(error), "expert_replaced")
    return APIError(502, str(error), "upstream_error", code="expert_failed")


async def _direct_chunks(
    orchestrator: Orchestrator,
    name: str,
    request: GenerationRequest,
    body: ChatCompletionRequest,
    response_id: str,
    created: int,
    ledger: CallLedger,
) -> AsyncIterator[dict[str, Any]]:
    yield chunk_body(response_id, created, body.model, {"role": "assistant", "content": ""})
    items = orchestrator.stream_expert(name, request)
    try:
        completion: Completion | None = None
        async for item in items:
            if isinstance(item, str):
                ledger.streamed(name, item)  # billed as written if the stream is dropped before its end
                logprobs = (item.logprobs if isinstance(item, TextPiece) else ()) if body.logprobs else None
                yield chunk_body(response_id, created, body.model, {"content": str(item)}, logprobs=logprobs)
            else:
                completion = item
                ledger.record(CallRecord.of(name, "direct", completion))
        if completion is None or completion.error is not None:
            message = completion.error if completion else "stream ended without a completion"
            raise ExpertCallFailed(
                f"expert {name!r} could not answer: {message}", completion.error_code if completion else None
            )
        if completion.tool_calls:
            yield chunk_body(response_id, created, body.model, tool_calls_delta(completion.tool_calls))
        final = chunk_body(response_id, created, body.model, {}, completion.finish_reason)
        record = CallRecord.of(name, "direct", completion)
        record_calls(body.model, [record])
        final["moesaic"] = with_passthrough(
            {"expert": name, "calls": [asdict(record)], "cost": completion.usage.cost},
            orchestrator.pool.honours,
            [name],
            body.passthrough(),
        )
        yield final
        if body.stream_options and body.stream_options.include_usage:
            usage = completion.usage
            yield usage_chunk_body(response_id, created, body.model, usage.prompt_tokens, usage.completion_tokens)
    except Exception as error:
        yield direct_error(error).body()
    finally:
        await items.aclose()  # type: ignore[attr-defined]  # an async generator: closing cancels the expert call
