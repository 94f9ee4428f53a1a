"""Turns a request's parameters into a model's typed Input, or an InvalidInput that says what to change."""

from __future__ import annotations

import json
from typing import Any

import annotated_types
from pydantic import ValidationError

from retouch.errors import InvalidInput
from retouch.models.base import ModelInput

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
}


def _image_fields(input_class: type[ModelInput]) -> set[str]:
    return {
        name
        for name, field in input_class.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("format") == "image"
    }


def allowed_range(input_class: type[ModelInput], name: str) -> str | None:
    """'0 to 100' for a field declared with ge/le, or None."""
    field = input_class.model_fields.get(name)
    if field is None:
        return None
    low = high = None
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge | annotated_types.Gt):
            low = getattr(constraint, "ge", None) if isinstance(constraint, annotated_types.Ge) else constraint.gt
        if isinstance(constraint, annotated_types.Le | annotated_types.Lt):
            high = getattr(constraint, "le", None) if isinstance(constraint, annotated_types.Le) else constraint.lt
    if low is None and high is None:
        return None
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"{low} to {high}"


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(input_class: type[ModelInput], error: dict[str, Any]) -> str:
    location = error.get("loc") or ()
    name = str(location[0]) if location else "body"
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = ", ".join(input_class.model_fields)
        return f"unknown parameter '{name}' (this model takes: {allowed})"
    if kind == "missing":
        return f"missing required parameter '{name}'"
    span = allowed_range(input_class, name)
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        return f"{name}={_show(value)} is out of range: allowed {span}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{name}={_show(value)} is not allowed: use one of {expected}"
    if name in _image_fields(input_class) and kind in {"string_too_short", "string_pattern_mismatch"}:
        return f"{name} is empty; give an http(s) URL, a base64 string or a data: URI"
    if kind in {"string_too_short", "string_too_long"}:
        return f"{name}={_show(value)} {error['msg'].lower()}"
    for word, wanted in _TYPE_WORDS.items():
        if kind.startswith(word):
            suffix = f", {span}" if span else ""
            return f"{name}={_show(value)} is not valid: expected {wanted}{suffix}"
    return f"{name}={_show(value)}: {error['msg']}"


def _whole_numbers_as_integers(input_class: type[ModelInput], params: dict[str, Any]) -> dict[str, Any]:
    """2.0 for an integer parameter is 2: JSON Schema's "integer" admits it, and many JSON encoders
    write whole floats so. 2.5 (and true) stay refused."""
    converted = dict(params)
    for name, value in params.items():
        field = input_class.model_fields.get(name)
        if field is not None and field.annotation is int and isinstance(value, float) and value.is_integer():
            converted[name] = int(value)
    return converted


def parse_input(input_class: type[ModelInput], params: Any) -> ModelInput:
    """Validate request parameters; every problem is listed in one InvalidInput message."""
    if not isinstance(params, dict):
        raise InvalidInput(f"the request body must be a JSON object of parameters, not {type(params).__name__}")
    try:
        return input_class.model_validate(_whole_numbers_as_integers(input_class, params))
    except ValidationError as exc:
        problems = [_describe(input_class, error) for error in exc.errors(include_url=False)]
        raise InvalidInput("; ".join(problems)) from None


def coerce_form_fields(input_class: type[ModelInput], fields: dict[str, str]) -> dict[str, Any]:
    """Multipart fields arrive as text: type the non-string ones as JSON would (`true`, `10`, `0.5`)."""
    typed: dict[str, Any] = {}
    for name, text in fields.items():
        field = input_class.model_fields.get(name)
        if field is not None and field.annotation is str:
            typed[name] = text
            continue
        try:
            typed[name] = json.loads(text)
        except ValueError:
            typed[name] = text
    return typed
