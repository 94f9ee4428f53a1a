"""The app factory. The API process may also run workers (`workers` > 0, the embedded default)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry

from retouch import __version__
from retouch.api.errors import install_error_handlers
from retouch.api.middleware import (
    BodyGuardMiddleware,
    HttpMetrics,
    RequestContextMiddleware,
)
from retouch.api.pages import add_pages
from retouch.api.routes import add_model_routes, router
from retouch.config import Settings
from retouch.jobs.metrics import DeploymentCollector, JobMetrics
from retouch.jobs.records import Status
from retouch.jobs.service import JobService
from retouch.jobs.sweep import Sweeper
from retouch.jobs.worker import WorkerPool
from retouch.models import MODELS
from retouch.models.base import Model

logger = logging.getLogger(__name__)

# Seconds `retouch serve` waits at shutdown for its workers' running jobs to end; the rest run again
# elsewhere (or at the next start) once their lease runs out.
DRAIN_SECONDS = 30.0


def deployment_counts(service: JobService) -> dict[str, tuple[int, int, int]]:
    live = service.live_workers()
    return {
        slug: (
            service.store.count(Status.QUEUED, slug),
            service.store.count(Status.PROCESSING, slug),
            live[slug],
        )
        for slug in service.slugs
    }


def create_app(
    settings: Settings | None = None,
    models: dict[str, Model] | None = None,
    workers: int | None = None,
) -> FastAPI:
    """Build the service. `models` replaces the registry (tests use fake engines); `workers` overrides
    settings.workers (the worker threads started in this process at start-up)."""
    settings = settings or Settings()
    models = MODELS if models is None else models
    worker_count = settings.workers if workers is None else workers
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    job_metrics = JobMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = JobService(settings, models)
        app.state.service = service
        registry.register(DeploymentCollector(lambda: deployment_counts(service)))
        sweeper = Sweeper(
            settings,
            service.backend,
            service.slugs,
            job_metrics,
            endings=service.endings,
        )
        pool = None
        if worker_count > 0:
            serving = tuple(slug for slug, model in models.items() if model.built)
            pool = WorkerPool(
                settings,
                models,
                service.backend,
                serving,
                worker_count,
                metrics=job_metrics,
                on_hung="replace",
                endings=service.endings,
            )
            pool.start()
        app.state.workers = pool
        sweeper.start()
        try:
            yield
        finally:
            sweeper.stop()
            if pool is not None and not pool.stop(timeout=DRAIN_SECONDS):
                logger.warning(
                    "stopped with requests still running: %s; they run again once their lease ends",
                    ", ".join(pool.running_ids()),
                )
            service.close()

    app = FastAPI(
        title="retouch",
        version=__version__,
        description="Self-hosted image editing: object removal, background removal and text-to-mask. Try every model in the [playground](/).",
        lifespan=lifespan,
        # Served by retouch.api.pages from files in the package: FastAPI's own pages load Swagger UI from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics_registry = registry
    install_error_handlers(app)
    add_model_routes(app, models)
    app.include_router(router)
    add_pages(app)
    app.add_middleware(
        BodyGuardMiddleware,
        max_bytes=settings.max_body_bytes,
        stall_timeout=settings.body_timeout,
    )
    if settings.cors_origins:
        wildcard = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if wildcard else settings.cors_origins,
            # A wildcard with credentials would let any site spend a signed-in user's key.
            allow_credentials=not wildcard,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["x-api-key", "content-type", "idempotency-key"],
            expose_headers=["x-request-id", "x-remaining-credits", "retry-after"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, metrics=http_metrics)
    return app
