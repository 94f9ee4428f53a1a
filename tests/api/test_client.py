"""retouch's own Python client against a live server on a free port (the fakes' engines), and its retries."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fakes import ALL_MODELS
from images import decode, png_bytes
from PIL import Image
from servers import serving

from retouch import client as retouch_client
from retouch.api.app import create_app
from retouch.client import (
    AsyncClient,
    Client,
    InferenceFailed,
    InferenceTimeout,
    Job,
    NotEnoughCredits,
    PermissionDenied,
    RateLimited,
    RetouchError,
    Unauthorized,
)
from retouch.config import Settings
from retouch.jobs.access import new_key


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights", auth=False, min_free_bytes=0)
    with serving(create_app(settings, models=ALL_MODELS, workers=1)) as base:
        yield base


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url, timeout=10) as made:
        yield made


def test_importing_the_client_loads_none_of_the_servers_dependencies():
    code = "import sys, retouch.client; heavy = {'onnxruntime', 'fastapi', 'numba', 'cv2', 'torch'} & set(sys.modules); print(sorted(heavy))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_images_go_in_as_a_path_bytes_pil_or_numpy_and_come_out_as_bytes_pil_numpy_or_a_file(client, photo, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(photo))
    for image in (str(path), path, png_bytes(photo), Image.fromarray(photo), photo):
        result = client.run_sync("fake-invert", image=image, output_format="png")
        assert np.array_equal(result.to_numpy(), 255 - photo)
    assert result.request_id and result.metrics["engine"] == "fake"
    assert np.array_equal(np.asarray(result.to_pil()), 255 - photo)
    saved = result.save(tmp_path / "out.png")
    assert np.array_equal(decode(saved.read_bytes()), 255 - photo)


def test_run_goes_through_v2_and_submit_async_gives_a_job(client, photo):
    result = client.run("fake-invert", image=photo, output_format="png", interval=0.05)
    assert np.array_equal(decode(result.image), 255 - photo)
    job = client.submit_async("fake-counts-steps", image=photo, steps=5, step_seconds=0.05)
    assert isinstance(job, Job) and job.request_id
    assert job.status()["status"] in ("QUEUED", "PROCESSING", "COMPLETED")
    done = job.wait(timeout=30, interval=0.05)
    assert done.metrics["steps"] == 5 and job.status()["progress"] == 1.0


def test_the_same_idempotency_key_gives_the_same_request(client, photo):
    first = client.submit_async("fake-invert", image=photo, idempotency_key="order-17")
    again = client.submit_async("fake-invert", image=photo, idempotency_key="order-17")
    assert first.request_id == again.request_id


def test_a_failed_request_raises_inference_failed_with_the_servers_error(client, photo):
    with pytest.raises(InferenceFailed) as caught:
        client.run("fake-refuses-in-predict", image=photo, interval=0.05)
    assert "unicorn" in caught.value.error and caught.value.request_id
    with pytest.raises(InferenceFailed) as caught:
        client.run_sync("fake-refuses-in-predict", image=photo)
    assert "unicorn" in caught.value.error


def test_a_bad_parameter_is_a_retouch_error_with_the_servers_message(client, photo):
    with pytest.raises(RetouchError) as caught:
        client.run_sync("fake-invert", image=photo, colour="red")
    assert caught.value.status == 400 and "unknown parameter 'colour'" in caught.value.detail
    with pytest.raises(RetouchError) as caught:
        Job(client, "0" * 32).status()
    assert caught.value.status == 404


def test_waiting_past_the_timeout_raises_inference_timeout_and_the_job_goes_on(client, photo):
    job = client.submit_async("fake-slow", image=photo, seconds=1.0)
    with pytest.raises(InferenceTimeout) as caught:
        job.wait(timeout=0.2, interval=0.05)
    assert caught.value.request_id == job.request_id and caught.value.elapsed_s >= 0.2
    assert job.wait(timeout=30, interval=0.05).images


def test_cancel(client, photo):
    job = client.submit_async("fake-counts-steps", image=photo, steps=200, step_seconds=0.05)
    job.cancel()
    with pytest.raises(InferenceFailed) as caught:
        job.wait(timeout=30, interval=0.05)
    assert caught.value.request_status == "CANCELED"


def test_the_key_errors_are_typed(tmp_path, photo):
    settings = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights", auth=True, min_free_bytes=0)
    app = create_app(settings, models=ALL_MODELS, workers=1)
    with serving(app) as base:
        store = app.state.service.store
        known = tuple(ALL_MODELS)
        only_masks, only_masks_secret = new_key("masks", ("fake-mask-echo",), None, "60/minute", known, 0.0)
        broke, broke_secret = new_key("broke", None, 0.0, "60/minute", known, 0.0)
        store.create_key(only_masks)
        store.create_key(broke)
        for secret, error in (("rt_nobody", Unauthorized), (only_masks_secret, PermissionDenied), (broke_secret, NotEnoughCredits)):
            with Client(base, api_key=secret) as keyed, pytest.raises(error):
                keyed.run_sync("fake-invert", image=photo)


class _Refuses:
    """A server that answers 429 (with Retry-After) or 503 a number of times, then 200."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]) -> None:
        self.answers = answers
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                index = outer.calls
                outer.calls += 1
                status, headers = outer.answers[index] if index < len(outer.answers) else (200, {})
                body = b'{"error": "slow down"}' if status != 200 else b'{"image": "", "images": [], "status": "COMPLETED", "metrics": {}}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_429_and_503_are_retried_honouring_retry_after_a_bounded_number_of_times(monkeypatch):
    from retouch.client import core

    waits: list[float] = []
    monkeypatch.setattr(core.time, "sleep", waits.append)
    server = _Refuses([(429, {"Retry-After": "2"}), (503, {}), (502, {})])
    with Client(server.url, backoff=0.25) as retrying:
        retrying.run_sync("x", image=b"abc")
    assert server.calls == 4 and waits == [2.0, 0.5, 1.0]
    always = _Refuses([(429, {"Retry-After": "7"})] * 10)
    with Client(always.url, max_retries=2) as retrying, pytest.raises(RateLimited) as caught:
        retrying.run_sync("x", image=b"abc")
    assert always.calls == 3 and caught.value.retry_after == 7.0


