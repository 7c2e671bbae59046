"""``GET /v1/models``: a card per model a caller may use, with its context window, capabilities and price.

The cards are the pipeline (``moesaic``), one per routing policy (``moesaic/<policy>``) and one per expert
(``expert/<name>``). What an expert's card says comes from its pool entry and, once the pool has started, from its
actor's health report (``ExpertCatalog``, read once at start-up: price from LiteLLM's map, context window from the
model). The pipeline's context window is the smallest of its routable experts' (a prompt must fit whoever is
recruited); it honours ``response_format`` when every routable expert does, and tools when any does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from experts import HealthReport, Price, price_of
from experts.config import ExpertSpec, PoolSpec
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.model_names import EXPERT_PREFIX, PIPELINE_MODEL
from orchestrator.server.api.schemas import ModelCapabilities, ModelCard, ModelList, ModelPricing
from orchestrator.server.errors import APIError

router = APIRouter()


@dataclass
class ExpertCatalog:
    """What the cards say about each expert beyond its pool entry, from its health report at start-up."""

    prices: dict[str, Price] = field(default_factory=dict)
    context_windows: dict[str, int | None] = field(default_factory=dict)
    engines: dict[str, str | None] = field(default_factory=dict)  # local experts: vllm, continuous or static

    @classmethod
    def from_reports(cls, spec: PoolSpec, reports: dict[str, HealthReport]) -> ExpertCatalog:
        return cls(
            prices={expert.name: price_of(expert, reports.get(expert.name)) for expert in spec.experts},
            context_windows={name: report.get("context_window") for name, report in reports.items()},
            engines={name: _engine(report) for name, report in reports.items()},
        )


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    return ModelList(data=_cards_for(request))


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> ModelCard:
    for card in _cards_for(request):
        if card.id == model_id:
            return card
    raise APIError(404, f"model {model_id!r} does not exist", "not_found_error", "model", "model_not_found")


def _cards_for(request: Request) -> list[ModelCard]:
    """The models the caller may use (all of them when auth is off)."""
    cards = model_cards(request.app)
    principal = getattr(request.state, "principal", None)  # set by the auth middleware when auth is on
    return cards if principal is None else [card for card in cards if principal.allows(card.id)]


def model_cards(app: FastAPI) -> list[ModelCard]:
    orchestrator: Orchestrator = app.state.orchestrator
    catalog: ExpertCatalog = app.state.catalog
    spec, created = orchestrator.pool.spec, app.state.started
    routable, honours = spec.routable_experts, orchestrator.pool.honours
    pipeline: dict[str, Any] = {
        "created": created,
        "context_window": min((w for e in routable if (w := catalog.context_windows.get(e.name))), default=None),
        "capabilities": ModelCapabilities(
            tools=any(honours(e.name, "tools") for e in routable),
            response_format=all(honours(e.name, "response_format") for e in routable),
        ),
    }
    cards = [ModelCard(id=PIPELINE_MODEL, description=f"routed pipeline over pool {spec.name!r}", **pipeline)]
    for policy in orchestrator.router.policies:
        cards.append(ModelCard(id=f"{PIPELINE_MODEL}/{policy}", description=f"pipeline, {policy} policy", **pipeline))
    return cards + [_expert_card(expert, catalog, created, honours) for expert in spec.experts]


def _expert_card(
    expert: ExpertSpec, catalog: ExpertCatalog, created: int, honours: Callable[[str, str], bool]
) -> ModelCard:
    price = catalog.prices.get(expert.name) or price_of(expert)
    source, per_input, per_output = price.source.value, price.input_per_1m, price.output_per_1m
    return ModelCard(
        id=f"{EXPERT_PREFIX}{expert.name}",
        created=created,
        description=f"{expert.backend}:{expert.model}" + (f" - {expert.description}" if expert.description else ""),
        context_window=catalog.context_windows.get(expert.name),
        capabilities=ModelCapabilities(
            tools=honours(expert.name, "tools"),
            response_format=honours(expert.name, "response_format"),
            logprobs=honours(expert.name, "logprobs"),
        ),
        pricing=ModelPricing(source=source, input_per_1m=per_input, output_per_1m=per_output),
        engine=catalog.engines.get(expert.name),
    )


def _engine(report: HealthReport) -> str | None:
    """The engine a local expert's report names (``vllm``, ``continuous``, ``static``); None for other backends."""
    engine = report.get("engine")
    return str(engine) if report.get("backend") == "local" and engine else None
