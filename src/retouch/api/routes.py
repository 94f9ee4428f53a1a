"""The HTTP contract: /v1 runs and waits, /v2 queues and returns, /v2/requests/... reads results."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from retouch.errors import NotFound, ServiceUnavailable, SyncTimeout
from retouch.jobs.records import JobRecord, Status
from retouch.jobs.service import Service
from retouch.models.base import Model
from retouch.api.inputs import check_sources, read_parameters, read_sources, validate_parameters
from retouch.api.urls import output_url, public_base, request_links


def _service(request: Request) -> Service:
    return request.app.state.service


def _failed_body(record: JobRecord) -> dict[str, Any]:
    return {"request_id": record.id, "status": Status.FAILED.value, "error": record.error or "the request failed"}


def _status_code(record: JobRecord) -> int:
    return 422 if record.status is Status.FAILED else 200


async def _submit(request: Request, model: Model) -> JobRecord:
    """Validate, decode and queue: every refusal (400, 501, 503, 429) happens here, before a job exists."""
    service = _service(request)
    params, uploads = await read_parameters(request, model)
    inputs = validate_parameters(model, params, uploads)
    model.check_ready(service.settings)
    model.check_params(inputs, service.settings)
    sources = await run_in_threadpool(read_sources, model, inputs, uploads, service.settings)
    await run_in_threadpool(check_sources, model, inputs, sources, service.settings)
    job_id = request.scope["state"]["request_id"]
    return await run_in_threadpool(service.submit, job_id, model, inputs, sources)


def _sync_handler(model: Model) -> Callable[[Request], Awaitable[Response]]:
    async def run_sync(request: Request) -> Response:
        service = _service(request)
        record = await _submit(request, model)
        if not await service.wait(record.id, service.settings.sync_timeout):
            links = request_links(public_base(request, service.settings), record.id)
            raise SyncTimeout(
                f"the request did not finish within {service.settings.sync_timeout:g} s; it goes on: poll its status_url",
                record.id,
                {"status": service.get(record.id).status.value, **links},
            )
        record = service.get(record.id)
        if record.status is Status.FAILED:
            return JSONResponse(_failed_body(record), status_code=422)
        outputs = await run_in_threadpool(service.outputs, record)
        if record.base64:
            encoded = [base64.b64encode(output.data).decode() for output in outputs]
            return JSONResponse(
                {"image": encoded[0], "images": encoded, "status": Status.COMPLETED.value, "metrics": record.metrics}
            )
        return Response(content=outputs[0].data, media_type=outputs[0].content_type)

    run_sync.__name__ = f"run_{model.slug.replace('-', '_')}"
    return run_sync


def _async_handler(model: Model) -> Callable[[Request], Awaitable[Response]]:
    async def submit(request: Request) -> Response:
        service = _service(request)
        record = await _submit(request, model)
        links = request_links(public_base(request, service.settings), record.id)
        return JSONResponse({"request_id": record.id, "status": record.status.value, **links})

    submit.__name__ = f"submit_{model.slug.replace('-', '_')}"
    return submit


def _request_body_schema(model: Model) -> dict[str, Any]:
    schema = model.Input.model_json_schema()
    form_schema = {
        "type": "object",
        "properties": {
            name: ({"type": "string", "format": "binary"} if name in model.all_image_fields() else value)
            for name, value in schema.get("properties", {}).items()
        },
        "required": schema.get("required", []),
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, "multipart/form-data": {"schema": form_schema}},
        }
    }


def add_model_routes(app: FastAPI, models: dict[str, Model]) -> None:
    """One /v1 and one /v2 route per slug, each documented with its Input schema."""
    for model in models.values():
        extra = _request_body_schema(model)
        app.add_api_route(
            f"/v1/{model.slug}",
            _sync_handler(model),
            methods=["POST"],
            summary=f"{model.slug}: run and wait",
            description=model.summary,
            tags=[model.slug],
            openapi_extra=extra,
            response_class=Response,
        )
        app.add_api_route(
            f"/v2/{model.slug}",
            _async_handler(model),
            methods=["POST"],
            summary=f"{model.slug}: queue and return",
            description=model.summary,
            tags=[model.slug],
            openapi_extra=extra,
        )


router = APIRouter()


@router.get("/v1/models", tags=["service"])
async def list_models(request: Request) -> JSONResponse:
    service = _service(request)
    entries = []
    for model in service.models.values():
        entries.append(
            {
                "slug": model.slug,
                "summary": model.summary,
                "built": model.built,
                "engine": model.engine_name(service.settings),
                "weights_installed": model.weights_installed(service.settings),
                "input_schema": model.Input.model_json_schema(),
            }
        )
    return JSONResponse({"models": entries})


@router.post("/v1/{slug}", include_in_schema=False)
@router.post("/v2/{slug}", include_in_schema=False)
async def unknown_model(slug: str, request: Request) -> Response:
    known = ", ".join(_service(request).models)
    raise NotFound(f"unknown model '{slug}'; this server has: {known}")


@router.get("/v2/requests/{request_id}/status", tags=["requests"])
async def request_status(request_id: str, request: Request) -> JSONResponse:
    record = _service(request).get(request_id)
    if record.status is Status.FAILED:
        return JSONResponse(_failed_body(record), status_code=422)
    return JSONResponse({"request_id": record.id, "status": record.status.value, "metrics": record.metrics})


@router.get("/v2/requests/{request_id}", tags=["requests"])
async def request_result(request_id: str, request: Request) -> JSONResponse:
    service = _service(request)
    record = service.get(request_id)
    if record.status is Status.FAILED:
        return JSONResponse({**_failed_body(record), "metrics": record.metrics}, status_code=422)
    body: dict[str, Any] = {"request_id": record.id, "status": record.status.value, "metrics": record.metrics}
    if record.status is Status.COMPLETED:
        if record.base64:
            outputs = await run_in_threadpool(service.outputs, record)
            encoded = [base64.b64encode(output.data).decode() for output in outputs]
            body["output"], body["outputs"] = encoded[0], encoded
        else:
            base = public_base(request, service.settings)
            urls = [output_url(base, record.id, index) for index in range(len(record.outputs))]
            body["output"], body["outputs"] = urls[0], urls
    else:
        body["output"] = None
    return JSONResponse(body)


@router.get("/v2/requests/{request_id}/output/{index}", tags=["requests"])
async def request_output(request_id: str, index: int, request: Request) -> Response:
    service = _service(request)
    record = service.get(request_id)
    output = await run_in_threadpool(service.output, record, index)
    return Response(content=output.data, media_type=output.content_type)


@router.get("/healthz", tags=["service"])
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", tags=["service"])
async def readyz(request: Request) -> JSONResponse:
    service = _service(request)
    if not await run_in_threadpool(service.queue_reachable):
        raise ServiceUnavailable("the queue database cannot be read")
    if not await run_in_threadpool(service.workers_alive):
        raise ServiceUnavailable("no worker is running: start `retouch worker`, or `retouch serve` with --workers 1 or more")
    return JSONResponse({"status": "ready"})
