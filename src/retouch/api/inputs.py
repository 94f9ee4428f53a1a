"""From an HTTP request to a model's typed Input and decoded images. Engines never see any of this."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile

from retouch.config import Settings
from retouch.errors import ImageError, InvalidInput
from retouch.imaging.decode import decode_image, decode_mask, fit_mask_to_image, read_image_source
from retouch.imaging.fetch import FetchPolicy
from retouch.models.base import Model, ModelInput
from retouch.models.validation import coerce_form_fields, parse_input

_UPLOADED = "uploaded file"
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def read_parameters(request: Request, model: Model) -> tuple[Any, dict[str, bytes]]:
    """The parameters (JSON body, or form fields typed as JSON would) and any file parts by name."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(_FORM_TYPES):
        form = await request.form(max_files=len(model.all_image_fields()) + 1, max_fields=64)
        fields: dict[str, str] = {}
        uploads: dict[str, bytes] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads[name] = await value.read()
            else:
                fields[name] = value
        await form.close()
        return coerce_form_fields(model.Input, fields), uploads
    body = await request.body()
    if not body.strip():
        raise InvalidInput("the request body is empty; send a JSON object of parameters")
    try:
        return json.loads(body), {}
    except ValueError as exc:
        raise InvalidInput(f"the request body is not valid JSON ({exc}); send a JSON object of parameters") from None


def validate_parameters(model: Model, params: Any, uploads: dict[str, bytes]) -> ModelInput:
    image_fields = model.all_image_fields()
    if isinstance(params, dict):
        for name in uploads:
            if name not in image_fields:
                raise InvalidInput(f"file part '{name}' is not an image parameter of {model.slug} (its image parameters: {', '.join(image_fields)})")
            if name in params:
                raise InvalidInput(f"'{name}' is given twice: as a file part and as a field")
        params = {**params, **{name: _UPLOADED for name in uploads}}
    return parse_input(model.Input, params)


def decode_inputs(model: Model, params: ModelInput, uploads: dict[str, bytes], settings: Settings) -> dict[str, np.ndarray]:
    """Fetch or decode every image parameter; masks are fitted to `image`. Runs in a worker thread."""
    policy = FetchPolicy.from_settings(settings)

    def source(field: str) -> bytes:
        if field in uploads:
            if not uploads[field]:
                raise ImageError(f"{field}: the uploaded file is empty")
            return uploads[field]
        return read_image_source(getattr(params, field), field=field, policy=policy)

    images: dict[str, np.ndarray] = {}
    for field in model.image_fields:
        images[field] = decode_image(source(field), field=field, max_pixels=settings.max_image_pixels)
    for field in model.mask_fields:
        mask = decode_mask(source(field), field=field, max_pixels=settings.max_image_pixels)
        images[field] = fit_mask_to_image(mask, images["image"].shape, field=field)
    return images
