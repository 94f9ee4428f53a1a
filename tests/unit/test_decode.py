"""Decoding request values to pixels: sources, formats, modes, limits and masks."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image, ImageFile

from retouch.errors import ImageError, URLRefused
from retouch.imaging.decode import ALLOWED_FORMATS, decode_image, decode_mask, fit_mask_to_image, read_image_source
from retouch.imaging.fetch import FetchPolicy

MAX_PIXELS = 4096 * 4096
POLICY = FetchPolicy()


def encode(picture: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


def quadrants(width: int = 16, height: int = 12) -> np.ndarray:
    """An RGB picture of four flat colours, which every format keeps well."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[: height // 2, : width // 2] = (255, 0, 0)
    pixels[: height // 2, width // 2 :] = (0, 255, 0)
    pixels[height // 2 :, : width // 2] = (0, 0, 255)
    pixels[height // 2 :, width // 2 :] = (255, 255, 255)
    return pixels


def png_bytes(pixels: np.ndarray) -> bytes:
    return encode(Image.fromarray(pixels), "PNG")


def decode(data: bytes) -> np.ndarray:
    return decode_image(data, field="image", max_pixels=MAX_PIXELS)


# Round trips of every accepted format


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF"])
def test_lossless_formats_round_trip_exactly(fmt: str) -> None:
    pixels = quadrants()

    decoded = decode(encode(Image.fromarray(pixels), fmt))

    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_formats_round_trip_closely(fmt: str) -> None:
    pixels = quadrants(32, 32)

    decoded = decode(encode(Image.fromarray(pixels), fmt, quality=95))

    assert decoded.shape == (32, 32, 3)
    # Away from the colour edges the flat colours survive within a few levels.
    for row, column in ((4, 4), (4, 27), (27, 4), (27, 27)):
        difference = np.abs(decoded[row, column].astype(int) - pixels[row, column].astype(int))
        assert difference.max() <= 12, (row, column, decoded[row, column])


def test_allowed_formats_are_the_documented_ones() -> None:
    assert ALLOWED_FORMATS == {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}


def test_animated_gif_gives_its_first_frame() -> None:
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    blue = Image.new("RGB", (8, 8), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 2

    decoded = decode(data)

    assert decoded.shape == (8, 8, 3)
    assert (decoded == (255, 0, 0)).all()


def test_mpo_is_read_as_its_first_jpeg() -> None:
    first = Image.new("RGB", (16, 16), (255, 0, 0))
    second = Image.new("RGB", (16, 16), (0, 0, 255))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == "MPO"

    decoded = decode(data)

    assert decoded.shape == (16, 16, 3)
    assert decoded[8, 8, 0] > 240 and decoded[8, 8, 2] < 15


# EXIF orientation and pixel modes


def test_exif_orientation_6_is_applied() -> None:
    # Stored 40 wide and 20 tall with a white block at the top-left; orientation 6 means "rotate
    # 90 degrees clockwise to display", so it shows 20 wide and 40 tall with the block top-right.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:8, :8] = 255
    picture = Image.fromarray(pixels)
    exif = picture.getexif()
    exif[0x0112] = 6
    data = encode(picture, "JPEG", exif=exif.tobytes(), quality=95)

    decoded = decode(data)

    assert decoded.shape == (40, 20, 3)
    assert decoded[3, 16].min() > 200
    assert decoded[3, 3].max() < 50
    assert decoded[36, 3].max() < 50


def test_palette_with_transparency_gives_rgba() -> None:
    picture = Image.new("P", (4, 2), 0)
    picture.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    picture.putpixel((3, 1), 1)
    data = encode(picture, "PNG", transparency=0)

    decoded = decode(data)

    assert decoded.shape == (2, 4, 4)
    assert decoded[0, 0, 3] == 0
    np.testing.assert_array_equal(decoded[1, 3], [0, 0, 255, 255])


def test_palette_without_transparency_gives_rgb() -> None:
    picture = Image.new("P", (4, 2), 0)
    picture.putpalette([10, 20, 30] + [0] * (255 * 3))

    decoded = decode(encode(picture, "PNG"))

    assert decoded.shape == (2, 4, 3)
    assert (decoded == (10, 20, 30)).all()


def test_grayscale_gives_rgb() -> None:
    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)

    decoded = decode(encode(Image.fromarray(gray, mode="L"), "PNG"))

    assert decoded.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], gray)


def test_cmyk_jpeg_gives_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)

    decoded = decode(data)

    assert decoded.shape == (16, 16, 3)
    red, green, blue = (int(value) for value in decoded[8, 8])
    assert red > 240 and green < 15 and blue < 15


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")

    decoded = decode(data)

    assert decoded.shape == (1, 4, 3)
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])


