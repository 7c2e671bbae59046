"""``POST /v1/chat/completions``: the pipeline (``model: moesaic``) or one expert (``expert/<name>``)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request
from pydantic import ValidationError

from experts.errors import ErrorCode
from experts.runtime.pool import ExpertCallFailed, ExpertUnavailable
from experts.types import Completion, GenerationRequest, TextPiece
from orchestrator.pipeline.graph import AllExpertsFailed
from orchestrator.pipeline.ledger import CallLedger
from orchestrator.pipeline.orchestrator import (
    AnswerEvent,
    DecisionEvent,
    DoneEvent,
    EscalationEvent,
    ExpertTextEvent,
    Orchestrator,
    PipelineEvent,
    TextEvent,
)
from orchestrator.pipeline.state import CallRecord, PipelineRequest
from orchestrator.pipeline.tool_calls import with_passthrough
from orchestrator.server.api.answers import AnswerResponse, AnswerStream
from orchestrator.server.api.choices import all_or_none, merged_chunks, merged_completion, samples
from orchestrator.server.api.gate import Gate
from orchestrator.server.api.model_names import EXPERT_PREFIX, PIPELINE_MODEL
from orchestrator.server.api.openapi import CHAT_RESPONSES, json_body
from orchestrator.server.api.schemas import ChatCompletionRequest, chunk_body, completion_body, usage_chunk_body
from orchestrator.server.api.tool_schemas import tool_calls_delta
from orchestrator.server.errors import APIError, from_validation_error
from orchestrator.server.observability.context import current_request_id
from orchestrator.server.observability.metrics import record_calls, record_pipeline
from router.decision import RoutingDecision
from router.recruit import NoExpertAvailable, PolicyUnavailable

log = logging.getLogger(__name__)

# expert failures that are the caller's mistake (400, naming the field), not the expert's (502)
CLIENT_ERROR_PARAMS = {
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: "messages",
    ErrorCode.INVALID_MOE_ROUTING: "moesaic.moe_routing",
    ErrorCode.INVALID_RESPONSE_FORMAT: "response_format",
}

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest), responses=CHAT_RESPONSES)
async def chat_completions(http_request: Request) -> Any:
    orchestrator: Orchestrator = http_request.app.state.orchestrator
    gate = Gate.open(http_request)  # key's models and limits, rate limits, cache, journal, disconnects
    try:
        body = _validate(await gate.read_body())  # counted against the key's rate first, however bad the body
        http_request.state.model = body.model  # the metrics and the access log name it
        cached = await gate.admit(body, orchestrator.pool.spec)
        if cached is not None:
            return cached
        response = await gate.run(_answer(orchestrator, body, gate.ledger))
    except BaseException as error:
        await gate.failed(error)
        raise
    return await gate.answered(response)


async def _answer(
    orchestrator: Orchestrator, body: ChatCompletionRequest, ledger: CallLedger
) -> AnswerResponse | AnswerStream:
    """The answer; with ``n`` > 1, ``n`` independent ones as one response (``choices.py``). Every model call is
    written into ``ledger`` as it ends."""
    if body.n == 1:
        return await _one_answer(orchestrator, body, ledger)
    runs = [lambda sample=sample: _one_answer(orchestrator, sample, ledger) for sample in samples(body)]
    answers = await all_or_none(runs)
    experts = list(dict.fromkeys(e for a in answers for e in a.headers.get("x-moesaic-experts", "").split(",") if e))
    headers = {"x-moesaic-experts": ",".join(experts)}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        streams = [answer.chunks for answer in answers if isinstance(answer, AnswerStream)]
        return AnswerStream(merged_chunks(streams, include_usage), headers=headers)
    bodies = [answer.answer for answer in answers if isinstance(answer, AnswerResponse)]
    return AnswerResponse(merged_completion(bodies), headers=headers)


async def _one_answer(
    orchestrator: Orchestrator, body: ChatCompletionRequest, ledger: CallLedger
) -> AnswerResponse | AnswerStream:
    if body.model == PIPELINE_MODEL or body.model.startswith(PIPELINE_MODEL + "/"):
        return await _pipeline(orchestrator, body, ledger)
    if body.model.startswith(EXPERT_PREFIX):
        return await _direct(orchestrator, body, body.model.removeprefix(EXPERT_PREFIX), ledger)
    raise APIError(
        404,
        f"model {body.model!r} does not exist; use {PIPELINE_MODEL!r}, moesaic/<policy> or expert/<name> "
        "(see GET /v1/models)",
        "not_found_error",
        param="model",
        code="model_not_found",
    )


def _validate(data: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None


# -- the pipeline -------------------------------------------------------------------------
def policy_of(model: str, orchestrator: Orchestrator) -> str | None:
    """``moesaic`` -> the pool's policy (None); ``moesaic/<policy>`` -> that policy, if the router has it."""
    if model == PIPELINE_MODEL:
        return None
    policy = model.removeprefix(PIPELINE_MODEL + "/")
    if policy not in orchestrator.router.policies:
        available = ", ".join(f"{PIPELINE_MODEL}/{name}" for name in orchestrator.router.policies)
        raise APIError(
            404,
            f"model {model!r} does not exist; this pool's router offers {available}"
            + ("" if len(orchestrator.router.policies) > 1 else " (other policies need routing.profiles)"),
            "not_found_error",
            param="model",
            code="model_not_found",
        )
    return policy


