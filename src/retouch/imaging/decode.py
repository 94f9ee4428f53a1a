"""From a request value (URL, base64, data: URI) to bytes, and from bytes to pixels.

Images come out as uint8 RGB (H x W x 3) or RGBA (H x W x 4), masks as uint8 H x W with 0/255.
The pixel limit is checked on the header before any pixel is decoded, so a decompression bomb
costs a header parse. Only the parsers of the accepted formats ever see the bytes: Pillow's other
plugins (dozens of rarely used formats) are consulted by their magic-number check alone, to name
a refused format in the error message.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.parse

import cv2
import httpx
import numpy as np
from PIL import Image, ImageFile, ImageOps

from retouch.errors import ImageError, URLRefused
from retouch.imaging.fetch import FetchPolicy, Resolver, fetch_url, shorten_url, system_resolver
from retouch.imaging.masks import binarize

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

# The order the accepted parsers are tried in: cheap, exact magic numbers first. The JPEG parser
# also opens MPO (multi-picture JPEG from phones), whose first picture is an ordinary JPEG.
_OPEN_ORDER = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_FORMAT_ALIASES = {"MPO": "JPEG"}
_ALLOWED_LIST = ", ".join(sorted(ALLOWED_FORMATS))
_SOURCE_HINT = "give an http(s) URL, a base64 string or a data: URI"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def is_fetched_url(value: str) -> bool:
    """Whether `value` is an http(s) URL, fetched over the network (everything else is decoded in place)."""
    match = _SCHEME.match(value.strip())
    return match is not None and match.group()[:-1].lower() in ("http", "https")


def read_image_source(
    value: str,
    *,
    field: str,
    policy: FetchPolicy,
    resolver: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """The encoded image bytes that value stands for: an http(s) URL, raw base64, or a data:image/...;base64, URI.

    Other URL schemes (ftp:, file:, gopher: ...) raise URLRefused; they are never read as base64.
    Base64 may contain whitespace, lack its padding and use the URL-safe alphabet. Its length
    is checked against policy.max_bytes before anything is decoded.
    """
    text = value.strip()
    if not text:
        raise ImageError(f"{field} is empty; {_SOURCE_HINT}")
    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        return _decode_base64(text, field=field, max_bytes=policy.max_bytes)
    scheme = scheme_match.group()[:-1].lower()
    if scheme in ("http", "https"):
        return fetch_url(text, field=field, policy=policy, resolver=resolver, transport=transport)
    if scheme == "data":
        return _decode_data_uri(text, field=field, max_bytes=policy.max_bytes)
    raise URLRefused(f"{field} is a URL with the scheme '{shorten_url(scheme)}', which is not fetched; {_SOURCE_HINT}")


def _decode_data_uri(text: str, *, field: str, max_bytes: int) -> bytes:
    header, comma, payload = text[len("data:") :].partition(",")
    if not comma:
        raise ImageError(f"{field} is a data: URI without a comma; the form is data:image/png;base64,<base64 data>")
    parameters = [part.strip().lower() for part in header.split(";")]
    media_type = parameters[0]
    if not media_type.startswith("image/"):
        shown = shorten_url(media_type) if media_type else "text/plain (none given)"
        raise ImageError(f"{field} is a data: URI of type {shown}; give an image type, e.g. data:image/png;base64,<base64 data>")
    if "base64" not in parameters[1:]:
        raise ImageError(f"{field} is a data: URI that is not base64-encoded; give data:{shorten_url(media_type)};base64,<base64 data>")
    # Some clients percent-encode '+', '/' and '=' in data: URIs.
    if "%" in payload:
        payload = urllib.parse.unquote(payload)
    return _decode_base64(payload, field=field, max_bytes=max_bytes)


def _decode_base64(text: str, *, field: str, max_bytes: int) -> bytes:
    too_large = f"{field} is larger than the limit of {max_bytes} bytes"
    encoded_limit = 4 * ((max_bytes + 2) // 3)
    # Whitespace (line breaks every 76 characters) makes the text longer than its data; twice
    # the encoded limit leaves room for any sane amount while refusing huge strings unread.
    if len(text) > 2 * encoded_limit + 1024:
        raise ImageError(f"{too_large} (its base64 text has {len(text)} characters)")
    compact = "".join(text.split()).rstrip("=")
    if len(compact) * 3 // 4 > max_bytes:
        raise ImageError(f"{too_large} (its base64 holds {len(compact) * 3 // 4} bytes)")
    if not compact:
        raise ImageError(f"{field} is empty; {_SOURCE_HINT}")
    if len(compact) % 4 == 1:
        raise ImageError(f"{field} is not valid base64: its length is impossible for base64 (one character too many or too few); {_SOURCE_HINT}")
    standard = compact.translate(_URLSAFE_TO_STANDARD) + "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        bad = next((char for char in standard if not (char.isascii() and (char.isalnum() or char in "+/="))), None)
        found = f" (it contains {bad!r})" if bad is not None else ""
        raise ImageError(f"{field} is not valid base64{found}; {_SOURCE_HINT}") from None


def decode_image(data: bytes, *, field: str, max_pixels: int) -> np.ndarray:
    """Pixels of an encoded image: uint8 RGB (H, W, 3), or RGBA (H, W, 4) when it has real transparency.

    Accepts ALLOWED_FORMATS (and MPO as JPEG); animated images give their first frame. The pixel
    limit is checked on the header, before decoding. EXIF orientation is applied after that check
    (a rotation keeps the pixel count). 16-bit and float pixels are scaled to 8 bits; an alpha
    channel that is fully opaque is dropped. Every failure is an ImageError naming field.
    """
    picture = _open_header(data, field=field)
    try:
        shown_format = _FORMAT_ALIASES.get(picture.format or "", picture.format)
        width, height = picture.size
        if width * height > max_pixels:
            raise ImageError(
                f"{field} is {width}x{height} ({width * height} pixels), over the limit of {max_pixels} pixels; give a smaller image"
            )
        try:
            picture.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{field} is {width}x{height}, too large to decode ({exc})") from None
        except MemoryError:
            raise
        except Exception:
            # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError ...
            raise ImageError(f"{field} could not be decoded: the {shown_format} data is truncated or corrupt") from None
        _apply_exif_orientation(picture)
        return _to_array(picture, field=field)
    finally:
        picture.close()


def decode_mask(data: bytes, *, field: str, max_pixels: int) -> np.ndarray:
    """A mask from an encoded image: uint8 (H, W), 255 where the luminance is 128 or more, else 0.

    Transparency is composited over black first, so a transparent PNG with white strokes selects
    the strokes.
    """
    pixels = decode_image(data, field=field, max_pixels=max_pixels)
    if pixels.shape[2] == 4:
        alpha = pixels[..., 3:4].astype(np.uint16)
        rgb = ((pixels[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    else:
        rgb = pixels
    return binarize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def fit_mask_to_image(mask: np.ndarray, image_shape: tuple[int, ...], *, field: str = "mask") -> np.ndarray:
    """mask at the image's size: unchanged if it already is, resized (nearest neighbour) if only the scale differs.

    The aspect ratios may differ by the rounding of one pixel in either side (a mask saved at
    half the size of a 641-pixel-wide image is 320 or 321 wide). A real aspect difference is an
    ImageError: stretching a mask would move its strokes off what they were drawn on.
    """
    if mask.ndim != 2:
        raise ImageError(f"{field} has shape {mask.shape}; a mask is one channel (height x width)")
    mask_height, mask_width = mask.shape
    image_height, image_width = image_shape[:2]
    if (mask_height, mask_width) == (image_height, image_width):
        return mask
    # mask_w/mask_h == image_w/image_h, cross-multiplied. Off by up to one pixel per side in the
    # smaller picture, the products differ by at most the larger picture's width + height.
    difference = abs(mask_width * image_height - mask_height * image_width)
    tolerance = max(image_width + image_height, mask_width + mask_height)
    if mask_height == 0 or mask_width == 0 or difference > tolerance:
        raise ImageError(
            f"{field} is {mask_width}x{mask_height} but image is {image_width}x{image_height}: "
            f"their aspect ratios differ; give a {field} of the image's size"
        )
    # INTER_NEAREST_EXACT samples at pixel centres; plain INTER_NEAREST shifts by half a pixel.
    return cv2.resize(mask, (image_width, image_height), interpolation=cv2.INTER_NEAREST_EXACT)


def _open_header(data: bytes, *, field: str) -> ImageFile.ImageFile:
    """The image with only its header parsed, opened by the parser of an accepted format."""
    if not data:
        raise ImageError(f"{field} is empty (0 bytes); {_SOURCE_HINT}")
    # Registers every plugin once; later calls return at once.
    Image.init()
    prefix = data[:16]
    failed_format = None
    for name in _OPEN_ORDER:
        if name not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept is not None else True
        # A string verdict means "this format, but its codec is not installed".
        if not verdict or isinstance(verdict, str):
            continue
        try:
            # Calling the parser directly, not Image.open, also skips Pillow's global pixel-count
            # check, which would warn before our own per-call limit is applied.
            return factory(io.BytesIO(data), "")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{field} is too large to decode ({exc})") from None
        except MemoryError:
            raise
        except Exception:
            failed_format = name
    if failed_format is not None:
        raise ImageError(f"{field} could not be decoded: the {failed_format} data is truncated or corrupt")
    other_format = _recognise_other_format(prefix)
    if other_format is not None:
        raise ImageError(f"{field} is in the {other_format} format, which is not accepted; allowed formats: {_ALLOWED_LIST}")
    head = data[:32]
    more = "..." if len(data) > len(head) else ""
    if _looks_like_text(data[:512]):
        raise ImageError(
            f"{field} is not an image (it starts with {head!r}{more}, which is text: an HTML page or an error message?); "
            f"allowed formats: {_ALLOWED_LIST}"
        )
    raise ImageError(f"{field} is not an image in an accepted format (it starts with {head[:16]!r}{more}); allowed formats: {_ALLOWED_LIST}")


def _recognise_other_format(prefix: bytes) -> str | None:
    """The name of a refused format whose magic number prefix has, by its plugin's check alone (no parsing)."""
    for name in Image.ID:
        if name in ALLOWED_FORMATS or name in _FORMAT_ALIASES:
            continue
        accept = Image.OPEN[name][1]
        if accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:
            continue
    return None


