"""Absolute URLs for results. A relative URL breaks the segmind SDK: it resolves it against /v1."""

from __future__ import annotations

from fastapi import Request

from retouch.config import Settings
from retouch.jobs.endings import output_url

__all__ = ["output_url", "public_base", "request_links"]


def public_base(request: Request, settings: Settings) -> str:
    """The configured public base URL, else scheme and host from X-Forwarded-* (behind a proxy) or the request."""
    if settings.public_base_url is not None:
        return str(settings.public_base_url).rstrip("/")
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    return f"{scheme}://{host.split(',')[0].strip()}"


def request_links(base: str, request_id: str) -> dict[str, str]:
    return {
        "status_url": f"{base}/v2/requests/{request_id}/status",
        "response_url": f"{base}/v2/requests/{request_id}",
    }
