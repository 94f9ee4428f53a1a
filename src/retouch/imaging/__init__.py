"""Images in and out: fetching URLs safely, decoding, encoding and mask operations."""

from retouch.imaging.decode import ALLOWED_FORMATS, decode_image, decode_mask, fit_mask_to_image, read_image_source
from retouch.imaging.encode import CONTENT_TYPES, OUTPUT_FORMATS, choose_format, encode_image, to_base64
from retouch.imaging.fetch import FetchPolicy, Resolver, fetch_url, system_resolver
from retouch.imaging.masks import (
    binarize,
    coverage,
    draw_boxes,
    draw_overlay,
    grow_mask,
    invert_mask,
    is_empty,
)

__all__ = [
    "ALLOWED_FORMATS",
    "CONTENT_TYPES",
    "OUTPUT_FORMATS",
    "FetchPolicy",
    "Resolver",
    "binarize",
    "choose_format",
    "coverage",
    "decode_image",
    "decode_mask",
    "draw_boxes",
    "draw_overlay",
    "encode_image",
    "fetch_url",
    "fit_mask_to_image",
    "grow_mask",
    "invert_mask",
    "is_empty",
    "read_image_source",
    "system_resolver",
    "to_base64",
]
