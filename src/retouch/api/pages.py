"""The pages a person opens in a browser: the playground at `/`, the API reference at `/docs` and
`/redoc`. Every file they load is shipped in the package (`retouch/web`) and served from `/static`,
so they work on a machine with no network; each page carries a Content-Security-Policy that lets it
load nothing from another origin and run no inline script."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

WEB_FOLDER = Path(__file__).resolve().parent.parent / "web"

# The playground shows user-given image URLs as previews (img-src http: https:); everything it runs or
# styles itself with is its own.
PLAYGROUND_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data: http: https:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc set styles inline (ReDoc through styled-components' <style> tags) and ReDoc
# searches in a worker made from a blob; neither needs script from anywhere else.
REFERENCE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@cache
def _page(relative: str) -> str:
    return (WEB_FOLDER / relative).read_text(encoding="utf-8")


def _html(relative: str, policy: str) -> HTMLResponse:
    return HTMLResponse(
        _page(relative),
        headers={
            "content-security-policy": policy,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            # A new release's page must not run an old release's cached scripts.
            "cache-control": "no-cache",
        },
    )


@router.get("/")
async def playground() -> HTMLResponse:
    return _html("playground/index.html", PLAYGROUND_POLICY)


@router.get("/docs")
async def swagger() -> HTMLResponse:
    return _html("docs/swagger.html", REFERENCE_POLICY)


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return _html("docs/redoc.html", REFERENCE_POLICY)


class RevalidatedFiles(StaticFiles):
    """The package's files, which a browser asks for again on each load (a 304 while unchanged, by ETag):
    a page of a new release must not run the scripts of an old one from the browser's cache."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        return response


def add_pages(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", RevalidatedFiles(directory=WEB_FOLDER), name="static")
