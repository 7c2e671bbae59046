"""The FastAPI application: routes, error handlers and the pool's lifetime.

``create_app(settings)`` starts the pool in the app's lifespan (``moesaic serve``);
``create_app(orchestrator=...)`` serves an orchestrator that is already running (tests,
Ray Serve), and leaves its lifetime to the caller. Either way the lifespan builds the
``ServiceState`` (auth, limits, Redis-backed stores) from ``service`` (a ``ServiceConfig``), else
from the settings' config file, else safe defaults (in-process stores; auth by bind address),
and at shutdown waits for in-flight requests before the pool goes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from experts import unpriced, unpriced_warning
from experts.config import PoolSpec, load_pool
from experts.runtime import ExpertClient, ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.chat import router as chat_router
from orchestrator.server.api.messages_api import router as messages_router
from orchestrator.server.api.metrics_endpoint import router as metrics_router
from orchestrator.server.api.models import ExpertCatalog
from orchestrator.server.api.models import router as models_router
from orchestrator.server.api.openapi import ERROR_RESPONSES
from orchestrator.server.api.plugins import AppPlugin, plugins_running
from orchestrator.server.api.pool_view import router as pool_view_router
from orchestrator.server.api.probes import router as probes_router
from orchestrator.server.api.responses_api import router as responses_router
from orchestrator.server.api.route import router as route_router
from orchestrator.server.api.routing_eval import router as routing_eval_router
from orchestrator.server.console import console_routes
from orchestrator.server.errors import install_error_handlers
from orchestrator.server.observability.metrics import MetricsMirror, ServiceMetrics
from orchestrator.server.observability.middleware import ObservabilityMiddleware
from orchestrator.server.service.auth import AuthMiddleware
from orchestrator.server.service.browser_guard import BrowserGuardMiddleware
from orchestrator.server.service.limits import LimitsMiddleware
from orchestrator.server.service.routing_worker import RoutingEvaluator
from orchestrator.server.service.service_config import ServiceConfig, load_service_config
from orchestrator.server.service.service_state import ServiceState, build_service_state
from orchestrator.server.settings import ServeSettings

# uvicorn's own logger: the service's start-up line appears beside uvicorn's, whatever the log setup
startup_log = logging.getLogger("uvicorn.error")


def create_app(
    settings: ServeSettings | None = None,
    orchestrator: Orchestrator | None = None,
    service: ServiceConfig | None = None,
    plugins: Sequence[AppPlugin] = (),
    metrics_mirror: MetricsMirror | None = None,
) -> FastAPI:
    """Build the app around a running orchestrator, or one started from ``settings``; ``plugins`` add routes and
    what runs beside them once the pool is up (the MCP endpoint)."""
    if orchestrator is None and settings is None:
        settings = ServeSettings.from_env()
    if service is None:
        service = load_service_config(settings.config) if settings and settings.config else ServiceConfig()
    host = settings.host if settings is not None else "127.0.0.1"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = int(time.time())
        if orchestrator is not None:
            app.state.orchestrator = orchestrator
            async with _serving(app, service, host, orchestrator.pool.spec) as state:
                await _describe_experts(app, state, orchestrator.pool)
                try:
                    async with plugins_running(plugins, orchestrator):
                        yield
                finally:
                    app.state.draining = True  # /readyz: 503, so balancers stop sending while requests finish
                    await state.drain()
            return
        assert settings is not None
        spec = load_pool(settings.pool)
        async with _serving(app, service, host, spec) as state:  # Redis first: a required one fails fast
            pool = ExpertPool(spec, ray_address=settings.ray_address, num_cpus=settings.num_cpus)
            await pool.start()
            app.state.orchestrator = Orchestrator(pool)
            await _describe_experts(app, state, pool)
            base = f"http://{settings.host}:{settings.port}"
            startup_log.info(f"pool {spec.name!r} is up: the API at {base}/v1, the console at {base}/console")
            try:
                async with plugins_running(plugins, app.state.orchestrator):
                    yield
            finally:
                app.state.draining = True  # /readyz: 503, so balancers stop sending while requests finish
                await state.drain()  # in-flight requests finish before their experts go
                await pool.shutdown()

    app = FastAPI(title="Moesaic", version="0.1.0", lifespan=lifespan, responses=ERROR_RESPONSES)
    app.state.metrics = ServiceMetrics(mirror=metrics_mirror)  # this app's counts; /metrics writes them
    app.state.catalog = ExpertCatalog()  # what the model cards say beyond the pool file, once the pool has started
    app.state.draining = False  # set at shutdown, before in-flight requests are waited for
    app.state.orchestrator = None  # set by the lifespan once the pool has started
    app.state.routing_evaluations = RoutingEvaluator()  # POST /v1/routing/evaluate: a worker process, one at a time
    install_error_handlers(app)
    app.add_middleware(LimitsMiddleware)  # body size, concurrency and the waiting line (inner)
    app.add_middleware(AuthMiddleware)  # 401 before a request may take a slot
    app.add_middleware(BrowserGuardMiddleware)  # Host allow-list, cross-origin writes refused: before the key
    app.include_router(chat_router)
    app.include_router(responses_router)
    app.include_router(messages_router)
    app.include_router(route_router)
    app.include_router(metrics_router)
    app.include_router(probes_router)
    app.include_router(models_router)
    app.include_router(pool_view_router)
    app.include_router(routing_eval_router)
    app.router.routes.extend(console_routes())  # GET /console: the browser console (static files)
    for plugin in plugins:
        app.router.routes.extend(plugin.routes())
    # request id, access log, request metrics: keep it the last middleware added (the outermost), so it
    # sees every request and answer, the other middlewares' refusals included
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics)

    return app


@asynccontextmanager
async def _serving(app: FastAPI, config: ServiceConfig, host: str, spec: PoolSpec) -> AsyncIterator[ServiceState]:
    """The service's state for the app's lifetime: announced at start, Redis closed at the end."""
    state = await build_service_state(config, host, spec.model_dump_json())
    app.state.service = state
    startup_log.info(await state.summary())
    try:
        yield state
    finally:
        app.state.routing_evaluations.close()  # its worker process, if one was started
        await state.close()


async def _describe_experts(app: FastAPI, state: ServiceState, pool: ExpertClient) -> None:
    """What ``/v1/models`` says of each expert (price, context window); a warning naming the unpriced experts while
    spend budgets are on."""
    reports = await pool.health()
    app.state.catalog = ExpertCatalog.from_reports(pool.spec, reports)
    missing = unpriced(pool.spec.experts, reports)
    if missing and await state.budgets_on():
        startup_log.warning(unpriced_warning(missing))
