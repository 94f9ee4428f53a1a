"""Browser tests: Playwright's sync API driving Debian's Chromium (never a browser Playwright downloads) against
a real uvicorn server that runs the app on the installed real weights.

Fixtures:
- `chromium`: the browser, launched once per test module (see its doc for why not once per session).
- `new_page`: `new_page(width=None, height=None, mobile=False)` makes a page in a fresh browser context
  (1366x850 by default, 390x844 with `mobile=True`). Every console error and uncaught page error is recorded,
  and the test fails at teardown if any were seen; a Content-Security-Policy violation is a console error, so
  this also proves that the page loaded nothing its policy refuses. A test that expects one calls
  `new_page.allow(regex)` (matched with re.search against the message; applies to all of the test's pages).
- `screenshot`: `screenshot(page, name)` saves a full-page PNG and returns its path, under
  $RETOUCH_SCREENSHOTS/<test name>/ when that is set, else under the test's tmp_path.
- `serve_retouch`: `with serve_retouch(**setting_overrides) as base_url:` runs the app on a free loopback port.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Page, sync_playwright
from servers import serving

from retouch.api.app import create_app
from retouch.config import Settings

CHROMIUM_ARGS = [
    # The tests often run as root in a container, where Chromium's sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    # Nothing but the page under test talks to the network: no update checks, sync, field trials or QUIC probes.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _chromium_path() -> str:
    configured = os.environ.get("RETOUCH_CHROMIUM")
    if configured:
        return configured
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "no chromium on PATH: the browser tests drive Debian's Chromium "
            "(apt-get install chromium; .ci/run does it), or set RETOUCH_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless. Playwright launches it with a fresh temporary profile (user-data dir) of its
    own and deletes it at close, so no state (cookies, storage, cache) survives from one launch to the next.

    Once per module, not per session: while Playwright's sync API is started, its event loop counts as running
    in the main thread, so every later test that calls asyncio.run() fails ("cannot be called from a running
    event loop"); a module's fixture ends with the module, before any other folder's tests run."""
    path = _chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageFactory:
    """What `new_page` yields: call it for a page; `allow(regex)` to accept the console errors that match."""

    browser: Browser = field(repr=False)
    contexts: list[BrowserContext] = field(default_factory=list, repr=False)
    problems: list[str] = field(default_factory=list, repr=False)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def __call__(self, width: int | None = None, height: int | None = None, mobile: bool = False) -> Page:
        if mobile:
            context = self.browser.new_context(
                viewport={"width": width or 390, "height": height or 844},
                is_mobile=True,
                has_touch=True,
                device_scale_factor=2,
            )
        else:
            context = self.browser.new_context(viewport={"width": width or 1366, "height": height or 850})
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)
        return page

    def allow(self, pattern: str) -> None:
        """Accept console and page errors whose text matches `pattern` (re.search)."""
        self.allowed.append(re.compile(pattern))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "") if message.location else ""
            self.problems.append(f"console error: {message.text}" + (f" (at {where})" if where else ""))

    def _on_page_error(self, error: Error) -> None:
        self.problems.append(f"page error: {error.name}: {error.message}")

    def unexpected(self) -> list[str]:
        return [problem for problem in self.problems if not any(pattern.search(problem) for pattern in self.allowed)]

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def new_page(chromium: Browser) -> Iterator[PageFactory]:
    """`page = new_page()` (laptop, 1366x850) or `new_page(mobile=True)` (phone, 390x844); see the module's doc."""
    factory = PageFactory(chromium)
    try:
        yield factory
    finally:
        factory.close()
    unexpected = factory.unexpected()
    if unexpected:
        pytest.fail("the browser reported errors:\n" + "\n".join(f"  {problem}" for problem in unexpected), pytrace=False)


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Page, str], Path]:
    """`screenshot(page, "docs-laptop")` saves the whole page as a PNG and returns its path."""
    root = os.environ.get("RETOUCH_SCREENSHOTS")
    test_name = re.sub(r"[^\w.\[\]-]", "_", request.node.name)
    folder = Path(root) / test_name if root else tmp_path / "screenshots"

    def take(page: Page, name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        path.write_bytes(page.screenshot(full_page=True))
        return path

    return take


@pytest.fixture
def serve_retouch(installed_weights_dir: Path, tmp_path: Path) -> Callable[..., Any]:
    """`with serve_retouch(**setting_overrides) as base_url:` the app with one worker thread, on the installed real
    weights and a fresh home under tmp_path, on a real uvicorn server on a free loopback port."""
    started = 0

    @contextmanager
    def serve(**overrides: Any) -> Iterator[str]:
        nonlocal started
        started += 1
        # The disk the tests run on may be nearly full: readiness ignores free space unless a test asks.
        overrides.setdefault("min_free_bytes", 0)
        settings = Settings(home=tmp_path / f"home-{started}", weights_dir=installed_weights_dir, **overrides)
        with serving(create_app(settings, workers=1)) as base_url:
            yield base_url

    return serve
