"""Domain errors. Models, engines and the imaging code raise these; one handler maps them to HTTP.

Each message is for a person: it names the bad value and what is allowed instead.
"""

from __future__ import annotations

from typing import Any


class RetouchError(Exception):
    """Base of every error retouch reports to a client."""

    status_code = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidInput(RetouchError):
    """A parameter is missing, unknown, of the wrong type or out of range."""

    status_code = 400


class ImageError(InvalidInput):
    """An image could not be read: bad encoding, unsupported format, too large, refused URL."""


class URLRefused(ImageError):
    """An image URL points somewhere retouch will not fetch from (SSRF guard)."""


class Unauthorized(RetouchError):
    """No API key, or one this server does not know (or has revoked)."""

    status_code = 401


class Forbidden(RetouchError):
    """The API key may not use this model."""

    status_code = 403


class NotEnoughCredits(RetouchError):
    """The API key's credits do not cover the request's price."""

    status_code = 406

    def __init__(self, message: str, remaining: float) -> None:
        super().__init__(message)
        self.remaining = remaining


class NotFound(RetouchError):
    status_code = 404


class MethodNotAllowed(RetouchError):
    status_code = 405

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


class RequestTimeout(RetouchError):
    """The client stopped sending its request body."""

    status_code = 408


class Conflict(RetouchError):
    """The request is in a state that does not allow this (cancelling a request that has ended)."""

    status_code = 409


class PayloadTooLarge(RetouchError):
    status_code = 413


class JobFailed(RetouchError):
    """A request was accepted and then failed while it ran (the job's error is the message)."""

    status_code = 422


class Busy(RetouchError):
    """Not now: the request would wait too long, or too much is already in flight. `Retry-After` says when."""

    status_code = 429

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class QueueFull(Busy):
    pass


class RateLimited(Busy):
    """The API key has sent more requests than its rate allows."""


class EngineNotBuilt(RetouchError):
    """The slug is in the contract but its engine is not part of this release yet."""

    status_code = 501


class ServiceUnavailable(RetouchError):
    """Something the request needs is missing or unreachable: weights, the queue, a worker."""

    status_code = 503


class WeightsMissing(ServiceUnavailable):
    pass


class BackendUnavailable(ServiceUnavailable):
    """The job store, the queue or the events backend did not answer in time."""


class StorageFull(BackendUnavailable):
    """The server's storage (its disk, or Redis's memory) cannot take a write now."""


class NoWorker(ServiceUnavailable):
    """No live worker serves the slug: a request would only wait."""


class Cancelled(Exception):
    """Raised at an engine's step when its request has been cancelled: the job ends CANCELED, not FAILED.

    Not a RetouchError on purpose: nothing maps it to an HTTP answer, and no `except RetouchError`
    in a model may swallow it.
    """


class SyncTimeout(RetouchError):
    """A /v1 request did not finish in time; its job goes on and can be polled."""

    status_code = 504

    def __init__(self, message: str, request_id: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {"request_id": request_id, **(details or {})})
        self.request_id = request_id
