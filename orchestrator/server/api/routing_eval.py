"""``POST /v1/routing/evaluate``: ``moesaic eval-router --frontier`` on an outcome table sent in the request.

The console's routing view pastes or uploads an outcome table (CSV, JSON lines, or a Parquet file as base64) and
names a pool of its experts; this splits it into training and test questions, profiles on the first and routes
the second, exactly as the CLI does (``router.evaluate.evaluate_pairs``: one implementation), and answers the
figures with the cost-quality frontier and each single model as a point. No model is called.

The work is arithmetic on the table (seconds to a minute for thousands of questions): it runs in a worker thread,
one evaluation at a time per app, so the event loop keeps serving chat requests meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.server.api.body import parse_json_object
from orchestrator.server.api.openapi import json_body
from orchestrator.server.errors import APIError, from_validation_error
from router.competence import CompetenceSettings
from router.evaluate import EvalOptions, evaluate_pairs, json_figures, split_tables
from router.frontier import DEFAULT_BUDGETS
from router.outcomes import OutcomeFileError, read_outcomes
from router.policies import POLICIES, PolicySettings

router = APIRouter()


class RoutingEvalRequest(BaseModel):
    """An outcome table and how to route it: the ``eval-router`` options a console offers."""

    model_config = ConfigDict(extra="forbid")

    table: Annotated[str, Field(min_length=1)] = Field(
        description="the outcome table: CSV or JSON-lines text, or a Parquet file encoded as base64 "
        "(columns as in ../shared/data/routing/README.md: question, <expert>|correct, |pred, |chars)"
    )
    format: Literal["csv", "jsonl", "parquet"] = Field("csv", description="how `table` is written")
    name: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        "pasted table", description="what to call the table in error messages (the uploaded file's name)"
    )
    pool: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="open-small | mixed | comma-separated expert names (columns); default: every expert"
    )
    policy: str = Field("cost", description="skills | category | cost | cascade | escalate")
    split: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.3, description="share of questions held out as test")
    seed: int = Field(0, description="split and sampling seed")
    max_experts: Annotated[int, Field(ge=1, le=16)] = Field(3, description="most experts called per question")
    k: Annotated[int, Field(ge=1, le=16)] | None = Field(None, description="a fixed number of experts")
    vote: Literal["weighted", "majority"] = Field("weighted", description="how the called experts' answers combine")
    budgets: Annotated[list[Annotated[float, Field(gt=0.0, le=100.0)]], Field(min_length=1, max_length=12)] = Field(
        list(DEFAULT_BUDGETS), description="frontier budgets, x the best single model's mean cost"
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"unknown policy {value!r}; choose one of {', '.join(POLICIES)}")
        return value

    def table_bytes(self) -> bytes:
        if self.format != "parquet":
            return self.table.encode("utf-8")
        try:
            return base64.b64decode(self.table, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(
                400, "table: a Parquet table must be sent as base64", param="table", code="invalid_outcome_table"
            ) from None


class CostPointOut(BaseModel):
    label: str
    mean_cost: float
    accuracy: float


class FrontierRowOut(BaseModel):
    budget: float = Field(description="x the best single model's mean cost on the training questions")
    accuracy: float
    mean_cost: float
    hull_accuracy: float | None = Field(description="best random mix of single models at this cost; null: none")


class BenchmarkReport(BaseModel):
    """The CLI's ``--json --frontier`` figures for one benchmark (more keys for some policies)."""

    model_config = ConfigDict(extra="allow")

    policy: str
    train_questions: int
    test_questions: int
    experts: list[str]
    accuracy: float | None
    mean_experts: float
    mean_cost: float | None
    best_single_expert: str
    best_single_accuracy: float | None
    best_single_cost: float | None
    oracle_accuracy: float
    frontier: list[FrontierRowOut]
    single_models: list[CostPointOut]
    pool_apgr: float | None = Field(description="0.5 on the random-mix hull, 1.0 at the per-question oracle")


class RoutingEvaluation(BaseModel):
    object: Literal["moesaic.routing_evaluation"] = "moesaic.routing_evaluation"
    table: str
    benchmarks: dict[str, BenchmarkReport] = Field(description="per `benchmark` column value; 'all' without one")


@router.post("/v1/routing/evaluate", openapi_extra=json_body(RoutingEvalRequest))
async def evaluate_routing(http_request: Request) -> RoutingEvaluation:
    data = parse_json_object(await http_request.body(), http_request.headers.get("content-type"))
    try:
        body = RoutingEvalRequest.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from None
    content = body.table_bytes()
    lock: asyncio.Lock = http_request.app.state.routing_evaluations
    async with lock:
        reports = await asyncio.to_thread(_evaluate, body, content)
    return RoutingEvaluation(table=body.name, benchmarks=reports)  # type: ignore[arg-type]


def _evaluate(body: RoutingEvalRequest, content: bytes) -> dict[str, object]:
    settings = PolicySettings(max_experts=body.max_experts, k=body.k)
    options = EvalOptions(
        policy=body.policy, settings=settings, competence=CompetenceSettings(), vote=body.vote, seed=body.seed
    )
    try:
        pairs = split_tables(read_outcomes(content, body.format, body.pool, body.name), body.split, body.seed)
        reports = evaluate_pairs(pairs, options, tuple(body.budgets))
    except OutcomeFileError as error:
        raise APIError(400, str(error), param="table", code="invalid_outcome_table") from None
    except ValueError as error:  # e.g. no cost columns for a frontier, too few questions to split or learn from
        message = str(error) if str(error).startswith(body.name) else f"{body.name}: {error}"
        raise APIError(400, message, param="table", code="invalid_outcome_table") from None
    figures = json_figures(reports)
    assert isinstance(figures, dict)
    return figures