def _pipeline_request(
    body: ChatCompletionRequest, orchestrator: Orchestrator, ledger: CallLedger | None = None
) -> PipelineRequest:
    options = body.moesaic
    if options and options.experts:
        unknown = [name for name in options.experts if name not in orchestrator.pool.expert_names]
        if unknown:
            raise APIError(400, f"moesaic.experts names unknown experts: {', '.join(unknown)}", param="moesaic.experts")
    return PipelineRequest(
        _generation(body),
        k=options.k if options else None,
        experts=options.experts if options else None,
        policy=policy_of(body.model, orchestrator),
        strategy=options.strategy if options else None,
        consensus=options.consensus_share() if options else "pool",
        aggregator_max_tokens=options.aggregator_max_tokens if options else None,
        budget=options.budget if options else None,
        expert_deltas=bool(body.stream and options and options.events),
        ledger=ledger,
    )


def _generation(body: ChatCompletionRequest) -> GenerationRequest:
    """The model call a chat request asks for, before any expert's defaults are applied."""
    return GenerationRequest(
        messages=[message.to_message() for message in body.messages],
        max_tokens=body.token_budget,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list,
        seed=body.seed,
        moe_routing=body.moesaic.moe_routing.to_options() if body.moesaic and body.moesaic.moe_routing else None,
        request_id=current_request_id() or "",  # into every expert call and the actors' logs
        logprobs=body.logprobs_asked,
        **body.passthrough(),  # tools, tool_choice, response_format: for the experts that can use them
    )


