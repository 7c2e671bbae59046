"""The FastAPI application: routes, error handlers and the pool's lifetime.

``create_app(settings)`` starts the pool in the app's lifespan (``moesaic serve``);
``create_app(orchestrator=...)`` serves an orchestrator that is already running (tests,
Ray Serve), and leaves its lifetime to the caller.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from experts.pool import ExpertPool
from experts.spec import load_pool
from orchestrator.api.chat import EXPERT_PREFIX, PIPELINE_MODEL
from orchestrator.api.chat import router as chat_router
from orchestrator.api.errors import APIError, install_error_handlers
from orchestrator.api.metrics import router as metrics_router
from orchestrator.api.route import router as route_router
from orchestrator.api.schemas import ModelCard, ModelList
from orchestrator.config import ServeSettings
from orchestrator.pipeline import Orchestrator


def create_app(settings: ServeSettings | None = None, orchestrator: Orchestrator | None = None) -> FastAPI:
    """Build the app around a running orchestrator, or one started from ``settings``."""
    if orchestrator is None and settings is None:
        settings = ServeSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = int(time.time())
        if orchestrator is not None:
            app.state.orchestrator = orchestrator
            yield
            return
        assert settings is not None
        pool = ExpertPool(load_pool(settings.pool), ray_address=settings.ray_address, num_cpus=settings.num_cpus)
        await pool.start()
        app.state.orchestrator = Orchestrator(pool)
        try:
            yield
        finally:
            await pool.shutdown()

    app = FastAPI(title="Moesaic", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(route_router)
    app.include_router(metrics_router)

    @app.get("/v1/models")
    async def list_models(request: Request) -> ModelList:
        return ModelList(data=_model_cards(request.app))

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> ModelCard:
        for card in _model_cards(request.app):
            if card.id == model_id:
                return card
        raise APIError(404, f"model {model_id!r} does not exist", "not_found_error", "model", "model_not_found")

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        pool: ExpertPool = request.app.state.orchestrator.pool
        experts = await pool.health()
        routable = [expert.name for expert in pool.spec.routable_experts]
        healthy = [name for name in routable if pool.is_healthy(name)]
        status = (
            "ok" if len(pool.healthy_names()) == len(pool.expert_names) else "degraded" if healthy else "unavailable"
        )
        body: dict[str, Any] = {"status": status, "pool": pool.spec.name, "experts": experts}
        return JSONResponse(body, status_code=503 if status == "unavailable" else 200)

    return app


def _model_cards(app: FastAPI) -> list[ModelCard]:
    orchestrator: Orchestrator = app.state.orchestrator
    spec = orchestrator.pool.spec
    created = app.state.started
    cards = [ModelCard(id=PIPELINE_MODEL, created=created, description=f"routed pipeline over pool {spec.name!r}")]
    for policy in orchestrator.router.policies:
        cards.append(
            ModelCard(id=f"{PIPELINE_MODEL}/{policy}", created=created, description=f"pipeline, {policy} policy")
        )
    for expert in spec.experts:
        detail = f"{expert.backend}:{expert.model}" + (f" - {expert.description}" if expert.description else "")
        cards.append(ModelCard(id=f"{EXPERT_PREFIX}{expert.name}", created=created, description=detail))
    return cards
