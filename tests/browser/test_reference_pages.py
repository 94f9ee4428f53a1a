"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), in Chromium against a real server: they render
the service's operations from files the server ships, load nothing from another origin, and log no error (a
Content-Security-Policy violation included: `new_page` fails the test on any console error)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Request, expect

SIZES = {
    "laptop": {"width": 1366, "height": 850},
    "phone": {"width": 390, "height": 844, "mobile": True},
}
RENDER_TIMEOUT_MS = 30_000


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _record_requests(page: Page) -> list[str]:
    urls: list[str] = []

    def on_request(request: Request) -> None:
        urls.append(request.url)

    page.on("request", on_request)
    return urls


def _foreign(urls: list[str], base_url: str) -> list[str]:
    """The requests that went anywhere but the server: a blob: URL counts as its creator's origin, a data: URL
    is no request to anyone."""
    own = _origin(base_url)
    foreign = []
    for url in urls:
        if url.startswith("data:"):
            continue
        inner = url.removeprefix("blob:")
        if _origin(inner) != own:
            foreign.append(url)
    return foreign


@pytest.mark.parametrize("size", SIZES)
def test_swagger_ui_renders_the_operations_from_the_servers_own_files(
    size: str, serve_retouch: Callable[..., Any], new_page: Callable[..., Page], screenshot: Callable[..., Any]
) -> None:
    with serve_retouch() as base_url:
        page = new_page(**SIZES[size])
        requests = _record_requests(page)
        response = page.goto(f"{base_url}/docs")
        assert response is not None and response.status == 200
        operation = page.locator('.opblock.opblock-post:has(.opblock-summary-path[data-path="/v1/magic-eraser"])')
        expect(operation).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        expect(page.locator('.opblock-summary-path[data-path="/v2/requests/{request_id}"]').first).to_be_visible()
        expect(page.locator(".info .title")).to_contain_text("retouch")
        page.wait_for_load_state("networkidle")
        screenshot(page, f"docs-{size}")

    assert any(urlsplit(url).path == "/openapi.json" for url in requests), requests
    assert _foreign(requests, base_url) == []


def test_swagger_ui_resolves_every_reference_of_an_opened_operation(serve_retouch: Callable[..., Any], new_page: Callable[..., Page]) -> None:
    """Swagger UI resolves an operation's $refs when it is opened and shows a "Resolver error" box (not a
    console error) for one that points nowhere."""
    with serve_retouch() as base_url:
        page = new_page()
        page.goto(f"{base_url}/docs")
        operation = page.locator('.opblock.opblock-post:has(.opblock-summary-path[data-path="/v1/magic-eraser"])')
        operation.locator(".opblock-summary").click()
        expect(operation.locator(".responses-table").first).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        expect(operation.get_by_text("Fill the masked region", exact=False)).to_be_visible()
        page.wait_for_load_state("networkidle")
        errors = page.locator(".errors-wrapper")
        assert errors.count() == 0, errors.all_inner_texts()


@pytest.mark.parametrize("size", SIZES)
def test_redoc_renders_the_operations_from_the_servers_own_files(
    size: str, serve_retouch: Callable[..., Any], new_page: Callable[..., Page], screenshot: Callable[..., Any]
) -> None:
    with serve_retouch() as base_url:
        page = new_page(**SIZES[size])
        requests = _record_requests(page)
        response = page.goto(f"{base_url}/redoc")
        assert response is not None and response.status == 200
        # Each operation's summary heads its section of the main column (the menu is folded away on a phone).
        rendered = page.locator("h2", has_text="magic-eraser: run and wait")
        # ReDoc shows this (and the error) in place of the page when it cannot read the schema.
        crashed = page.locator("h1", has_text="Something went wrong")
        expect(rendered.or_(crashed).first).to_be_visible(timeout=RENDER_TIMEOUT_MS)
        assert not crashed.is_visible(), f"ReDoc could not render the schema: {page.locator('#redoc').inner_text()[:1000]}"
        expect(page.locator("h2", has_text="Request Result")).to_be_visible()
        if size == "laptop":
            # The menu lists the tags; their operations unfold under them.
            expect(page.get_by_role("menuitem", name="magic-eraser", exact=True)).to_be_visible()
        page.wait_for_load_state("networkidle")
        screenshot(page, f"redoc-{size}")

    assert any(urlsplit(url).path == "/openapi.json" for url in requests), requests
    assert _foreign(requests, base_url) == []
