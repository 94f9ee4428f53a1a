"""The hosted segmind SDK, unchanged, against retouch with a key, on every slug that has an engine (real weights)."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from images import b64
from PIL import Image
from segmind import SegmindClient
from segmind.exceptions import SegmindError
from segmind.v2 import AsyncJob, InferenceFailed
from servers import serving
from skimage import data

from retouch.api.app import create_app
from retouch.config import Settings
from retouch.jobs.access import new_key

pytestmark = pytest.mark.slow


def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[::2, ::2])


def mask() -> np.ndarray:
    selected = np.zeros(photo().shape[:2], np.uint8)
    selected[100:140, 40:90] = 255
    return selected


REQUESTS = {
    "background-eraser": {"image": b64(photo())},
    "magic-eraser": {"image": b64(photo()), "mask": b64(mask()), "seed": 1},
    "automatic-mask-generator": {"image": b64(photo()), "prompt": "person"},
    "inpaint-mask-maker": {"image": b64(photo()), "prompt": "person"},
    "bg-replace": {"image": b64(photo()), "ref_image": b64(data.coffee()), "prompt": "a cafe", "seed": 2},
}


@pytest.fixture(scope="module")
def keyed(weights_settings: Settings) -> Iterator[tuple[str, str]]:
    settings = weights_settings.model_copy(update={"auth": True, "bg_replace_engine": "composite", "min_free_bytes": 0})
    application = create_app(settings, workers=1)
    with serving(application) as base:
        service = application.state.service
        key, secret = new_key("sdk", None, None, None, service.slugs, time.time())
        service.store.create_key(key)
        yield base, secret


@pytest.mark.parametrize("slug", sorted(REQUESTS))
def test_every_slug_through_run_sync_and_run(keyed, slug):
    base, secret = keyed
    sdk = SegmindClient(api_key=secret, base_url=f"{base}/v1")
    try:
        response = sdk.run_sync(slug, **REQUESTS[slug])
        assert response.status_code == 200 and response.headers["x-remaining-credits"] == "unlimited"
        synced = np.asarray(Image.open(io.BytesIO(response.content)))
        assert synced.shape[:2] == photo().shape[:2]
        result = sdk.run(slug, base64=True, **REQUESTS[slug])
        assert result["status"] == "COMPLETED" and result["metrics"]["engine"]
        polled = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["output"]))))
        assert polled.shape[:2] == photo().shape[:2]
    finally:
        sdk._client.close()


def test_the_sdks_error_paths(keyed):
    base, secret = keyed
    sdk = SegmindClient(api_key=secret, base_url=f"{base}/v1")
    try:
        # A request that runs and FAILS: the offline detector finds no person on a flat grey picture, asked to stop on empty.
        grey = b64(np.full((64, 64, 3), 128, np.uint8))
        job = sdk.submit_async("automatic-mask-generator", image=grey, prompt="person", stop_on_empty_mask=True)
        with pytest.raises(InferenceFailed) as failed:
            job.wait(timeout=60, interval=0.1)
        assert "nothing matching 'person'" in failed.value.detail
        missing = AsyncJob(
            request_id="0" * 32,
            status_url=f"{base}/v2/requests/{'0' * 32}/status",
            response_url=f"{base}/v2/requests/{'0' * 32}",
            submit_response={},
            _client=sdk,
        )
        with pytest.raises(SegmindError) as unknown:
            missing.status()
        assert unknown.value.status == 404
    finally:
        sdk._client.close()
    stranger = SegmindClient(api_key="rt_wrong", base_url=f"{base}/v1")
    try:
        with pytest.raises(SegmindError) as refused:
            stranger.run_sync("background-eraser", **REQUESTS["background-eraser"])
        assert refused.value.status == 401
    finally:
        stranger._client.close()


@pytest.mark.parametrize("slug", sorted(REQUESTS))
def test_retouchs_own_client_on_every_slug(keyed, slug):
    from retouch.client import Client

    base, secret = keyed
    with Client(base, api_key=secret) as client:
        polled = client.run(slug, interval=0.1, **REQUESTS[slug])
        direct = client.run_sync(slug, **REQUESTS[slug])
        typed = getattr(client, slug.replace("-", "_"))(**REQUESTS[slug])
    for result in (polled, direct, typed):
        assert result.to_numpy().shape[:2] == photo().shape[:2] and result.metrics["engine"]
