"""bg-replace's offline composite engine through the whole service, on photos scikit-image ships and the real U²-Net."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient
from images import b64, decode
from skimage import data

from retouch.api.app import create_app
from retouch.config import Settings
from retouch.engines.composite import cover_crop
from retouch.engines.schedulers import SCHEDULERS
from retouch.models.bg_replace import subject_mask

# Inside each subject, and background corners far from it (top, bottom, left, right), chosen by looking at the photos.
SUBJECTS = {
    "chelsea": ((30, 230, 120, 320), ((0, 24, 0, 24), (0, 24, -24, None))),
    "astronaut": ((250, 450, 100, 300), ((0, 24, 0, 24), (0, 24, -24, None))),
}


def region(array: np.ndarray, box: tuple[int | None, ...]) -> np.ndarray:
    top, bottom, left, right = box
    return array[top:bottom, left:right]


@pytest.fixture(scope="module")
def client(weights_settings: Settings):
    settings = weights_settings.model_copy(update={"auth": False, "bg_replace_engine": "composite"})
    with TestClient(create_app(settings, workers=1)) as test_client:
        yield test_client


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_the_subject_is_kept_over_the_reference(client, name):
    photo = getattr(data, name)()
    reference = data.coffee()
    body = {"image": b64(photo), "ref_image": b64(reference), "prompt": "a coffee table", "samples": 2, "seed": 9, "base64": True}
    response = client.post("/v1/bg-replace", json={**body, "output_format": "png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["metrics"]["engine"] == "composite"
    assert answer["metrics"]["seed"] == 9 and answer["metrics"]["seeds"] == [9, 10]
    assert len(answer["images"]) == 2 and answer["image"] == answer["images"][0]
    outputs = [decode(base64.b64decode(encoded)) for encoded in answer["images"]]
    subject, corners = SUBJECTS[name]
    for seed, output in zip((9, 10), outputs, strict=True):
        assert output.shape == photo.shape
        # The subject is the photo's, its colours moved a little toward the new background.
        kept, original = region(output, subject).astype(np.float32), region(photo, subject).astype(np.float32)
        assert np.abs(kept - original).mean() < 20
        assert np.corrcoef(kept.ravel(), original.ravel())[0, 1] > 0.95
        # The background is the reference, cover-cropped as this sample's seed chose.
        expected = cover_crop(reference, photo.shape[0], photo.shape[1], np.random.default_rng(seed))
        for corner in corners:
            assert np.abs(region(output, corner).astype(int) - region(expected, corner)).mean() < 3
            assert np.abs(region(output, corner).astype(int) - region(photo, corner)).mean() > 20
    assert np.abs(outputs[0].astype(int) - outputs[1]).mean() > 5


def test_a_cut_out_is_taken_by_its_own_alpha():
    class MustNotBeAsked:
        def predict(self, image):
            raise AssertionError("a cut-out's alpha is the subject: U²-Net is not asked")

    cut_out = np.zeros((40, 50, 4), np.uint8)
    cut_out[10:30, 10:40] = (200, 100, 50, 255)
    mask, is_cut_out = subject_mask(cut_out, MustNotBeAsked())
    assert is_cut_out and np.array_equal(mask, cut_out[..., 3])
    opaque = np.full((40, 50, 4), 255, np.uint8)

    class Answers:
        def predict(self, image):
            return np.full(image.shape[:2], 7, np.uint8)

    mask, is_cut_out = subject_mask(opaque, Answers())
    assert not is_cut_out and np.all(mask == 7)


def test_an_unknown_scheduler_is_400_naming_the_allowed_ones(client):
    photo = data.astronaut()[::8, ::8]
    response = client.post("/v2/bg-replace", json={"image": b64(photo), "ref_image": b64(photo), "prompt": "x", "scheduler": "Karras"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "scheduler='Karras'" in error and all(name in error for name in SCHEDULERS)


def test_diffusion_asked_for_but_not_pulled_is_503_naming_the_pull(weights_settings: Settings):
    settings = weights_settings.model_copy(update={"auth": False, "bg_replace_engine": "diffusion"})
    photo = data.astronaut()[::8, ::8]
    with TestClient(create_app(settings, workers=1)) as client:
        listing = {entry["slug"]: entry for entry in client.get("/v1/models").json()["models"]}
        assert listing["bg-replace"]["engine"] == "diffusion" and listing["bg-replace"]["weights_installed"] is False
        response = client.post("/v2/bg-replace", json={"image": b64(photo), "ref_image": b64(photo), "prompt": "x"})
    assert response.status_code == 503
    assert "retouch models pull bg-replace" in response.json()["error"]
