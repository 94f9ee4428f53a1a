"""The answers of the HTTP API as pydantic models: the routes build them, /openapi.json describes them,
and the client and the playground are generated from that description."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StatusWord = Literal["QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELED"]


class Metrics(BaseModel):
    """What a request cost and what its engine found. Engines may add their own keys."""

    model_config = ConfigDict(extra="allow")

    inference_time: float | None = Field(default=None, description="Seconds of model compute (set once COMPLETED).")
    queue_time: float | None = Field(default=None, description="Seconds from acceptance to a worker taking it.")
    total_time: float | None = Field(default=None, description="Seconds from acceptance to its end.")
    engine: str | None = Field(default=None, description="The engine that ran, e.g. u2net, patchmatch, lama.")
    attempts: int | None = Field(
        default=None,
        description="Times a worker started it (more than 1 after a worker died).",
    )
    seed: int | None = Field(default=None, description="The seed used, where the model takes one.")
    model: str | None = Field(
        default=None,
        description="The weight file(s) that ran, e.g. u2net.onnx, or centernet.onnx+u2net.onnx (background-eraser, text-to-mask).",
    )
    detections: list[dict[str, Any]] | None = Field(default=None, description="Boxes, labels and scores (text-to-mask slugs).")


class ErrorBody(BaseModel):
    """Every error answer. `request_id` and the URLs are there when a request exists (504, 422, 503 after acceptance)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="What went wrong and what to change, for a person.")
    request_id: str | None = None
    status: StatusWord | None = None
    status_url: str | None = None
    response_url: str | None = None


class SubmitAnswer(BaseModel):
    request_id: str
    status: StatusWord = Field(description="QUEUED.")
    status_url: str = Field(description="Absolute URL to poll: GET it for the status.")
    response_url: str = Field(description="Absolute URL of the result once COMPLETED.")


class StatusAnswer(BaseModel):
    request_id: str
    status: StatusWord
    progress: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How far it is, for engines that run in steps.",
    )
    metrics: Metrics


class EndedBadly(BaseModel):
    """A FAILED or CANCELED request, served as HTTP 422 on /status and on the result."""

    request_id: str
    status: Literal["FAILED", "CANCELED"]
    error: str
    metrics: Metrics | None = None


class ResultAnswer(BaseModel):
    request_id: str
    status: StatusWord
    output: str | None = Field(description="Absolute URL of the first image, or the image as base64 when base64=true; null until COMPLETED.")
    outputs: list[str] | None = Field(default=None, description="Every image (URL or base64), once COMPLETED.")
    progress: float | None = None
    metrics: Metrics


class SyncBase64Answer(BaseModel):
    """/v1 with base64=true."""

    image: str = Field(description="The first image, base64.")
    images: list[str] = Field(description="Every image, base64.")
    status: Literal["COMPLETED"]
    metrics: Metrics


class CancelAnswer(BaseModel):
    request_id: str
    status: StatusWord = Field(description="CANCELED when it was still queued; PROCESSING while it stops at its next step.")
    cancel_requested: bool


class ModelEntry(BaseModel):
    slug: str
    summary: str
    built: bool = Field(description="False for a slug of the contract whose engine is not in this release (501).")
    engine: str = Field(description="The engine it runs under this server's settings.")
    weights_installed: bool
    live_workers: int = Field(description="Live workers serving this slug now (0: its requests wait).")
    input_schema: dict[str, Any] = Field(description="JSON schema of its parameters.")


class ModelsAnswer(BaseModel):
    models: list[ModelEntry]


class HealthAnswer(BaseModel):
    status: Literal["ok", "ready"]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries with the error body for each code."""
    described = {
        400: "Bad parameters or image (the message names the value and the allowed range).",
        401: "x-api-key missing, unknown or revoked.",
        403: "The API key may not use this model.",
        404: "Unknown model, or unknown or expired request id (or another key's request).",
        406: "The API key has not enough credits left for this request.",
        409: "The request has already ended, or the Idempotency-Key was used for another request.",
        413: "The request body is over the size limit.",
        422: "The request was accepted and then FAILED or was CANCELED.",
        429: "The key is over its rate, the queue is full, or the wait would be too long; Retry-After says when to try again.",
        501: "The engine of this slug is not in this release.",
        503: "Weights missing, no worker, or the queue backend unreachable.",
        504: "A /v1 request still running after the sync timeout: poll its status_url.",
    }
    return {
        code: {
            "model": EndedBadly if code == 422 else ErrorBody,
            "description": described[code],
        }
        for code in codes
    }
