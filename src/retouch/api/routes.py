"""The HTTP contract: /v1 runs and waits, /v2 queues and returns, /v2/requests/... reads and cancels.

Routes only parse HTTP and shape answers; `JobService.submit` does every check, fetch and decode.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from retouch.api.inputs import read_parameters
from retouch.api.schemas import (
    CancelAnswer,
    EndedBadly,
    HealthAnswer,
    Metrics,
    ModelEntry,
    ModelsAnswer,
    ResultAnswer,
    StatusAnswer,
    SubmitAnswer,
    SyncBase64Answer,
    error_responses,
)
from retouch.api.urls import output_url, public_base, request_links
from retouch.errors import (
    BackendUnavailable,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    SyncTimeout,
)
from retouch.jobs.records import ApiKey, JobRecord, Status
from retouch.jobs.service import ANONYMOUS, Caller, JobService
from retouch.models.base import Model

_SUBMIT_ERRORS = error_responses(400, 401, 403, 406, 409, 413, 429, 501, 503)


def _service(request: Request) -> JobService:
    return request.app.state.service


def _tag(request: Request, slug: str) -> None:
    """Name the slug for the request log line and the metrics."""
    request.scope.setdefault("state", {})["slug"] = slug


def _ended_badly(record: JobRecord, with_metrics: bool) -> JSONResponse:
    default = "the request was cancelled" if record.status is Status.CANCELED else "the request failed"
    body = EndedBadly(
        request_id=record.id,
        status=record.status.value,  # type: ignore[arg-type] - only FAILED or CANCELED come here
        error=record.error or default,
        metrics=Metrics(**record.public_metrics()) if with_metrics else None,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=422)


async def _authenticate(request: Request) -> ApiKey | None:
    """The request's API key (None with keys off); 401 without a known one. Its credits go in x-remaining-credits."""
    service = _service(request)
    if not service.access.enabled:
        return None
    key = await run_in_threadpool(service.access.authenticate, request.headers.get("x-api-key"))
    state = request.scope.setdefault("state", {})
    state["api_key"] = key
    state["remaining_credits"] = key.credits if key is not None else None
    return key


async def _read(request: Request, request_id: str) -> JobRecord:
    key = await _authenticate(request)
    service = _service(request)
    record = await run_in_threadpool(service.get, request_id)
    if key is not None and record.owner_key != key.id:
        # Another key's request reads as unknown, so that ids cannot be probed.
        raise NotFound(f"no request with id '{request_id}' (unknown, or its results expired after {service.settings.retention:g} s)")
    _tag(request, record.slug)
    return record


def _webhook(params: Any) -> str | None:
    if not isinstance(params, dict) or "webhook" not in params:
        return None
    webhook = params.pop("webhook")
    if not isinstance(webhook, str) or not webhook.strip():
        raise InvalidInput(f"webhook is {webhook!r}; give the http or https URL to call when the request ends")
    return webhook.strip()


async def _submit(request: Request, model: Model, synchronous: bool) -> JobRecord:
    _tag(request, model.slug)
    service = _service(request)
    key = await _authenticate(request)
    service.access.authorize(key, model.slug)
    await run_in_threadpool(service.access.check_rate, key)
    params, uploads = await read_parameters(request, model, service.settings)
    caller = ANONYMOUS
    if key is not None or not synchronous:
        idempotency_key = None if synchronous else request.headers.get("idempotency-key")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise InvalidInput(f"the Idempotency-Key header is {len(idempotency_key)} characters long; give 1 to 255")
        webhook = None if synchronous else _webhook(params)
        caller = Caller(
            key=key,
            idempotency_key=idempotency_key,
            webhook=webhook,
            webhook_base=public_base(request, service.settings),
        )
    request_id = request.scope["state"]["request_id"]
    submission = await service.submit_async(
        model.slug,
        params,
        uploads,
        request_id=request_id,
        synchronous=synchronous,
        caller=caller,
    )
    if key is not None:
        request.scope["state"]["remaining_credits"] = submission.remaining_credits if submission.remaining_credits is not None else key.credits
    return submission.record


