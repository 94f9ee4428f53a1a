"""background-eraser through the whole service on the real U²-Net weights."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from retouch.api.app import create_app
from retouch.config import Settings

# Inside each subject and in its background (top, bottom, left, right), chosen by looking at the photos.
SUBJECTS = {
    "chelsea": ((30, 230, 120, 320), ((0, 24, 0, 24), (0, 24, -24, None))),
    "coffee": ((60, 330, 120, 430), ((0, 24, 0, 24), (-24, None, -24, None))),
    "astronaut": ((250, 450, 100, 300), ((0, 24, 0, 24), (0, 24, -24, None))),
}


def jpeg_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode()


def decode(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def region(array: np.ndarray, box: tuple[int | None, ...]) -> np.ndarray:
    top, bottom, left, right = box
    return array[top:bottom, left:right]


@pytest.fixture(scope="module")
def client(weights_settings: Settings):
    with TestClient(create_app(weights_settings, workers=1)) as test_client:
        yield test_client


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_mask_and_cutout_are_plausible_and_agree(client, name):
    image = getattr(data, name)()
    subject, corners = SUBJECTS[name]
    encoded = jpeg_base64(image)

    response = client.post("/v1/background-eraser", json={"image": encoded})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    mask = decode(response.content)
    assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
    assert (region(mask, subject) >= 128).mean() > 0.8
    for corner in corners:
        assert (region(mask, corner) >= 128).mean() < 0.05

    cutout = decode(client.post("/v1/background-eraser", json={"image": encoded, "return_mask": False}).content)
    assert cutout.shape == (*image.shape[:2], 4)
    assert np.array_equal(cutout[..., 3], mask)
    assert not cutout[mask == 0].any(), "a clear pixel of the cut-out keeps a colour of the removed background"
    sent = decode(base64.b64decode(encoded))
    assert np.array_equal(cutout[mask == 255][:, :3], sent[mask == 255])

    inverted = decode(client.post("/v1/background-eraser", json={"image": encoded, "invert_mask": True}).content)
    assert np.array_equal(inverted, 255 - mask)

    grown = decode(client.post("/v1/background-eraser", json={"image": encoded, "grow_mask": 10}).content)
    assert np.all(grown >= mask) and (grown >= 128).sum() > (mask >= 128).sum()


def test_metrics_name_the_engine(client):
    body = client.post("/v1/background-eraser", json={"image": jpeg_base64(data.coffee()), "base64": True}).json()
    assert body["metrics"]["engine"] == "u2net-int8"
    assert body["metrics"]["model"] == "u2net.int8.onnx"  # the default: RETOUCH_BACKGROUND_ERASER_MODEL=u2net-int8
    assert 0 < body["metrics"]["inference_time"] < body["metrics"]["total_time"]
    models = {entry["slug"]: entry for entry in client.get("/v1/models").json()["models"]}
    assert models["background-eraser"]["weights_installed"] is True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_api_and_separate_worker_process(installed_weights_dir: Path, tmp_path: Path):
    """`retouch serve --workers 0` and `retouch worker` as two processes sharing one home."""
    port = _free_port()
    environment = {
        **os.environ,
        "RETOUCH_HOME": str(tmp_path / "home"),
        "RETOUCH_WEIGHTS_DIR": str(installed_weights_dir),
        "RETOUCH_BACKGROUND_ERASER_MODEL": "u2netp",
        "RETOUCH_IDLE_POLL": "30",
        "RETOUCH_LOG_LEVEL": "warning",
        "RETOUCH_MIN_FREE_BYTES": "0",
    }
    command = [sys.executable, "-m", "retouch.cli"]
    api = subprocess.Popen([*command, "serve", "--workers", "0", "--port", str(port)], env=environment)
    worker = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and api.poll() is None, "retouch serve did not start"
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").status_code == 503
        # No worker yet: refused at once rather than left to wait.
        refused = httpx.post(f"{base}/v2/background-eraser", json={"image": jpeg_base64(data.coffee())})
        assert refused.status_code == 503 and "no live worker serves background-eraser" in refused.json()["error"]

        worker = subprocess.Popen([*command, "worker"], env=environment)
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/readyz").status_code != 200:
            assert time.monotonic() < deadline and worker.poll() is None, "the worker process did not come up"
            time.sleep(0.2)
        queued = httpx.post(f"{base}/v2/background-eraser", json={"image": jpeg_base64(data.coffee())}).json()
        while httpx.get(queued["status_url"]).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline, "the worker process did not run the queued job"
            time.sleep(0.2)

        # /v1 through the other process: the API hears that the job ended (its own re-check is 30 s apart).
        started = time.monotonic()
        response = httpx.post(f"{base}/v1/background-eraser", json={"image": jpeg_base64(data.chelsea())}, timeout=60)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 25
        mask = decode(response.content)
        assert (region(mask, SUBJECTS["chelsea"][0]) >= 128).mean() > 0.8
    finally:
        for process in (worker, api):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in (worker, api):
            if process is not None:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
