"""Under overload and slow clients: refusals at once instead of 504s, and no request thread held by a slow
image server. Real uvicorn servers on loopback, driven by concurrent clients."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import ALL_MODELS
from images import b64
from servers import serving

from retouch.api.app import create_app
from retouch.config import Settings
from retouch.errors import NoWorker
from retouch.jobs.admission import Admission, estimated_seconds
from retouch.jobs.backends import open_backend


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights", **overrides)


def test_the_estimate_counts_the_queue_the_running_jobs_and_the_threads():
    assert estimated_seconds(2.0, queued=0, running=0, threads=1) == 2.0
    assert estimated_seconds(2.0, queued=0, running=1, threads=2) == 2.0
    # One running (half done on average), then ours.
    assert estimated_seconds(2.0, queued=0, running=1, threads=1) == 3.0
    assert estimated_seconds(2.0, queued=4, running=1, threads=1) == 11.0
    assert estimated_seconds(2.0, queued=4, running=2, threads=2) == 6.0


def test_no_live_worker_is_503_on_both_paths_at_once(tmp_path, photo):
    with serving(create_app(make_settings(tmp_path), models=ALL_MODELS, workers=0)) as base:
        for version in ("v1", "v2"):
            started = time.monotonic()
            answer = httpx.post(f"{base}/{version}/fake-invert", json={"image": b64(photo)}, timeout=30)
            assert answer.status_code == 503, answer.text
            assert "no live worker serves fake-invert" in answer.json()["error"]
            assert time.monotonic() - started < 1


def test_a_worker_that_has_just_come_up_is_seen_at_once_though_the_view_of_workers_is_cached(tmp_path):
    settings = make_settings(tmp_path)
    backend = open_backend(settings, ("fake-invert",))
    try:
        admission = Admission(settings, backend.store)
        with pytest.raises(NoWorker):
            admission.check("fake-invert", synchronous=False)
        # Within the cache's second: the refusal above must not stick to the worker's first heartbeat.
        backend.store.heartbeat("worker-1", ("fake-invert",), threads=1)
        admission.check("fake-invert", synchronous=False)
    finally:
        backend.close()


def test_before_any_job_has_ended_v1_takes_only_as_many_as_there_are_threads(tmp_path, photo, monkeypatch):
    from fakes import GATES_VARIABLE, release

    monkeypatch.setenv(GATES_VARIABLE, str(tmp_path))
    with serving(create_app(make_settings(tmp_path), models=ALL_MODELS, workers=1)) as base:
        busy = httpx.post(f"{base}/v2/fake-blocks-until-released", json={"image": b64(photo), "gate": "first"}, timeout=30)
        assert busy.status_code == 200
        try:
            refused = httpx.post(f"{base}/v1/fake-blocks-until-released", json={"image": b64(photo), "gate": "second"}, timeout=30)
            assert refused.status_code == 429 and "not known yet" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
        finally:
            release("first")


def test_overloaded_v1_is_refused_at_once_and_nothing_ends_in_a_504(tmp_path, photo):
    settings = make_settings(tmp_path, sync_timeout=2.0)
    body = {"image": b64(photo), "seconds": 0.3}
    with serving(create_app(settings, models=ALL_MODELS, workers=1)) as base:
        # A few requests first, so that the slug's job time is known.
        for _ in range(2):
            assert httpx.post(f"{base}/v1/fake-slow", json=body, timeout=30).status_code == 200

        def call(_: int) -> tuple[int, float, httpx.Response]:
            started = time.monotonic()
            response = httpx.post(f"{base}/v1/fake-slow", json=body, timeout=30)
            return response.status_code, time.monotonic() - started, response

        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(call, range(24)))
        codes = [code for code, _, _ in results]
        assert 504 not in codes, codes
        assert codes.count(200) >= 3 and codes.count(429) >= 10, codes
        for code, seconds, response in results:
            if code == 429:
                assert seconds < 1.0
                assert int(response.headers["retry-after"]) >= 1
                assert "/v2/fake-slow" in response.json()["error"]
                # Refused before a job existed: its id names nothing.
                assert httpx.get(f"{base}/v2/requests/{response.headers['x-request-id']}/status").status_code == 404
            else:
                assert code == 200
        # /v2 still takes them, for the caller who can poll.
        assert httpx.post(f"{base}/v2/fake-slow", json=body, timeout=30).status_code == 200


class SlowImageHandler(BaseHTTPRequestHandler):
    """Sends an image's headers, then ten bytes a second: a client that would hold a thread for minutes.
    Notes when each connection began."""

    began: list[float] = []

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        SlowImageHandler.began.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            return

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        return


@pytest.fixture
def slow_image_url() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowImageHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow.png"
    server.shutdown()
    server.server_close()


def test_slow_image_urls_hold_no_thread_and_end_at_their_deadline(tmp_path, photo, slow_image_url):
    settings = make_settings(tmp_path, allow_private_urls=True, fetch_total_timeout=3.0, fetch_concurrency_per_host=4)
    with serving(create_app(settings, models=ALL_MODELS, workers=1)) as base:
        # One request first, so that the slug's job time is known and admission does not stand in the way.
        assert httpx.post(f"{base}/v1/fake-invert", json={"image": b64(photo)}, timeout=30).status_code == 200
        slow: list[tuple[int, float, str]] = []

        def fetch_slowly() -> None:
            started = time.monotonic()
            response = httpx.post(f"{base}/v1/fake-invert", json={"image": slow_image_url}, timeout=60)
            slow.append((response.status_code, time.monotonic() - started, response.json()["error"]))

        # More slow requests than the request thread pool has threads (40).
        SlowImageHandler.began.clear()
        sent = time.monotonic()
        threads = [threading.Thread(target=fetch_slowly) for _ in range(45)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        for path in ("/healthz", "/readyz"):
            started = time.monotonic()
            assert httpx.get(f"{base}{path}", timeout=10).status_code == 200
            assert time.monotonic() - started < 1, path
        started = time.monotonic()
        assert httpx.post(f"{base}/v1/fake-invert", json={"image": b64(photo)}, timeout=30).status_code == 200
        assert time.monotonic() - started < 2
        for thread in threads:
            thread.join(timeout=30)
    assert len(slow) == 45
    for code, seconds, error in slow:
        assert seconds < 3.0 + 2.0, (code, seconds, error)
        # Fetching, cut at the total deadline (400); or waiting for one of the host's 4 slots (429).
        assert (code == 400 and "timed out after 3 s" in error) or (code == 429 and "as many images as it allows" in error), (code, error)
    # Until the first fetches reach their deadline none ends, so the connections begun by then are all
    # open at once: the per-host limit, filled at once and never passed.
    assert sum(1 for moment in SlowImageHandler.began if moment < sent + 2.5) == 4
