"""The one intake: from a caller's raw parameters and uploads to a checked Input and decoded images.

Every refusal happens here, before a job exists, so that a bad request is a 400 (or a 501 or 503)
at once rather than a FAILED job later: unknown or mistyped parameters, an engine without its
weights, a prompt the engine cannot read, an image URL refused or unreachable, an image that cannot
be decoded or is over the pixel limit, a mask that does not fit. The HTTP routes, the CLI and any
in-process caller all come through `prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from retouch.config import Settings
from retouch.errors import ImageError, InvalidInput, RetouchError
from retouch.imaging.arrays import array_from_bytes, array_to_bytes
from retouch.imaging.decode import decode_sources, is_fetched_url, read_image_source
from retouch.imaging.fetch import FetchLimiter, FetchPolicy, fetch_url_async
from retouch.models.base import Model, ModelInput
from retouch.models.validation import parse_input

UPLOADED = "uploaded file"
_INPUT_PREFIX = "input-"
_ARRAY_SUFFIX = ".npy"


@dataclass
class Prepared:
    """A request that passed every check: its typed Input and its images, decoded once."""

    model: Model
    inputs: ModelInput
    images: dict[str, np.ndarray]

    def stored_params(self) -> dict[str, Any]:
        """The parameters a job keeps: everything but the images, which are stored as blobs."""
        return self.inputs.model_dump(mode="json", exclude=set(self.model.all_image_fields()))


def validate_parameters(model: Model, params: Any, uploads: dict[str, bytes]) -> ModelInput:
    image_fields = model.all_image_fields()
    if isinstance(params, dict):
        for name in uploads:
            if name not in image_fields:
                raise InvalidInput(f"file part '{name}' is not an image parameter of {model.slug} (its image parameters: {', '.join(image_fields)})")
            if name in params:
                raise InvalidInput(f"'{name}' is given twice: as a file part and as a field")
        params = {**params, **{name: UPLOADED for name in uploads}}
    return parse_input(model.Input, params)


def _uploaded(field: str, uploads: dict[str, bytes]) -> bytes | None:
    """The file part given for `field`, if one was."""
    if field not in uploads:
        return None
    if not uploads[field]:
        raise ImageError(f"{field}: the uploaded file is empty")
    return uploads[field]


def read_sources(model: Model, inputs: ModelInput, uploads: dict[str, bytes], settings: Settings) -> dict[str, bytes]:
    """The encoded bytes of every image parameter: a file part, or fetched/decoded from the value."""
    policy = FetchPolicy.from_settings(settings)
    sources: dict[str, bytes] = {}
    for field in model.all_image_fields():
        uploaded = _uploaded(field, uploads)
        sources[field] = uploaded if uploaded is not None else read_image_source(getattr(inputs, field), field=field, policy=policy)
    return sources


async def read_sources_async(
    model: Model, inputs: ModelInput, uploads: dict[str, bytes], settings: Settings, limiter: FetchLimiter
) -> dict[str, bytes]:
    """read_sources for the server: URLs are fetched without holding a thread (a slow image server
    costs a socket, not a worker of the request pool), within the limiter's slots; base64 and data:
    URIs are decoded in a thread."""
    policy = FetchPolicy.from_settings(settings)
    sources: dict[str, bytes] = {}
    for field in model.all_image_fields():
        uploaded = _uploaded(field, uploads)
        if uploaded is not None:
            sources[field] = uploaded
            continue
        value = getattr(inputs, field)
        if is_fetched_url(value):
            sources[field] = await fetch_url_async(value.strip(), field=field, policy=policy, limiter=limiter)
        else:
            sources[field] = await anyio.to_thread.run_sync(lambda value=value, field=field: read_image_source(value, field=field, policy=policy))
    return sources


def check_images(model: Model, inputs: ModelInput, sources: dict[str, bytes], settings: Settings) -> Prepared:
    """Decode once and let the model check the images (CPU: run it in a thread)."""
    images = decode(model, sources, settings)
    model.check_images(inputs, images)
    return Prepared(model=model, inputs=inputs, images=images)


def check_request(model: Model, raw_params: Any, uploads: dict[str, bytes], settings: Settings) -> ModelInput:
    """The checks that need no image: parameters, the engine's weights, the prompt."""
    inputs = validate_parameters(model, raw_params, uploads)
    model.check_ready(settings)
    model.check_params(inputs, settings)
    return inputs


def decode(model: Model, sources: dict[str, bytes], settings: Settings) -> dict[str, np.ndarray]:
    return decode_sources(sources, image_fields=model.image_fields, mask_fields=model.mask_fields, max_pixels=settings.max_image_pixels)


def prepare(model: Model, raw_params: Any, uploads: dict[str, bytes], settings: Settings) -> Prepared:
    """Validate, check readiness and the prompt, fetch, decode and check the images. Blocking (fetches URLs)."""
    inputs = check_request(model, raw_params, uploads, settings)
    return check_images(model, inputs, read_sources(model, inputs, uploads, settings), settings)


def input_blob_name(field: str) -> str:
    return f"{_INPUT_PREFIX}{field}{_ARRAY_SUFFIX}"


def encoded_inputs(prepared: Prepared) -> dict[str, bytes]:
    """Blob name to bytes of each decoded image (masks compressed)."""
    return {
        input_blob_name(field): array_to_bytes(array, compress=field in prepared.model.mask_fields)
        for field, array in prepared.images.items()
    }


def load_inputs(model: Model, blobs: dict[str, bytes | None], settings: Settings) -> dict[str, np.ndarray]:
    """The images of a job from its stored blobs. Blobs named without `.npy` were stored by retouch 0.1,
    encoded as sent; they are decoded as that version did."""
    images: dict[str, np.ndarray] = {}
    legacy: dict[str, bytes] = {}
    for name, data in blobs.items():
        field = name[len(_INPUT_PREFIX) :].removesuffix(_ARRAY_SUFFIX)
        if data is None:
            raise RetouchError(f"the input '{field}' of this request was lost before it ran")
        if name.endswith(_ARRAY_SUFFIX):
            images[field] = array_from_bytes(data)
        else:
            legacy[field] = data
    if legacy:
        images.update(decode(model, legacy, settings))
    missing = [field for field in model.all_image_fields() if field not in images]
    if missing:
        raise RetouchError(f"the input '{missing[0]}' of this request was lost before it ran")
    return images