def _sync_handler(model: Model) -> Callable[[Request], Awaitable[Response]]:
    async def run_sync(request: Request) -> Response:
        service = _service(request)
        record = await _submit(request, model, synchronous=True)
        links = request_links(public_base(request, service.settings), record.id)
        if not await service.wait(record.id, service.settings.sync_timeout):
            try:
                status = (await run_in_threadpool(service.get, record.id)).status.value
            except BackendUnavailable as error:
                # Accepted and not lost: the id and its URLs let the caller poll once the store answers.
                raise ServiceUnavailable(
                    f"{error.message}; the request was accepted: poll its status_url",
                    {"request_id": record.id, **links},
                ) from None
            raise SyncTimeout(
                f"the request did not finish within {service.settings.sync_timeout:g} s; it goes on: poll its status_url",
                record.id,
                {"status": status, **links},
            )
        record = await run_in_threadpool(service.get, record.id)
        if record.status in (Status.FAILED, Status.CANCELED):
            return _ended_badly(record, with_metrics=False)
        outputs = await run_in_threadpool(service.outputs, record)
        if record.base64:
            encoded = [base64.b64encode(output.data).decode() for output in outputs]
            answer = SyncBase64Answer(
                image=encoded[0],
                images=encoded,
                status="COMPLETED",
                metrics=Metrics(**record.public_metrics()),
            )
            return JSONResponse(answer.model_dump(exclude_none=True))
        return Response(content=outputs[0].data, media_type=outputs[0].content_type)

    run_sync.__name__ = f"run_{model.slug.replace('-', '_')}"
    return run_sync


def _async_handler(model: Model) -> Callable[[Request], Awaitable[SubmitAnswer]]:
    async def submit(request: Request) -> SubmitAnswer:
        service = _service(request)
        record = await _submit(request, model, synchronous=False)
        links = request_links(public_base(request, service.settings), record.id)
        # An Idempotency-Key replay answers the earlier request as it stands now.
        return SubmitAnswer(request_id=record.id, status=record.status.value, **links)  # type: ignore[arg-type]

    submit.__name__ = f"submit_{model.slug.replace('-', '_')}"
    return submit


_KEY_HEADER = {
    "name": "x-api-key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The API key (needed unless the server runs with --no-auth).",
}
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "The same key and body from the same API key, within the retention time, answer the first request again.",
}
_WEBHOOK_PROPERTY = {
    "type": "string",
    "format": "uri",
    "description": "An http(s) URL called once, signed, with the result body when the request ends (COMPLETED, FAILED or CANCELED).",
}


def _request_body_schema(model: Model, queued: bool = False) -> dict[str, Any]:
    schema = model.Input.model_json_schema()
    if queued:
        schema = {**schema, "properties": {**schema.get("properties", {}), "webhook": _WEBHOOK_PROPERTY}}
    form_schema = {
        "type": "object",
        "properties": {
            name: ({"type": "string", "format": "binary", "minLength": 1} if name in model.all_image_fields() else value)
            for name, value in schema.get("properties", {}).items()
        },
        "required": schema.get("required", []),
        "additionalProperties": False,
    }
    return {
        "parameters": [_KEY_HEADER, _IDEMPOTENCY_HEADER] if queued else [_KEY_HEADER],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    }


# The JSON answer (base64=true) comes from `"model": SyncBase64Answer` beside this: FastAPI then puts its
# schema, and the Metrics it refers to, among the document's components, where the $refs resolve.
_IMAGE_CONTENT: dict[str, Any] = {
    "image/png": {},
    "image/jpeg": {},
    "image/webp": {},
}


def add_model_routes(app: FastAPI, models: dict[str, Model]) -> None:
    """One /v1 and one /v2 route per slug, each documented with its Input schema and its answers."""
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
            responses={
                200: {
                    "model": SyncBase64Answer,
                    "content": _IMAGE_CONTENT,
                    "description": "The image (or JSON with base64 images when base64=true).",
                },
                **_SUBMIT_ERRORS,
                **error_responses(422, 504),
            },
        )
        app.add_api_route(
            f"/v2/{model.slug}",
            _async_handler(model),
            methods=["POST"],
            summary=f"{model.slug}: queue and return",
            description=model.summary,
            tags=[model.slug],
            openapi_extra=_request_body_schema(model, queued=True),
            response_model=SubmitAnswer,
            responses=_SUBMIT_ERRORS,
        )


router = APIRouter()


@router.get(
    "/v1/models",
    tags=["service"],
    response_model=ModelsAnswer,
    responses=error_responses(401),
)
async def list_models(request: Request) -> ModelsAnswer:
    await _authenticate(request)
    service = _service(request)
    try:
        live = await run_in_threadpool(service.live_workers)
    except BackendUnavailable:
        live = dict.fromkeys(service.models, 0)
    entries = [
        ModelEntry(
            slug=model.slug,
            summary=model.summary,
            built=model.built,
            engine=model.engine_name(service.settings),
            weights_installed=model.weights_installed(service.settings),
            live_workers=live.get(model.slug, 0),
            input_schema=model.Input.model_json_schema(),
        )
        for model in service.models.values()
    ]
    return ModelsAnswer(models=entries)


