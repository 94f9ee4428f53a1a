"""Encoding pixels: format choice, round trips through Pillow, and channel order."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from retouch.errors import InvalidInput
from retouch.imaging.encode import CONTENT_TYPES, OUTPUT_FORMATS, choose_format, encode_image, to_base64

RGB = np.random.default_rng(1).integers(0, 256, size=(12, 17, 3), dtype=np.uint8)
RGBA = np.random.default_rng(2).integers(0, 256, size=(12, 17, 4), dtype=np.uint8)
MASK = np.where(np.random.default_rng(3).random((12, 17)) > 0.5, 255, 0).astype(np.uint8)


def open_encoded(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def test_choose_format_defaults() -> None:
    assert choose_format(RGB, None) == "jpeg"
    assert choose_format(RGBA, None) == "png"
    assert choose_format(MASK, None) == "png"


def test_choose_format_requested_wins() -> None:
    assert choose_format(RGB, "png") == "png"
    assert choose_format(RGBA, "jpeg") == "jpeg"
    assert choose_format(MASK, "webp") == "webp"
    assert choose_format(RGB, "JPG") == "jpeg"


def test_choose_format_refuses_unknown() -> None:
    with pytest.raises(InvalidInput, match="'gif' is not supported; use one of png, jpeg, webp"):
        choose_format(RGB, "gif")


def test_content_types_cover_every_format() -> None:
    assert set(CONTENT_TYPES) == set(OUTPUT_FORMATS)


@pytest.mark.parametrize(("array", "mode"), [(RGB, "RGB"), (RGBA, "RGBA"), (MASK, "L")], ids=["rgb", "rgba", "mask"])
def test_png_round_trips_exactly(array: np.ndarray, mode: str) -> None:
    picture = open_encoded(encode_image(array, "png"))

    assert picture.format == "PNG"
    assert picture.mode == mode
    np.testing.assert_array_equal(np.asarray(picture), array)


@pytest.mark.parametrize(("array", "mode"), [(RGB, "RGB"), (RGBA, "RGB"), (MASK, "L")], ids=["rgb", "rgba", "mask"])
def test_jpeg_decodes_to_the_same_size(array: np.ndarray, mode: str) -> None:
    picture = open_encoded(encode_image(array, "jpeg"))

    assert picture.format == "JPEG"
    assert picture.mode == mode
    assert picture.size == (17, 12)


@pytest.mark.parametrize(("array", "mode"), [(RGB, "RGB"), (RGBA, "RGBA"), (MASK, "RGB")], ids=["rgb", "rgba", "mask"])
def test_webp_decodes_to_the_same_size(array: np.ndarray, mode: str) -> None:
    # WebP has no grayscale: a mask comes back as RGB with equal channels.
    picture = open_encoded(encode_image(array, "webp"))

    assert picture.format == "WEBP"
    assert picture.mode == mode
    assert picture.size == (17, 12)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_colour_channels_are_not_swapped(fmt: str) -> None:
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255

    pixels = np.asarray(open_encoded(encode_image(red, fmt)).convert("RGB")).astype(int)

    assert pixels[..., 0].min() >= 245
    assert pixels[..., 1:].max() <= 10


def test_webp_keeps_alpha() -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 2] = 255
    rgba[:, :8, 3] = 255

    pixels = np.asarray(open_encoded(encode_image(rgba, "webp")))

    assert pixels[:, :8, 3].min() == 255
    assert pixels[:, 8:, 3].max() == 0
    assert pixels[:, :8, 2].min() >= 245


def test_jpeg_of_rgba_composites_over_white() -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)

    pixels = np.asarray(open_encoded(encode_image(rgba, "jpeg")))

    assert pixels.min() >= 250


def test_encode_refuses_unknown_format_and_bad_arrays() -> None:
    with pytest.raises(ValueError, match="fmt is 'gif'"):
        encode_image(RGB, "gif")
    with pytest.raises(ValueError, match="float32"):
        encode_image(RGB.astype(np.float32), "png")
    with pytest.raises(ValueError, match=r"\(4, 4, 2\)"):
        encode_image(np.zeros((4, 4, 2), dtype=np.uint8), "png")


def test_to_base64() -> None:
    data = bytes(range(256)) * 3

    text = to_base64(data)

    assert "\n" not in text
    assert base64.b64decode(text) == data
