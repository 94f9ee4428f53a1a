"""U²-Net on the real weights: plausible masks on scikit-image's photos, and agreement with rembg."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data

from retouch.config import Settings
from retouch.engines import U2NetEngine
from retouch.weights import verify

VARIANTS = ("u2net", "u2netp")
PHOTOS = ("chelsea", "coffee", "astronaut")

# Boxes (top, bottom, left, right) inside each subject, chosen by looking at the photos:
# chelsea (300 x 451): the cat's face from the ears' base to below the nose;
# coffee (400 x 600): the cup and the saucer around it;
# astronaut (512 x 512): the orange suit's torso, and her face and hair.
SUBJECT_BOXES = {
    "chelsea": [(30, 230, 120, 320)],
    "coffee": [(60, 330, 120, 430)],
    "astronaut": [(250, 450, 100, 300), (40, 150, 170, 280)],
}

# Corners that are background. Left out: chelsea's bottom left is the cat's chest fur, and
# astronaut's bottom corners are her suit and the helmet she holds.
BACKGROUND_CORNERS = {
    "chelsea": ("top left", "top right", "bottom right"),
    "coffee": ("top left", "top right", "bottom left", "bottom right"),
    "astronaut": ("top left", "top right"),
}
CORNER = 24

# Mean absolute difference from rembg's mask, in grey levels, and the share of pixels on
# opposite sides of 127. Measured: u2net 3.4 / 0.7 / 2.6 and 1.0% / 0.05% / 0.15% (chelsea,
# coffee, astronaut); u2netp 6.8 / 0.7 / 1.4 and 4.7% / 0.05% / 0.5%. Nearly all of it comes
# from the 320 x 320 input being resampled by OpenCV here and by Pillow's LANCZOS in rembg;
# the bounds leave about twice that as margin.
REMBG_MEAN_DIFFERENCE = {"u2net": 7.0, "u2netp": 14.0}
REMBG_DISAGREEMENT = {"u2net": 0.025, "u2netp": 0.10}

# The md5 rembg's pooch download checks; the installed files must be byte-identical to rembg's.
REMBG_MD5 = {"u2net": "60024c5c889badc19c04ad937298a77b", "u2netp": "8e83ca70e441ab06c318d82300c84806"}


@pytest.fixture(scope="module")
def engines(weights_settings: Settings) -> dict[str, U2NetEngine]:
    built = {}
    for variant in VARIANTS:
        engine = U2NetEngine.from_settings(weights_settings, variant)
        engine.setup("cpu")
        built[variant] = engine
    return built


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(data, name)() for name in PHOTOS}


@pytest.fixture(scope="module")
def masks(engines: dict[str, U2NetEngine], photos: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    return {(variant, name): engines[variant].predict(image) for variant in VARIANTS for name, image in photos.items()}


def _corners(mask: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "top left": mask[:CORNER, :CORNER],
        "top right": mask[:CORNER, -CORNER:],
        "bottom left": mask[-CORNER:, :CORNER],
        "bottom right": mask[-CORNER:, -CORNER:],
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_installed_weights_are_intact(weights_settings: Settings, installed_weights_dir: Path, variant: str) -> None:
    assert verify(variant, weights_settings), f"{variant}.onnx fails its sha256 check; run `retouch models install --force {variant}`"
    with (installed_weights_dir / f"{variant}.onnx").open("rb") as stream:
        md5 = hashlib.file_digest(stream, "md5").hexdigest()
    assert md5 == REMBG_MD5[variant]


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_mask_is_plausible(masks: dict[tuple[str, str], np.ndarray], photos: dict[str, np.ndarray], variant: str, name: str) -> None:
    mask = masks[(variant, name)]
    assert mask.dtype == np.uint8
    assert mask.shape == photos[name].shape[:2]
    assert mask.min() <= 5 and mask.max() >= 250
    for top, bottom, left, right in SUBJECT_BOXES[name]:
        selected = (mask[top:bottom, left:right] > 127).mean()
        assert selected >= 0.9, f"{variant} on {name}: only {selected:.1%} of the subject box is selected"
    corners = _corners(mask)
    for corner in BACKGROUND_CORNERS[name]:
        level = corners[corner].mean()
        assert level < 32, f"{variant} on {name}: the {corner} corner has mean {level:.1f}, expected background"


def test_rgba_gives_the_same_mask(engines: dict[str, U2NetEngine], photos: dict[str, np.ndarray], masks: dict[tuple[str, str], np.ndarray]) -> None:
    image = photos["coffee"]
    rgba = np.dstack([image, np.full(image.shape[:2], 7, dtype=np.uint8)])
    np.testing.assert_array_equal(engines["u2netp"].predict(rgba), masks[("u2netp", "coffee")])


def test_predict_from_several_threads(engines: dict[str, U2NetEngine], photos: dict[str, np.ndarray], masks: dict[tuple[str, str], np.ndarray]) -> None:
    results: dict[str, np.ndarray] = {}

    def work(name: str) -> None:
        results[name] = engines["u2netp"].predict(photos[name])

    threads = [threading.Thread(target=work, args=(name,)) for name in PHOTOS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in PHOTOS:
        np.testing.assert_array_equal(results[name], masks[("u2netp", name)])


@pytest.fixture(scope="module")
def rembg_sessions(installed_weights_dir: Path) -> Iterator[dict[str, Any]]:
    """rembg's own sessions on the installed files; a download attempt fails the test."""
    import rembg
    import pooch

    def refuse_download(
        url: str, known_hash: str | None, fname: str | None = None, path: str | None = None, progressbar: bool = False
    ) -> str:
        raise AssertionError(f"rembg tried to download {url} instead of using {installed_weights_dir}")

    with pytest.MonkeyPatch.context() as patch:
        # rembg looks for <U2NET_HOME>/<name>.onnx before downloading, without checking its md5.
        patch.setenv("U2NET_HOME", str(installed_weights_dir))
        patch.setattr(pooch, "retrieve", refuse_download)
        yield {variant: rembg.new_session(variant, providers=["CPUExecutionProvider"]) for variant in VARIANTS}


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_mask_agrees_with_rembg(
    rembg_sessions: dict[str, Any],
    masks: dict[tuple[str, str], np.ndarray],
    photos: dict[str, np.ndarray],
    variant: str,
    name: str,
) -> None:
    session = rembg_sessions[variant]
    (reference,) = session.predict(Image.fromarray(photos[name]))
    reference = np.asarray(reference, dtype=np.int16)
    difference = np.abs(masks[(variant, name)].astype(np.int16) - reference)
    disagreement = ((masks[(variant, name)] > 127) != (reference > 127)).mean()
    assert difference.mean() < REMBG_MEAN_DIFFERENCE[variant], f"{variant} on {name}: mean difference {difference.mean():.2f}"
    assert disagreement < REMBG_DISAGREEMENT[variant], f"{variant} on {name}: {disagreement:.2%} of pixels disagree"