def test_opaque_rgba_drops_its_alpha() -> None:
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    rgba[..., 1] = 80
    rgba[..., 3] = 255

    decoded = decode(png_bytes(rgba))

    assert decoded.shape == (3, 3, 3)
    assert (decoded[..., 1] == 80).all()


def test_rgba_with_transparency_is_kept() -> None:
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[1, 1, 3] = 0

    decoded = decode(png_bytes(rgba))

    np.testing.assert_array_equal(decoded, rgba)


def test_decoded_arrays_are_writable() -> None:
    decoded = decode(png_bytes(quadrants()))

    decoded[0, 0] = (1, 2, 3)


# Broken and refused data


def test_truncated_jpeg_is_an_image_error() -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG", quality=90)

    with pytest.raises(ImageError, match="image could not be decoded: the JPEG data is truncated or corrupt"):
        decode(data[: len(data) // 2])


def test_random_bytes_are_an_image_error() -> None:
    with pytest.raises(ImageError, match="image is not an image"):
        decode(np.random.default_rng(7).bytes(300))


def test_html_is_not_an_image() -> None:
    page = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>"

    with pytest.raises(ImageError, match="image is not an image") as caught:
        decode(page)

    assert "<!DOCTYPE html>" in caught.value.message
    assert "text" in caught.value.message


def test_empty_bytes_are_an_image_error() -> None:
    with pytest.raises(ImageError, match="image is empty"):
        decode(b"")


@pytest.mark.parametrize(("fmt", "name"), [("ICO", "ICO"), ("PPM", "PPM")])
def test_unsupported_format_is_named(fmt: str, name: str) -> None:
    data = encode(Image.new("RGB", (16, 16), (1, 2, 3)), fmt)

    with pytest.raises(ImageError, match=f"image is in the {name} format, which is not accepted; allowed formats: BMP, GIF, JPEG, PNG, TIFF, WEBP"):
        decode(data)


def png_claiming_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR chunk (and its CRC) is rewritten to claim width x height."""
    data = bytearray(png_bytes(np.zeros((1, 1, 3), dtype=np.uint8)))
    # Signature (8 bytes), IHDR length (4), type (4), then width and height.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("side", [20000, 10000, 4097])
def test_pixel_limit_is_checked_before_any_decoding(monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    oversized = png_claiming_size(side, side)
    small = png_bytes(quadrants())
    load_calls: list[str] = []

    def refuse_to_decode(self: Image.Image) -> None:
        load_calls.append(self.format or "")
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", refuse_to_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)

    # 10000x10000 is over Pillow's own warning threshold and 20000x20000 over its error one;
    # neither may surface (warnings are errors in this suite): the message is retouch's.
    with pytest.raises(ImageError) as caught:
        decode_image(oversized, field="image", max_pixels=MAX_PIXELS)

    assert f"image is {side}x{side} ({side * side} pixels)" in caught.value.message
    assert f"over the limit of {MAX_PIXELS} pixels" in caught.value.message
    assert load_calls == []
    # The patch does catch decoding: a small image reaches load() and fails there.
    with pytest.raises(ImageError, match="could not be decoded"):
        decode_image(small, field="image", max_pixels=MAX_PIXELS)
    assert load_calls == ["PNG"]


def test_image_at_the_pixel_limit_decodes() -> None:
    decoded = decode_image(png_bytes(quadrants(8, 8)), field="image", max_pixels=64)

    assert decoded.shape == (8, 8, 3)


# Request values: base64, data: URIs, URLs


def source(value: str, **policy_options: object) -> bytes:
    return read_image_source(value, field="image", policy=FetchPolicy(**policy_options))  # type: ignore[arg-type]


def test_base64_forms_all_decode() -> None:
    data = png_bytes(np.random.default_rng(5).integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    standard = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode()
    assert standard.endswith("=") and urlsafe != standard
    wrapped = "\n".join(standard[index : index + 76] for index in range(0, len(standard), 76))

    assert source(standard) == data
    assert source(f"  {wrapped}\r\n") == data
    assert source(standard.rstrip("=")) == data
    assert source(urlsafe) == data
    assert source(urlsafe.rstrip("=")) == data
    assert source(f"data:image/png;base64,{standard}") == data
    assert source(f"DATA:image/PNG;BASE64,{wrapped}") == data


def test_empty_value_is_an_image_error() -> None:
    for value in ("", "   \n\t"):
        with pytest.raises(ImageError, match="image is empty; give an http\\(s\\) URL, a base64 string or a data: URI"):
            source(value)


@pytest.mark.parametrize("value", ["not base64 at all!", "abcde", "aGVsbG8*"])
def test_bad_base64_is_an_image_error(value: str) -> None:
    with pytest.raises(ImageError, match="image is not valid base64"):
        source(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("data:text/plain;base64,aGVsbG8=", "of type text/plain"),
        ("data:;base64,aGVsbG8=", "of type text/plain"),
        ("data:image/png,rawbytes", "not base64-encoded"),
        ("data:image/png;base64", "without a comma"),
    ],
)
def test_bad_data_uris_are_image_errors(value: str, expected: str) -> None:
    with pytest.raises(ImageError, match=expected):
        source(value)


@pytest.mark.parametrize("value", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/", "javascript:alert(1)"])
def test_other_url_schemes_are_refused(value: str) -> None:
    with pytest.raises(URLRefused, match="image is a URL with the scheme"):
        source(value)


def test_base64_over_the_limit_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse_to_decode(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("base64 was decoded")

    monkeypatch.setattr(base64, "b64decode", refuse_to_decode)
    just_over = base64.b64encode(bytes(2049)).decode()
    huge = "A" * 10_000_000

    for value in (just_over, f"data:image/png;base64,{just_over}", huge):
        with pytest.raises(ImageError, match="image is larger than the limit of 2048 bytes"):
            source(value, max_bytes=2048)


def test_base64_at_the_limit_is_accepted() -> None:
    data = bytes(range(256)) * 8

    assert source(base64.b64encode(data).decode(), max_bytes=2048) == data


def test_http_url_is_fetched_through_the_guard() -> None:
    data = png_bytes(quadrants())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=data)

    fetched = read_image_source(
        " https://images.example/a.png ",
        field="image",
        policy=POLICY,
        resolver=lambda host, port: ["93.184.216.34"],
        transport=httpx.MockTransport(handler),
    )

    assert fetched == data


def test_http_url_to_a_private_address_is_refused() -> None:
    with pytest.raises(URLRefused):
        read_image_source("http://10.0.0.1/a.png", field="image", policy=POLICY, transport=httpx.MockTransport(lambda request: httpx.Response(200)))


# Masks


def test_decode_mask_of_white_strokes_on_transparent_selects_the_strokes() -> None:
    # Transparent pixels are white with alpha 0: compositing over black must drop them.
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[2, 1:5] = (255, 255, 255, 255)
    rgba[4, 4] = (255, 255, 255, 100)

    mask = decode_mask(png_bytes(rgba), field="mask", max_pixels=MAX_PIXELS)

    expected = np.zeros((6, 6), dtype=np.uint8)
    expected[2, 1:5] = 255
    np.testing.assert_array_equal(mask, expected)


def test_decode_mask_binarizes_luminance_at_128() -> None:
    gray = np.array([[0, 127, 128, 255]], dtype=np.uint8)

    mask = decode_mask(encode(Image.fromarray(gray, mode="L"), "PNG"), field="mask", max_pixels=MAX_PIXELS)

    np.testing.assert_array_equal(mask, [[0, 0, 255, 255]])


def test_fit_mask_of_the_same_size_is_unchanged() -> None:
    mask = np.zeros((4, 6), dtype=np.uint8)

    assert fit_mask_to_image(mask, (4, 6, 3)) is mask


def test_fit_mask_of_the_same_aspect_is_resized_nearest() -> None:
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)

    fitted = fit_mask_to_image(mask, (4, 4, 3))

    expected = np.array([[0, 0, 255, 255], [0, 0, 255, 255], [255, 255, 0, 0], [255, 255, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(fitted, expected)


def test_fit_mask_tolerates_one_pixel_of_rounding() -> None:
    mask = np.zeros((240, 320), dtype=np.uint8)
    mask[:, 160:] = 255

    fitted = fit_mask_to_image(mask, (480, 641, 3))

    assert fitted.shape == (480, 641)
    assert set(np.unique(fitted)) == {0, 255}


def test_fit_mask_of_another_aspect_is_an_image_error() -> None:
    mask = np.zeros((200, 300), dtype=np.uint8)

    with pytest.raises(ImageError, match="mask is 300x200 but image is 640x640: their aspect ratios differ; give a mask of the image's size"):
        fit_mask_to_image(mask, (640, 640, 3))


def test_fit_mask_names_its_field() -> None:
    with pytest.raises(ImageError, match="^mask_image is 10x20 but image is 20x20"):
        fit_mask_to_image(np.zeros((20, 10), dtype=np.uint8), (20, 20, 3), field="mask_image")
