"""The app factory. The API process may also run the workers (`workers` > 0, the embedded default)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from retouch import __version__
from retouch.api.errors import install_error_handlers
from retouch.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from retouch.api.routes import add_model_routes, router
from retouch.config import Settings
from retouch.jobs.service import Service
from retouch.models import MODELS
from retouch.models.base import Model

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, models: dict[str, Model] | None = None, workers: int | None = None) -> FastAPI:
    """Build the service. `models` replaces the registry (tests use fake engines); `workers` overrides
    settings.workers (the consumer threads started in this process at start-up)."""
    settings = settings or Settings()
    models = MODELS if models is None else models
    worker_count = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, models)
        app.state.service = service
        consumer = service.start_workers(worker_count, embedded=True)
        if consumer is not None:
            consumer.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="retouch",
        version=__version__,
        description="Self-hosted image editing: object removal, background removal and text-to-mask.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    add_model_routes(app, models)
    app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    return app