async def _pipeline(
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
    request = _pipeline_request(body, orchestrator, ledger)
    response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        events = orchestrator.stream(request)
        try:
            first = await anext(events)  # routing happens before any byte is sent, so errors get a status
        except Exception as error:
            raise _pipeline_error(error) from None
        assert isinstance(first, DecisionEvent)
        headers = {"x-moesaic-experts": ",".join(first.decision.experts)}
        chunks = _pipeline_chunks(events, body, response_id, created, orchestrator.pool.honours, first.decision)
        return AnswerStream(chunks, headers=headers)
    try:
        result = await orchestrator.run(request)
    except Exception as error:
        raise _pipeline_error(error) from None
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


def _pipeline_error(error: Exception) -> APIError:
    if isinstance(error, APIError):
        return error
    if isinstance(error, PolicyUnavailable):
        return APIError(400, str(error), param=error.param, code="policy_unavailable")
    if isinstance(error, NoExpertAvailable):
        return APIError(503, str(error), "service_unavailable", code="no_healthy_expert")
    if isinstance(error, AllExpertsFailed):
        codes = set(error.codes or ())
        if len(codes) == 1 and (code := codes.pop()) in CLIENT_ERROR_PARAMS:
            return APIError(400, str(error), param=CLIENT_ERROR_PARAMS[code], code=code)
        return APIError(502, str(error), "upstream_error", code="experts_failed")
    log.exception("pipeline failed", exc_info=error)
    return APIError(500, f"internal error: {type(error).__name__}: {error}", "internal_error")


async def _pipeline_chunks(
    events: AsyncIterator[PipelineEvent],
    body: ChatCompletionRequest,
    response_id: str,
    created: int,
    honours: Callable[[str, str], bool],
    decision: RoutingDecision,
) -> AsyncIterator[dict[str, Any]]:
    passed = body.passthrough()
    progress = bool(body.moesaic and body.moesaic.events)  # the pipeline's progress as event chunks, when asked

    def event_chunk(event: dict[str, Any]) -> dict[str, Any]:
        return {**chunk_body(response_id, created, body.model, {}), "choices": [], "moesaic": event}

    yield chunk_body(response_id, created, body.model, {"role": "assistant", "content": ""})
    if progress:
        yield event_chunk({"event": "decision", "decision": decision.model_dump()})
    try:
        async for event in events:
            if isinstance(event, AnswerEvent):
                if progress:
                    yield event_chunk({"event": "answer", **asdict(event.answer), "call": asdict(event.call)})
            elif isinstance(event, ExpertTextEvent):
                if progress:
                    yield event_chunk({"event": "expert_delta", "expert": event.expert, "text": event.text})
            elif isinstance(event, EscalationEvent):
                if progress:
                    yield event_chunk({"event": "escalation", "escalation": event.escalation.model_dump()})
            elif isinstance(event, TextEvent):
                yield chunk_body(response_id, created, body.model, {"content": event.text})
            elif isinstance(event, DoneEvent):
                result = event.result
                record_pipeline(body.model, result)
                if result.verdict.tool_calls:
                    calls = tool_calls_delta(result.verdict.tool_calls)
                    yield chunk_body(response_id, created, body.model, calls)
                final = chunk_body(response_id, created, body.model, {}, result.finish_reason)
                final["moesaic"] = with_passthrough(result.metadata(), honours, result.decision.experts, passed)
                yield final
                if body.stream_options and body.stream_options.include_usage:
                    usage = result.usage
                    yield (
                        usage_chunk_body(response_id, created, body.model, usage.prompt_tokens, usage.completion_tokens)
                    )
    except Exception as error:  # the status line is sent already: report in the stream, OpenAI style
        yield _pipeline_error(error).body()
    finally:
        await events.aclose()  # the stream closed early (client gone): this cancels the pipeline's work


# -- one expert, directly -----------------------------------------------------------------
async def _direct(
    orchestrator: Orchestrator, body: ChatCompletionRequest, name: str, ledger: CallLedger
) -> AnswerResponse | AnswerStream:
    pool = orchestrator.pool
    if name not in pool.expert_names:
        raise APIError(
            404, f"no expert named {name!r}; see GET /v1/models", "not_found_error", "model", "model_not_found"
        )
    if not pool.is_healthy(name):
        raise APIError(
            503, f"expert {name!r} is not healthy; see GET /healthz", "service_unavailable", code="expert_unhealthy"
        )
    if body.logprobs and not pool.honours(name, "logprobs"):
        raise APIError(
            400,
            f"expert {name!r} does not report token log-probabilities (its engine has none: only experts on vLLM's "
            "engine do, see capabilities.logprobs in GET /v1/models); leave logprobs unset or false",
            param="logprobs",
            code="logprobs_unavailable",
        )
    request = _generation(body)
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
        raise _direct_error(error) from None
    record = CallRecord.of(name, "direct", completion)
    ledger.record(record)
    record_calls(body.model, [record])
    if completion.error is not None:
        raise _direct_error(ExpertCallFailed(completion.error, completion.error_code))
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


def _direct_error(error: Exception) -> APIError:
    if isinstance(error, ExpertUnavailable):
        return APIError(503, str(error), "service_unavailable", code="expert_unhealthy")
    if isinstance(error, ExpertCallFailed) and error.code in CLIENT_ERROR_PARAMS:
        return APIError(400, str(error), param=CLIENT_ERROR_PARAMS[error.code], code=error.code)
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
        yield _direct_error(error).body()
    finally:
        await items.aclose()  # type: ignore[attr-defined]  # an async generator: closing cancels the expert call
