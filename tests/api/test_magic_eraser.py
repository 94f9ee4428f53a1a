"""magic-eraser through the service: engine choice and metrics.engine, masks, seeds, the whole-mask refusal."""

from __future__ import annotations

import base64

import numpy as np
from images import b64, decode

from retouch.config import Settings
from retouch.models.magic_eraser import MODEL


def stripes(height: int = 48, width: int = 64) -> np.ndarray:
    columns = np.arange(width)
    row = np.where((columns // 4) % 2 == 0, 200, 40).astype(np.uint8)
    return np.repeat(np.repeat(row[np.newaxis, :, np.newaxis], height, axis=0), 3, axis=2)


def hole(height: int = 48, width: int = 64) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[16:28, 20:36] = 255
    return mask


def test_patchmatch_fills_only_the_hole_and_reports_itself(client):
    image, mask = stripes(), hole()
    response = client.post(
        "/v1/magic-eraser",
        json={"image": b64(image), "mask": b64(mask), "grow_mask": 0, "seed": 5, "base64": True, "output_format": "png"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    filled = decode(base64.b64decode(body["image"]))
    assert np.array_equal(filled[mask == 0], image[mask == 0])
    assert body["metrics"]["engine"] == "patchmatch" and body["metrics"]["seed"] == 5
    models = {entry["slug"]: entry for entry in client.get("/v1/models").json()["models"]}
    assert models["magic-eraser"]["engine"] == "patchmatch" and models["magic-eraser"]["built"] is True


def test_same_seed_same_fill(client):
    payload = {"image": b64(stripes()), "mask": b64(hole()), "seed": 11, "output_format": "png"}
    first = client.post("/v1/magic-eraser", json=payload).content
    assert client.post("/v1/magic-eraser", json=payload).content == first


def test_random_seed_is_reported(client):
    body = client.post("/v1/magic-eraser", json={"image": b64(stripes()), "mask": b64(hole()), "base64": True}).json()
    assert 0 <= body["metrics"]["seed"] <= 999_999_999_999_999


def test_empty_mask_returns_the_input_unchanged(client):
    image = stripes()
    response = client.post(
        "/v1/magic-eraser", json={"image": b64(image), "mask": b64(np.zeros(image.shape[:2], np.uint8)), "output_format": "png"}
    )
    assert np.array_equal(decode(response.content), image)


def test_whole_image_mask_is_400(client):
    image = stripes()
    full = np.full(image.shape[:2], 255, np.uint8)
    response = client.post("/v1/magic-eraser", json={"image": b64(image), "mask": b64(full)})
    assert response.status_code == 400 and "nothing left to fill from" in response.json()["error"]
    empty_inverted = client.post(
        "/v1/magic-eraser", json={"image": b64(image), "mask": b64(np.zeros(image.shape[:2], np.uint8)), "invert_mask": True}
    )
    assert empty_inverted.status_code == 400


def test_invert_mask_keeps_the_white_part(client):
    image = stripes()
    keep = np.full(image.shape[:2], 255, np.uint8)
    keep[16:28, 20:36] = 0
    response = client.post(
        "/v1/magic-eraser", json={"image": b64(image), "mask": b64(keep), "invert_mask": True, "grow_mask": 0, "output_format": "png"}
    )
    filled = decode(response.content)
    assert np.array_equal(filled[keep == 255], image[keep == 255])


def test_engine_choice(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path, weights_dir=tmp_path / "weights")
    assert MODEL.engine_name(settings) == "patchmatch"
    assert MODEL.engine_name(settings.model_copy(update={"magic_eraser_engine": "lama"})) == "lama"
    monkeypatch.setattr("retouch.models.magic_eraser.lama_pulled", lambda settings: True)
    assert MODEL.engine_name(settings) == "lama"
    assert MODEL.engine_name(settings.model_copy(update={"magic_eraser_engine": "patchmatch"})) == "patchmatch"


def test_lama_chosen_but_not_pulled_is_503_naming_the_command(make_client):
    with make_client(magic_eraser_engine="lama") as client:
        response = client.post("/v1/magic-eraser", json={"image": b64(stripes()), "mask": b64(hole())})
    assert response.status_code == 503
    assert "retouch models pull lama" in response.json()["error"]


def test_lama_runs_when_pulled(make_client, tmp_path):
    """A tiny LaMa-layout model put in place by hand (`--trust-local`): auto picks LaMa and reports it."""
    from tiny_models import tiny_lama

    from retouch.weights import hub
    from retouch.weights.store import weight_path

    settings = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights")
    folder = weight_path("lama", settings)
    folder.mkdir(parents=True)
    tiny_lama(folder / "lama_fp32.onnx", single_input=False, size=64, output_255=True)
    hub.trust_local("lama", settings)
    image, mask = stripes(), hole()
    with make_client() as client:
        body = client.post(
            "/v1/magic-eraser", json={"image": b64(image), "mask": b64(mask), "grow_mask": 0, "base64": True, "output_format": "png"}
        ).json()
    assert body["metrics"]["engine"] == "lama"
    filled = decode(base64.b64decode(body["image"]))
    assert np.array_equal(filled[mask == 0], image[mask == 0]) and not np.array_equal(filled[mask > 0], image[mask > 0])