def _looks_like_text(sample: bytes) -> bool:
    # Retry with up to three bytes cut off: the sample may end inside a multi-byte character.
    for cut in range(4):
        try:
            text = sample[: len(sample) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    text = text.lstrip("\ufeff")
    return bool(text) and all(char.isprintable() or char in "\t\n\r" for char in text)


def _apply_exif_orientation(picture: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(picture, in_place=True)
    except MemoryError:
        raise
    except Exception:
        # Broken EXIF must not cost the picture: show it as stored, like browsers do.
        return


def _to_array(picture: Image.Image, *, field: str) -> np.ndarray:
    mode = picture.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray = _scale_to_8_bits(np.asarray(picture), mode)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    target = "RGBA" if mode in _ALPHA_MODES or "transparency" in picture.info else "RGB"
    try:
        converted = picture if mode == target else picture.convert(target)
    except (ValueError, OSError):
        raise ImageError(f"{field} has the pixel mode {mode}, which cannot be converted to RGB; save it as RGB or RGBA") from None
    pixels = np.asarray(converted)
    if target == "RGBA" and pixels[..., 3].min() == 255:
        pixels = pixels[..., :3]
    # np.asarray over a Pillow image is read-only; callers may edit their arrays in place.
    if not pixels.flags.writeable or not pixels.flags.c_contiguous:
        pixels = np.array(pixels, order="C")
    return pixels


def _scale_to_8_bits(values: np.ndarray, mode: str) -> np.ndarray:
    """Gray levels of a 16-bit, 32-bit integer or float picture mapped to 0..255.

    16-bit data (and 32-bit integers within 0..65535, how Pillow may hold 16-bit PNG and TIFF)
    scale 65535 to 255 with rounding. Floats within 0..1 scale by 255; floats within 0..255 are
    rounded; anything else is stretched from its minimum to its maximum.
    """
    if mode in _SIXTEEN_BIT_MODES:
        wide = values.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low = float(finite.min()) if finite.size else 0.0
    high = float(finite.max()) if finite.size else 0.0
    if mode == "I" and low >= 0 and high <= 65535:
        wide = finite.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F" and low >= 0 and high <= 1:
        return np.rint(finite * 255).astype(np.uint8)
    if mode == "F" and low >= 0 and high <= 255:
        return np.rint(finite).astype(np.uint8)
    if high == low:
        return np.zeros(finite.shape, dtype=np.uint8)
    return np.rint((finite - low) * (255.0 / (high - low))).astype(np.uint8)


def decode_sources(
    sources: dict[str, bytes], *, image_fields: tuple[str, ...], mask_fields: tuple[str, ...], max_pixels: int
) -> dict[str, np.ndarray]:
    """Decode a request's encoded images: `image_fields` to RGB(A), `mask_fields` to masks fitted to `image`."""
    images = {field: decode_image(sources[field], field=field, max_pixels=max_pixels) for field in image_fields}
    for field in mask_fields:
        mask = decode_mask(sources[field], field=field, max_pixels=max_pixels)
        images[field] = fit_mask_to_image(mask, images["image"].shape, field=field)
    return images
