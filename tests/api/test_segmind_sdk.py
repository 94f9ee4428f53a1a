"""The public segmind SDK (1.3.0), pointed at retouch, works unchanged: run_sync (/v1), run (/v2), failures."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import ALL_MODELS
from images import b64, decode
from segmind import SegmindClient
from segmind.exceptions import SegmindError
from segmind.v2 import InferenceFailed
from servers import serving

from retouch.api.app import create_app
from retouch.config import Settings


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights")
    with serving(create_app(settings, models=ALL_MODELS, workers=1)) as base:
        yield base


@pytest.fixture
def client(server_url: str) -> Iterator[SegmindClient]:
    sdk = SegmindClient(api_key="anything", base_url=f"{server_url}/v1")
    yield sdk
    sdk._client.close()


def test_run_sync_returns_the_image(client, photo):
    response = client.run_sync("fake-invert", image=b64(photo), output_format="png")
    assert response.headers["x-request-id"]
    assert np.array_equal(decode(response.content), 255 - photo)


def test_run_polls_v2_to_the_result(client, server_url, photo):
    job = client.submit_async("fake-invert", image=b64(photo), output_format="png")
    assert job.status_url.startswith(server_url + "/v2/requests/")
    result = job.wait(timeout=30, interval=0.05)
    assert result["status"] == "COMPLETED"
    assert result["metrics"]["engine"] == "fake"
    image = client._client.get(result["output"])
    assert np.array_equal(decode(image.content), 255 - photo)
    as_base64 = client.run("fake-invert", image=b64(photo), base64=True, output_format="png")
    assert np.array_equal(decode(base64.b64decode(as_base64["output"])), 255 - photo)


def test_failed_request_raises_inference_failed_with_the_error(client, photo):
    job = client.submit_async("fake-refuses-in-predict", image=b64(photo))
    with pytest.raises(InferenceFailed) as caught:
        job.wait(timeout=30, interval=0.05)
    assert "nothing matching 'unicorn'" in caught.value.detail


def test_bad_parameter_reaches_the_sdk_as_its_error(client, photo):
    with pytest.raises(SegmindError) as caught:
        client.run_sync("fake-invert", image=b64(photo), samples=10)
    assert caught.value.status == 400
    assert "samples=10" in caught.value.detail


def test_wait_ends_with_the_error_when_a_request_is_cancelled(client, server_url, photo, tmp_path, monkeypatch):
    """CANCELED is served as 422 with an error, so the SDK's wait() ends instead of polling on."""
    import httpx
    from fakes import GATES_VARIABLE, started_marks

    monkeypatch.setenv(GATES_VARIABLE, str(tmp_path))
    job = client.submit_async("fake-blocks-until-released", image=b64(photo), gate="never-opened")
    deadline = time.monotonic() + 20
    while not started_marks("never-opened"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert httpx.delete(f"{server_url}/v2/requests/{job.request_id}").status_code == 202
    with pytest.raises(SegmindError) as caught:
        job.wait(timeout=20, interval=0.05)
    assert caught.value.status == 422 and "cancelled" in caught.value.detail


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    settings = Settings(home=tmp_path / "keyed", weights_dir=tmp_path / "weights", auth=True, min_free_bytes=0)
    application = create_app(settings, models=ALL_MODELS, workers=1)
    with serving(application) as base:
        yield base, application.state.service


def test_the_sdk_sends_its_api_key_and_reads_401_and_406(keyed_server, photo):
    from retouch.jobs.access import new_key

    base, service = keyed_server
    key, secret = new_key("sdk", None, 3, None, service.slugs, time.time())
    service.store.create_key(key)
    sdk = SegmindClient(api_key=secret, base_url=f"{base}/v1")
    try:
        response = sdk.run_sync("fake-invert", image=b64(photo), output_format="png")
        assert response.headers["x-remaining-credits"] == "2"
        assert np.array_equal(decode(response.content), 255 - photo)
        result = sdk.run("fake-invert", image=b64(photo), base64=True, output_format="png")
        assert result["status"] == "COMPLETED"
        assert np.array_equal(decode(base64.b64decode(result["output"])), 255 - photo)
        sdk.run_sync("fake-invert", image=b64(photo))
        with pytest.raises(SegmindError) as poor:
            sdk.run_sync("fake-invert", image=b64(photo))
        assert poor.value.status == 406 and "credits" in poor.value.detail
    finally:
        sdk._client.close()
    stranger = SegmindClient(api_key="rt_wrong", base_url=f"{base}/v1")
    try:
        with pytest.raises(SegmindError) as refused:
            stranger.run_sync("fake-invert", image=b64(photo))
        assert refused.value.status == 401 and "not known" in refused.value.detail
    finally:
        stranger._client.close()
