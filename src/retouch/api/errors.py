"""The one place where errors become HTTP responses. Every error body is JSON with an `error` key."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retouch.errors import Busy, MethodNotAllowed, PayloadTooLarge, RequestTimeout, RetouchError

_HTTP_MESSAGES = {
    404: "not found: {path}",
    405: "method {method} is not allowed on {path}",
}


def error_response(status_code: int, message: str, details: dict[str, object] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, **(details or {})}, status_code=status_code)


async def _retouch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RetouchError)
    headers: dict[str, str] = {}
    if isinstance(exc, Busy):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, RequestTimeout | PayloadTooLarge):
        # The rest of the body may never come, or is not wanted: the connection is not reused.
        headers["Connection"] = "close"
    response = error_response(exc.status_code, exc.message, exc.details)
    response.headers.update(headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "path", "query"))
        problems.append(f"{location or 'request'}: {error.get('msg')}")
    return error_response(400, "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    template = _HTTP_MESSAGES.get(exc.status_code)
    if template is not None and exc.detail in ("Not Found", "Method Not Allowed"):
        message = template.format(path=request.url.path, method=request.method)
    else:
        message = str(exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RetouchError, _retouch_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
