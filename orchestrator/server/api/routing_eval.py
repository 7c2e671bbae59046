"""``POST /v1/routing/evaluate``: ``moesaic eval-router --frontier`` on an outcome table sent in the request.

The console's routing view pastes or uploads an outcome table (CSV, JSON lines, or a Parquet file as base64) and
names a pool of its experts; this splits it into training and test questions, profiles on the first and routes
the second, exactly as the CLI does (``router.offline._evaluate.evaluate_pairs``: one implementation), and answers the
figures with the cost-quality frontier and each single model as a point. No model is called.

The work is arithmetic on the table (seconds to minutes for thousands of questions), bounded by the service
config's ``routing_evaluation`` section: the table's rows, columns and decoded bytes are checked before it is
materialised (a base64 text before it is decoded, a Parquet file from its footer; 413 ``table_too_large``), and
it runs in a worker process (``service/routing_worker.py``), one evaluation at a time per app (a second one: 429
``evaluation_busy`` at once, with ``Retry-After``), killed when ``timeout_s`` passes (413 ``evaluation_timeout``),
when it outgrows its memory allowance (413 ``table_too_large``) or when the client leaves; chat requests keep the
serving process to themselves meanwhile. ``enabled: false``: 404.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.types import Receive

from orchestrator.server.api.body import parse_json_object
from orchestrator.server.api.disconnect import unless_disconnected
from orchestrator.server.api.gate import admission_for
from orchestrator.server.api.openapi import json_body
from orchestrator.server.errors import APIError, from_validation_error
from orchestrator.server.service.admission import Surface, rejected_body
from orchestrator.server.service.routing_worker import (
    EvaluationTimedOut,
    EvaluatorBusy,
    JobError,
    JobResult,
    RoutingEvaluator,
    RoutingJob,
    WorkerFailed,
    WorkerOutOfMemory,
)
from orchestrator.server.service.service_config import Permission, RoutingEvaluationSection
from router import POLICIES
from router.offline import DEFAULT_BUDGETS, TableLimits

T = TypeVar("T")
SECTION = "routing_evaluation"  # the service config's section, named in every refusal

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

    def table_bytes(self, max_bytes: int) -> bytes:
        """The table's bytes; 413 when they are more than ``max_bytes``, measured before a base64 text is decoded."""
        setting = f"{SECTION}.max_table_bytes"
        if self.format != "parquet":
            if len(self.table) > max_bytes:  # a character is a byte or more
                raise too_large(f"{self.name}: at least {len(self.table):,} bytes", max_bytes, setting)
            content = self.table.encode("utf-8")
            if len(content) > max_bytes:
                raise too_large(f"{self.name}: {len(content):,} bytes", max_bytes, setting)
            return content
        decoded = len(self.table) * 3 // 4  # what the base64 text decodes to (at most)
        if decoded > max_bytes:
            raise too_large(f"{self.name}: {decoded:,} bytes once decoded from base64", max_bytes, setting)
        try:
            return base64.b64decode(self.table, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(
                400, "table: a Parquet table must be sent as base64", param="table", code="invalid_outcome_table"
            ) from None

    def job(self, content: bytes, limits: TableLimits) -> RoutingJob:
        return RoutingJob(
            content=content,
            format=self.format,
            name=self.name,
            pool=self.pool,
            policy=self.policy,
            max_experts=self.max_experts,
            k=self.k,
            vote=self.vote,
            seed=self.seed,
            split=self.split,
            budgets=tuple(self.budgets),
            limits=limits,
        )


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
    section = settings_of(http_request)
    if not section.enabled:
        raise APIError(
            404,
            f"routing evaluation is turned off on this server ({SECTION}.enabled: false); run "
            "`moesaic eval-router --frontier` on the table instead",
            "not_found_error",
            code="routing_evaluation_disabled",
        )
    admission = admission_for(http_request, Surface.ROUTING_EVALUATE)
    raw = b""
    journaled: dict[str, object] | None = None
    try:
        await admission.count_request()  # the key's rate, before the body is read
        raw = await http_request.body()
        data = parse_json_object(raw, http_request.headers.get("content-type"))
        try:
            body = RoutingEvalRequest.model_validate(data)
        except ValidationError as error:
            raise from_validation_error(error) from None
        admission.grant(Permission.ROUTING_EVALUATE)
        journaled = body.model_dump(exclude={"table"}) | {"table_bytes": len(body.table)}  # never the table
        limits = TableLimits(section.max_rows, section.max_columns, section.max_table_bytes, section=SECTION)
        job = body.job(body.table_bytes(section.max_table_bytes), limits)
        evaluator: RoutingEvaluator = http_request.app.state.routing_evaluations
        work = evaluator.run(job, section.timeout_s, memory_allowance(section))
        result = await until_disconnect(work, http_request.receive)
        evaluation = RoutingEvaluation(table=job.name, benchmarks=answer(result))  # type: ignore[arg-type]
    except APIError as error:
        record = journaled if journaled is not None else rejected_body(raw, error)
        await admission.journal(error.status, record, None, error.message)
        raise
    await admission.journal(200, journaled, {"benchmarks": list(evaluation.benchmarks)}, None)
    return evaluation


def settings_of(http_request: Request) -> RoutingEvaluationSection:
    """This app's ``routing_evaluation`` settings; their defaults while the app's lifespan has not run."""
    service = getattr(http_request.app.state, "service", None)
    return service.config.routing_evaluation if service is not None else RoutingEvaluationSection()


def memory_allowance(section: RoutingEvaluationSection) -> int:
    """How much the worker may grow while evaluating (a backstop for tables whose metadata understates them)."""
    return max(2 * 1024**3, 64 * section.max_table_bytes)


async def until_disconnect(work: Awaitable[T], receive: Receive) -> T:
    """Await ``work``, mapping the evaluator's refusals to API errors; if the client leaves first, cancel it (the
    worker is killed) and answer 499."""
    try:
        return await unless_disconnected(work, receive)
    except EvaluatorBusy as busy:
        raise APIError(
            429,
            f"another routing evaluation is running on this server ({busy.running_s:.0f} s so far; it ends within "
            f"{max(busy.bound_s, 0):.0f} s at most, {SECTION}.timeout_s); one runs at a time: retry shortly",
            "overloaded_error",
            code="evaluation_busy",
            headers={"Retry-After": str(busy.retry_after_s)},
        ) from None
    except EvaluationTimedOut as timeout:
        raise APIError(
            413,
            f"the routing evaluation was stopped after {timeout.timeout_s:g} s ({SECTION}.timeout_s): send fewer "
            "questions (rows), fewer experts (pool) or budgets, a smaller max_experts, or raise the setting",
            param="table",
            code="evaluation_timeout",
        ) from None
    except WorkerOutOfMemory as memory:
        raise APIError(
            413,
            f"the routing evaluation was stopped: it used {memory.used / 2**20:,.0f} MiB of memory, more than the "
            f"{memory.allowance / 2**20:,.0f} MiB allowed with {SECTION}.max_table_bytes; send fewer questions or "
            "columns",
            param="table",
            code="table_too_large",
        ) from None
    except WorkerFailed as failed:
        raise APIError(503, str(failed), "service_unavailable", code="evaluation_worker_failed") from None


def answer(result: JobResult) -> dict[str, object]:
    """The worker's figures, or its error about the table as the API's."""
    if result.error is JobError.TOO_LARGE:
        raise APIError(413, result.message, param="table", code="table_too_large")
    if result.error is JobError.INVALID:
        raise APIError(400, result.message, param="table", code="invalid_outcome_table")
    if result.error is not None:
        raise APIError(500, f"internal error: {result.message}", "internal_error")
    assert result.figures is not None
    return result.figures


def too_large(measured: str, limit: int, setting: str) -> APIError:
    return APIError(
        413,
        f"{measured}, more than the {limit:,} allowed ({setting}); send fewer questions or columns",
        param="table",
        code="table_too_large",
    )
