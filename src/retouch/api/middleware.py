"""Plain ASGI middleware: a request id on every response, one log line and the metrics of each request,
the body-size limit, and the last-resort 500."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retouch.errors import PayloadTooLarge, RequestTimeout

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("retouch.requests")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "retouch_http_requests_total",
            "HTTP requests answered, by route, slug and status code.",
            ["route", "slug", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "retouch_http_request_duration_seconds",
            "Seconds from a request's arrival to its answer, by route and slug.",
            ["route", "slug"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60),
            registry=registry,
        )


def route_of(method: str, path: str) -> str:
    """A bounded name for the kind of request, for metrics: never the path itself (ids, unknown slugs)."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] in ("v1", "v2") and method == "POST":
        return parts[0]
    if parts[:2] == ["v2", "requests"] and len(parts) >= 3:
        if len(parts) == 3:
            return "cancel" if method == "DELETE" else "result"
        return {"status": "status", "output": "output"}.get(parts[3], "other")
    if path in ("/v1/models", "/healthz", "/readyz", "/metrics"):
        return path.rsplit("/", 1)[-1]
    return "other"


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Gives each request an id (`scope["state"]["request_id"]`, also the job id of a submission), sets
    `x-request-id` on its response, logs one line for it (id, method, path, slug, status, milliseconds)
    and counts it, and turns an unhandled exception into a JSON 500 that names the id (logged with
    its traceback; never a stack trace in the body). The routes name the slug in `scope["state"]["slug"]`."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = False
        status_code = 500
        arrived = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status_code
            if message["type"] == "http.response.start":
                started = True
                status_code = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if state.get("api_key") is not None:
                    remaining = state.get("remaining_credits")
                    headers.append(
                        (
                            b"x-remaining-credits",
                            b"unlimited" if remaining is None else f"{remaining:.6f}".rstrip("0").rstrip(".").encode(),
                        )
                    )
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "internal error in request %s %s (request id %s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if started:
                raise
            body = json.dumps(
                {
                    "error": f"internal server error (request id {request_id})",
                    "request_id": request_id,
                }
            ).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            self._record(scope, request_id, status_code, time.perf_counter() - arrived)

    def _record(self, scope: Scope, request_id: str, status_code: int, seconds: float) -> None:
        method, path = scope.get("method", ""), scope.get("path", "")
        slug = scope.get("state", {}).get("slug", "")
        route = route_of(method, path)
        if self.metrics is not None:
            self.metrics.requests.labels(route, slug, str(status_code)).inc()
            self.metrics.duration.labels(route, slug).observe(seconds)
        # Health probes and scrapes arrive every few seconds: only their failures are worth a line.
        if route in ("healthz", "readyz", "metrics") and status_code < 400:
            return
        request_logger.info(
            "%s %s %s %s %d %.1f ms",
            request_id,
            method,
            path,
            slug or "-",
            status_code,
            seconds * 1000,
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "slug": slug or None,
                "status": status_code,
                "duration_ms": round(seconds * 1000, 1),
            },
        )


class BodyGuardMiddleware:
    """Answers 413 for a body over `max_bytes`: at once when Content-Length says so, else as soon as the
    streamed body passes the limit; and 408 for a body that stalls more than `stall_timeout` seconds
    between two reads (PayloadTooLarge and RequestTimeout are raised from `receive`, mapped by the
    error handler)."""

    def __init__(self, app: ASGIApp, max_bytes: int, stall_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.stall_timeout = stall_timeout

    def _message(self) -> str:
        return f"the request body is over the limit of {self.max_bytes} bytes; send a smaller image or an image URL"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    body = json.dumps({"error": self._message()}).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        received = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                # After the body, receive only waits for a disconnect: no limit on that.
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.stall_timeout)
            except TimeoutError:
                raise RequestTimeout(f"the request body stalled: nothing arrived for {self.stall_timeout:g} s (after {received} bytes)") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self._message())
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)
