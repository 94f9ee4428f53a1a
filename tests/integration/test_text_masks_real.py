"""automatic-mask-generator and inpaint-mask-maker on the real offline engine (CenterNet + U²-Net),
through the whole service, on photos that scikit-image ships."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from retouch.api.app import create_app
from retouch.config import Settings

# Inside each subject and in the background (top, bottom, left, right), chosen by looking at the photos.
SUBJECTS = {
    ("astronaut", "person"): ((250, 450, 100, 300), (0, 40, 440, 512)),
    ("chelsea", "cat"): ((30, 230, 120, 320), (0, 30, 421, 451)),
    ("coffee", "cup"): ((60, 200, 200, 380), (340, 400, 0, 100)),
}


def encoded(name: str) -> str:
    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def region(array: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = box
    return array[top:bottom, left:right]


@pytest.fixture(scope="module")
def client(weights_settings: Settings):
    settings = weights_settings.model_copy(update={"text_mask_engine": "coco"})
    with TestClient(create_app(settings, workers=1)) as test_client:
        yield test_client


@pytest.mark.parametrize(("photo", "prompt"), sorted(SUBJECTS))
def test_prompt_selects_the_subject(client, photo, prompt):
    subject, background = SUBJECTS[(photo, prompt)]
    response = client.post("/v1/automatic-mask-generator", json={"image": encoded(photo), "prompt": prompt, "base64": True})
    assert response.status_code == 200, response.text
    body = response.json()
    mask = decode(base64.b64decode(body["image"]))
    assert (region(mask, subject) >= 128).mean() > 0.9
    assert (region(mask, background) >= 128).mean() < 0.05
    detections = body["metrics"]["detections"]
    assert [d["label"] for d in detections] == [prompt]
    assert detections[0]["score"] >= 0.2
    assert body["metrics"]["engine"] == "centernet+u2net"
    assert body["metrics"]["model"].startswith("centernet") and body["metrics"]["model"].endswith("+u2net.int8.onnx")


def test_one_mask_over_the_astronaut(client):
    body = client.post("/v1/inpaint-mask-maker", json={"image": encoded("astronaut"), "prompt": "person", "return_mask": True, "base64": True}).json()
    assert len(body["metrics"]["detections"]) == 1
    assert body["metrics"]["detections"][0]["score"] >= 0.5


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coffee"])
def test_sofa_is_nowhere(client, photo):
    response = client.post("/v1/automatic-mask-generator", json={"image": encoded(photo), "prompt": "sofa"})
    assert response.status_code == 200
    assert decode(response.content).max() == 0
    failed = client.post("/v1/automatic-mask-generator", json={"image": encoded(photo), "prompt": "sofa", "stop_on_empty_mask": True})
    assert failed.status_code == 422
    assert failed.json()["error"] == "nothing matching 'sofa' was found"


def test_outputs_of_automatic_mask_generator(client):
    image = data.coffee()
    base = {"image": encoded("coffee"), "prompt": "cup", "grow_mask": 0}
    mask = decode(client.post("/v1/automatic-mask-generator", json=base).content)
    alpha = decode(client.post("/v1/automatic-mask-generator", json={**base, "return_alpha": True}).content)
    assert alpha.shape == (*image.shape[:2], 4) and np.array_equal(alpha[..., 3], mask)
    # The cut-out keeps the photo where the mask is solid and carries nothing where it is clear.
    assert np.array_equal(alpha[mask == 255][:, :3], image[mask == 255])
    assert not alpha[mask == 0].any()
    overlay = decode(client.post("/v1/automatic-mask-generator", json={**base, "return_mask": False, "output_format": "png"}).content)
    assert overlay.shape == image.shape
    assert np.array_equal(overlay[mask == 0], image[mask == 0]) and not np.array_equal(overlay[mask > 0], image[mask > 0])
    inverted = decode(client.post("/v1/automatic-mask-generator", json={**base, "invert_mask": True}).content)
    assert np.array_equal(inverted, 255 - mask)
    grown = decode(client.post("/v1/automatic-mask-generator", json={**base, "grow_mask": 10}).content)
    assert (grown >= 128).sum() > (mask >= 128).sum() and np.all(grown >= mask)


def test_inpaint_mask_maker_draws_boxes_by_default(client):
    image = data.chelsea()
    response = client.post("/v1/inpaint-mask-maker", json={"image": encoded("chelsea"), "prompt": "cat", "output_format": "png"})
    drawn = decode(response.content)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    nothing = client.post("/v1/inpaint-mask-maker", json={"image": encoded("chelsea"), "prompt": "cat", "confidence_thresh": 1.0, "return_mask": True})
    assert decode(nothing.content).max() == 0


def test_unknown_object_word_is_400_listing_the_vocabulary(client):
    response = client.post("/v1/automatic-mask-generator", json={"image": encoded("coffee"), "prompt": "unicorn"})
    assert response.status_code == 400
    assert "teddy bear" in response.json()["error"]
