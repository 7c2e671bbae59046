"""``POST /v1/route``: the routing decision for a query, without calling any expert."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.body import parse_json_object
from orchestrator.server.api.chat import PIPELINE_MODEL, policy_of
from orchestrator.server.api.gate import require_model
from orchestrator.server.api.openapi import json_body
from orchestrator.server.api.schemas import ChatMessageIn, MoesaicOptions
from orchestrator.server.errors import APIError, from_validation_error
from router.recruit import NoExpertAvailable, PolicyUnavailable

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
    orchestrator: Orchestrator = http_request.app.state.orchestrator
    data = parse_json_object(await http_request.body(), http_request.headers.get("content-type"))
    try:
        body = RouteRequest.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None
    if body.model != PIPELINE_MODEL and not body.model.startswith(PIPELINE_MODEL + "/"):
        raise APIError(
            404,
            f"only {PIPELINE_MODEL} and {PIPELINE_MODEL}/<policy> route",
            "not_found_error",
            "model",
            "model_not_found",
        )
    principal = getattr(http_request.state, "principal", None)
    if principal is not None:
        require_model(principal, body.model)  # the key's allowed models apply to routing decisions too
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
        raise APIError(503, str(error), "service_unavailable", code="no_healthy_expert") from None
    return {
        "object": "moesaic.route",
        "model": body.model,
        "decision": decision.model_dump(),
        "explanation": decision.explain(),
    }
