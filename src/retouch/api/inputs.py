"""From an HTTP request to raw parameters and uploaded files; the job service's intake does the rest."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from retouch.config import Settings
from retouch.errors import InvalidInput
from retouch.models.base import Model
from retouch.models.validation import coerce_form_fields

_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def read_parameters(request: Request, model: Model, settings: Settings) -> tuple[Any, dict[str, bytes]]:
    """The parameters (JSON body, or form fields typed as JSON would) and any file parts by name."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(_FORM_TYPES):
        # Fields may hold a base64 image, so they may be as large as the body limit allows.
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
