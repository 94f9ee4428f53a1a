"""From an HTTP request to a model's typed Input and decoded images. Engines never see any of this."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from retouch.config import Settings
from retouch.errors import ImageError, InvalidInput
from retouch.imaging.decode import decode_sources, read_image_source
from retouch.imaging.fetch import FetchPolicy
from retouch.models.base import Model, ModelInput
from retouch.models.validation import coerce_form_fields, parse_input

_UPLOADED = "uploaded file"
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def read_parameters(request: Request, model: Model) -> tuple[Any, dict[str, bytes]]:
    """The parameters (JSON body, or form fields typed as JSON would) and any file parts by name."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(_FORM_TYPES):
        # Fields may hold a base64 image, so they may be as large as the body limit allows.
        settings = request.app.state.service.settings
        form = await request.form(max_files=len(model.all_image_fields()) + 1, max_fields=64, max_part_size=settings.max_body_bytes)
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
    except RecursionError:
        raise InvalidInput("the request body is nested too deeply; send a flat JSON object of parameters") from None


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


def read_sources(model: Model, params: ModelInput, uploads: dict[str, bytes], settings: Settings) -> dict[str, bytes]:
    """The encoded bytes of every image parameter: a file part, or fetched/decoded from the value. Runs in a thread."""
    policy = FetchPolicy.from_settings(settings)
    sources: dict[str, bytes] = {}
    for field in model.all_image_fields():
        if field in uploads:
            if not uploads[field]:
                raise ImageError(f"{field}: the uploaded file is empty")
            sources[field] = uploads[field]
        else:
            sources[field] = read_image_source(getattr(params, field), field=field, policy=policy)
    return sources


def check_sources(model: Model, params: ModelInput, sources: dict[str, bytes], settings: Settings) -> None:
    """Decode once at the door, so that a bad image is a 400 now rather than a FAILED job later."""
    images = decode_sources(sources, image_fields=model.image_fields, mask_fields=model.mask_fields, max_pixels=settings.max_image_pixels)
    model.check_images(params, images)