@router.post("/v1/{slug}", include_in_schema=False)
@router.post("/v2/{slug}", include_in_schema=False)
async def unknown_model(slug: str, request: Request) -> Response:
    # `POST /v1/models` lands here, but the path exists for other methods: that is a 405, not a 404.
    allowed = [
        method
        for method in ("GET", "DELETE")
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in request.app.router.routes)
    ]
    if allowed:
        raise MethodNotAllowed(
            f"method POST is not allowed on {request.url.path}; use {', '.join(allowed)}",
            allowed,
        )
    raise NotFound(f"unknown model '{slug}'; this server has: {', '.join(_service(request).models)}")


@router.get(
    "/v2/requests/{request_id}/status",
    tags=["requests"],
    response_model=StatusAnswer,
    responses=error_responses(400, 401, 404, 422, 503),
)
async def request_status(request_id: str, request: Request) -> Response:
    record = await _read(request, request_id)
    if record.status in (Status.FAILED, Status.CANCELED):
        return _ended_badly(record, with_metrics=False)
    answer = StatusAnswer(
        request_id=record.id,
        status=record.status.value,
        progress=record.progress,
        metrics=Metrics(**record.public_metrics()),
    )  # type: ignore[arg-type]
    return JSONResponse(answer.model_dump(exclude_none=True))


@router.get(
    "/v2/requests/{request_id}",
    tags=["requests"],
    response_model=ResultAnswer,
    responses=error_responses(400, 401, 404, 422, 503),
)
async def request_result(request_id: str, request: Request) -> Response:
    service = _service(request)
    record = await _read(request, request_id)
    if record.status in (Status.FAILED, Status.CANCELED):
        return _ended_badly(record, with_metrics=True)
    output: str | None = None
    outputs: list[str] | None = None
    if record.status is Status.COMPLETED:
        if record.base64:
            stored = await run_in_threadpool(service.outputs, record)
            outputs = [base64.b64encode(each.data).decode() for each in stored]
        else:
            base = public_base(request, service.settings)
            outputs = [output_url(base, record.id, index) for index in range(len(record.outputs))]
        output = outputs[0]
    answer = ResultAnswer(
        request_id=record.id,
        status=record.status.value,  # type: ignore[arg-type]
        output=output,
        outputs=outputs,
        progress=record.progress,
        metrics=Metrics(**record.public_metrics()),
    )
    # `output` stays in the body as null until COMPLETED, as the hosted API answers.
    return JSONResponse({**answer.model_dump(exclude_none=True), "output": output})


@router.get(
    "/v2/requests/{request_id}/output/{index}",
    tags=["requests"],
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
            "description": "The image.",
        },
        **error_responses(400, 401, 404, 422, 503),
    },
)
async def request_output(request_id: str, index: int, request: Request) -> Response:
    service = _service(request)
    record = await _read(request, request_id)
    output = await run_in_threadpool(service.output, record, index)
    return Response(content=output.data, media_type=output.content_type)


@router.delete(
    "/v2/requests/{request_id}",
    tags=["requests"],
    response_model=CancelAnswer,
    responses={
        202: {
            "model": CancelAnswer,
            "description": "Cancel asked; it stops at its engine's next step.",
        },
        **error_responses(400, 401, 404, 409, 503),
    },
)
async def cancel_request(request_id: str, request: Request) -> Response:
    await _read(request, request_id)
    record = await run_in_threadpool(_service(request).cancel, request_id)
    if record.status is Status.CANCELED:
        return JSONResponse(CancelAnswer(request_id=record.id, status="CANCELED", cancel_requested=True).model_dump())
    answer = CancelAnswer(request_id=record.id, status=record.status.value, cancel_requested=True)  # type: ignore[arg-type]
    return JSONResponse(answer.model_dump(), status_code=202)


@router.get("/healthz", tags=["service"], response_model=HealthAnswer)
async def healthz() -> HealthAnswer:
    return HealthAnswer(status="ok")


@router.get(
    "/readyz",
    tags=["service"],
    response_model=HealthAnswer,
    responses=error_responses(503),
)
async def readyz(request: Request) -> HealthAnswer:
    problems = await run_in_threadpool(_service(request).readiness_problems)
    if problems:
        raise ServiceUnavailable("; ".join(problems))
    return HealthAnswer(status="ready")


@router.get(
    "/metrics",
    tags=["service"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics."}},
)
async def metrics(request: Request) -> Response:
    if not _service(request).settings.metrics_enabled:
        raise NotFound("metrics are off on this server (RETOUCH_METRICS_ENABLED=false)")
    registry = request.app.state.metrics_registry
    return Response(
        content=await run_in_threadpool(generate_latest, registry),
        media_type=CONTENT_TYPE_LATEST,
    )
