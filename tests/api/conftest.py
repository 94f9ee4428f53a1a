from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import ALL_MODELS
from fastapi.testclient import TestClient

from retouch.api.app import create_app
from retouch.config import Settings


@pytest.fixture
def photo() -> np.ndarray:
    """A small deterministic RGB picture: a gradient with a square."""
    rows, cols = np.mgrid[0:48, 0:64]
    image = np.stack([rows * 5, cols * 4, (rows + cols) * 2], axis=-1).astype(np.uint8)
    image[10:20, 30:40] = (250, 10, 10)
    return image


ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[ClientFactory]:
    """`with make_client(workers=1, sync_timeout=2) as client:` runs the app (and its workers) for the block."""

    @contextmanager
    def factory(workers: int = 1, home: Path | None = None, idle_worker: bool = False, **overrides: Any) -> Iterator[TestClient]:
        """`idle_worker`: a live worker's heartbeat for every slug, with no worker behind it, so that requests
        are admitted and stay QUEUED."""
        # The disk the tests run on may be nearly full: readiness ignores free space unless a test asks.
        overrides.setdefault("min_free_bytes", 0)
        settings = Settings(home=home or tmp_path / "home", weights_dir=tmp_path / "weights", **overrides)
        app = create_app(settings, models=ALL_MODELS, workers=workers)
        with TestClient(app, raise_server_exceptions=False) as client:
            if idle_worker:
                client.app.state.service.store.heartbeat("idle-host:1:idle", tuple(ALL_MODELS), 1)
            yield client

    yield factory


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client() as test_client:
        yield test_client


@pytest.fixture
def image_server() -> Iterator[Callable[[dict[str, bytes]], str]]:
    """Serves the given {path: bytes} on 127.0.0.1 from a thread; returns its base URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers: list[ThreadingHTTPServer] = []

    def start(files: dict[str, bytes]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                data = files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
