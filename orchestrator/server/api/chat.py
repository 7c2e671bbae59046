"""``POST /v1/chat/completions``: admission (the gate), then the pipeline flow (``model: moesaic``,
``chat_pipeline.py``) or the direct flow (``expert/<name>``, ``chat_direct.py``); ``n`` > 1 as independent runs.

The chat API is a request translator (``chat_translate.py``) and a renderer (``chat_render.py``) over the same
pipeline call; another API family adds its own pair.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from orchestrator.pipeline.ledger import CallLedger
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.answers import AnswerResponse, AnswerStream
from orchestrator.server.api.chat_direct import answer_direct
from orchestrator.server.api.chat_pipeline import answer_pipeline
from orchestrator.server.api.choices import all_or_none, merged_chunks, merged_completion, samples
from orchestrator.server.api.gate import Gate
from orchestrator.server.api.model_names import EXPERT_PREFIX, PIPELINE_MODEL
from orchestrator.server.api.openapi import CHAT_RESPONSES, json_body
from orchestrator.server.api.schemas import ChatCompletionRequest
from orchestrator.server.errors import APIError, from_validation_error

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=json_body(ChatCompletionRequest), responses=CHAT_RESPONSES)
async def chat_completions(http_request: Request) -> Any:
    gate = Gate.open(http_request)  # key's models and limits, rate limits, cache, journal, disconnects
    try:
        data = await gate.read_body()  # counted against the key's rate first, however bad the body
    except BaseException as error:
        await gate.failed(error)
        raise
    return await run_chat(http_request, gate, data)


async def run_chat(http_request: Request, gate: Gate, data: dict[str, Any]) -> Any:
    """A chat completion body ``gate`` has read (another API family's, translated) through admission, the flow and
    the recording: the answer (a chat completion or its stream), or the error raised."""
    orchestrator: Orchestrator = http_request.app.state.orchestrator
    try:
        body = _validate(data)
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
        return await answer_pipeline(orchestrator, body, ledger)
    if body.model.startswith(EXPERT_PREFIX):
        return await answer_direct(orchestrator, body, body.model.removeprefix(EXPERT_PREFIX), ledger)
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
