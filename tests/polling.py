"""Waiting on a request the way a client does: GET its status until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(client: Any, request_id: str, until: Callable[[dict], bool], timeout: float = 20, headers: dict[str, str] | None = None) -> dict:
    """GET /status until `until(body)` holds, or `timeout` passes; the last body either way."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v2/requests/{request_id}/status", headers=headers).json()
        if until(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.02)
