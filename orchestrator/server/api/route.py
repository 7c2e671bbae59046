"""``POST /v1/route``: the routing decision for a query, without calling any expert."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.body import parse_json_object
from orchestrator.server.api.chat_translate import policy_of
from orchestrator.server.api.gate import admission_for
from orchestrator.server.api.model_names import PIPELINE_MODEL
from orchestrator.server.api.openapi import json_body
from orchestrator.server.api.schemas import ChatMessageIn, MoesaicOptions
from orchestrator.server.errors import APIError, from_validation_error
from orchestrator.server.service.admission import Admission, Surface, rejected_body
from router import NoExpertAvailable, PolicyUnavailable

router = APIRouter()


class RouteRequest(BaseModel):
    """Either ``query`` or chat ``messages`` (the last user turn is routed)."""

    model_config = ConfigDict(extra="forbid")

    model: str = PIPELINE_MODEL
    query: Annotated[str, Field(min_length=1)] | None = None
    messages: list[ChatMessageIn] | None = None
    moesaic: MoesaicOptions | None = None

    @model_validator(mode="after")
    def _one_query(self) -> RouteRequest:
        if (self.query is None) == (self.messages is None):
            raise ValueError("give exactly one of 'query' or 'messages'")
        if self.messages is not None and not any(m.role == "user" for m in self.messages):
            raise ValueError("at least one message must have role 'user'")
        return self

    @property
    def text(self) -> str:
        if self.query is not None:
            return self.query
        assert self.messages is not None
        return next(m.to_message().content for m in reversed(self.messages) if m.role == "user")


@router.post("/v1/route", openapi_extra=json_body(RouteRequest))
async def route(http_request: Request) -> dict[str, Any]:
    """Under the key's controls like a chat request: its rate (before the body is read), its models, the journal."""
    admission = admission_for(http_request, Surface.ROUTE)
    raw = b""
    try:
        await admission.count_request()  # the key's rate, before the body is read
        raw = await http_request.body()
        data = parse_json_object(raw, http_request.headers.get("content-type"))
        answer = _route(http_request.app.state.orchestrator, data, admission)
    except APIError as error:
        await admission.journal(error.status, rejected_body(raw, error), None, error.message)
        raise
    decision = answer["decision"]
    await admission.journal(200, data, {"experts": decision["experts"], "policy": decision["policy"]}, None)
    return answer


def _route(orchestrator: Orchestrator, data: dict[str, Any], admission: Admission) -> dict[str, Any]:
    try:
        body = RouteRequest.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None
    admission.model = body.model
    if body.model != PIPELINE_MODEL and not body.model.startswith(PIPELINE_MODEL + "/"):
        raise APIError(
            404,
            f"only {PIPELINE_MODEL} and {PIPELINE_MODEL}/<policy> route",
            "not_found_error",
            "model",
            "model_not_found",
        )
    admission.allow([body.model])  # the key's allowed models apply to routing decisions too
    policy = policy_of(body.model, orchestrator)
    try:
        options = body.moesaic
        decision = orchestrator.route(
            body.text,
            k=options.k if options else None,
            policy=policy,
            budget=options.budget if options else None,
        )
    except PolicyUnavailable as error:
        raise APIError(400, str(error), param=error.param, code="policy_unavailable") from None
    except NoExpertAvailable as error:
        raise APIError.unavailable(str(error), "no_healthy_expert") from None
    return {
        "object": "moesaic.route",
        "model": body.model,
        "decision": decision.model_dump(),
        "explanation": decision.explain(),
    }