def test_client_arguments_are_checked_and_the_environment_read(monkeypatch):
    with pytest.raises(ValueError, match="http"):
        Client("localhost:8000")
    with pytest.raises(ValueError, match="max_retries"):
        Client(max_retries=-1)
    monkeypatch.setenv("RETOUCH_BASE_URL", "http://10.1.2.3:9000/")
    monkeypatch.setenv("RETOUCH_API_KEY", "rt_secret")
    with Client() as made:
        assert made.base_url == "http://10.1.2.3:9000" and made.api_key == "rt_secret"
    monkeypatch.setattr(retouch_client.core, "_default", None)
    assert retouch_client.default_client().base_url == "http://10.1.2.3:9000"
    retouch_client.default_client().close()
    monkeypatch.setattr(retouch_client.core, "_default", None)
    with Client("http://127.0.0.1:9", max_retries=0) as unreachable, pytest.raises(RetouchError) as caught:
        unreachable.run_sync("x", image=b"abc")
    assert caught.value.status == 0 and "could not reach" in caught.value.detail


def test_the_async_client_has_the_same_surface(server_url, photo):
    import asyncio

    async def main() -> None:
        async with AsyncClient(server_url, timeout=10) as client:
            results = await asyncio.gather(*(client.run("fake-invert", image=photo, output_format="png", interval=0.05) for _ in range(3)))
            assert all(np.array_equal(result.to_numpy(), 255 - photo) for result in results)
            direct = await client.run_sync("fake-invert", image=photo, output_format="png")
            assert np.array_equal(direct.to_numpy(), 255 - photo)
            job = await client.submit_async("fake-slow", image=photo, seconds=1.0)
            with pytest.raises(InferenceTimeout):
                await job.wait(timeout=0.1, interval=0.05)
            assert (await job.wait(timeout=30, interval=0.05)).images
            with pytest.raises(InferenceFailed):
                await client.run("fake-refuses-in-predict", image=photo, interval=0.05)
            assert {entry["slug"] for entry in await client.models()} >= {"fake-invert", "bg-replace"}

    asyncio.run(main())
