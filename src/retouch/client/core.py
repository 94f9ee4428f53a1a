"""The synchronous client: requests, retries, errors, images in and out."""

from __future__ import annotations

import base64
import io
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Self

import httpx

from retouch.client.results import Result
from retouch.client.typed import SlugMethods

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RETRIED_STATUSES = frozenset({429, 502, 503})
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELED"})


class RetouchError(Exception):
    """The server refused or could not answer: `status` is the HTTP status, `detail` its `error` message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Unauthorized(RetouchError):
    """401: no API key, or one the server does not know."""


class PermissionDenied(RetouchError):
    """403: the key may not use this model."""


class NotEnoughCredits(RetouchError):
    """406: the key's credits do not cover the request."""


class RateLimited(RetouchError):
    """429, still after the retries: over the key's rate, or the queue is full. `retry_after` in seconds, if given."""

    def __init__(self, status: int, detail: str, retry_after: float | None) -> None:
        super().__init__(status, detail)
        self.retry_after = retry_after


class InferenceFailed(RetouchError):
    """The request ran and FAILED (or was CANCELED): `error` is the server's reason."""

    def __init__(self, request_id: str, status: str, error: str) -> None:
        super().__init__(422, error)
        self.request_id = request_id
        self.request_status = status
        self.error = error


class InferenceTimeout(RetouchError):
    """The request had not ended when the wait ran out; it goes on on the server (`Job(client, request_id)`)."""

    def __init__(self, request_id: str, elapsed_s: float) -> None:
        super().__init__(504, f"request {request_id} had not ended after {elapsed_s:.1f} s")
        self.request_id = request_id
        self.elapsed_s = elapsed_s


_BY_STATUS: dict[int, type[RetouchError]] = {401: Unauthorized, 403: PermissionDenied, 406: NotEnoughCredits}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_of(response: httpx.Response) -> RetouchError:
    try:
        detail = str(response.json().get("error") or response.text)
    except ValueError:
        detail = response.text or response.reason_phrase
    if response.status_code == 429:
        return RateLimited(429, detail, _retry_after(response))
    return _BY_STATUS.get(response.status_code, RetouchError)(response.status_code, detail)


def encode_image(value: Any) -> Any:
    """An image parameter as the API takes it: a local path, bytes, a PIL image or a NumPy array become base64;
    an http(s) URL, a data: URI or a base64 string pass as they are. Anything else is returned unchanged."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and not value.startswith(("http://", "https://", "data:")) and _is_file(value)):
        return base64.b64encode(Path(value).expanduser().read_bytes()).decode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if type(value).__module__.startswith("PIL."):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    if type(value).__module__ == "numpy" and hasattr(value, "shape"):
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(value).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    return value


def _is_file(text: str) -> bool:
    # A base64 string can be thousands of characters: no file has such a name.
    if len(text) > 4096 or "\0" in text:
        return False
    try:
        return Path(text).expanduser().is_file()
    except OSError:
        return False


def output_urls(request_id: str, body: dict[str, Any]) -> list[str]:
    """The image URLs of a result body; InferenceFailed if the request FAILED or was CANCELED."""
    if body.get("status") in ("FAILED", "CANCELED"):
        raise InferenceFailed(request_id, body["status"], body.get("error", ""))
    if body.get("status") != "COMPLETED":
        raise RetouchError(409, f"request {request_id} is {body.get('status')}, not COMPLETED yet")
    return list(body.get("outputs") or [body["output"]])


def retry_delay(response: httpx.Response, attempt: int, backoff: float, max_wait: float) -> float:
    """Seconds to wait before retrying: what Retry-After says, else `backoff` doubled per attempt; at most `max_wait`."""
    wait = _retry_after(response)
    return min(max_wait, wait if wait is not None else backoff * 2**attempt)


def sync_result(response: httpx.Response, started: float) -> Result:
    """The Result of a /v1 answer (base64 form); InferenceFailed (422) or InferenceTimeout (504)."""
    if response.status_code == 422:
        answer = _json(response)
        request_id = answer.get("request_id") or response.headers.get("x-request-id", "")
        raise InferenceFailed(request_id, answer.get("status", "FAILED"), str(answer.get("error", "")))
    if response.status_code == 504:
        # The request goes on on the server: Job(client, error.request_id).wait() picks it up.
        raise InferenceTimeout(_json(response).get("request_id", ""), time.monotonic() - started)
    answer = response.json()
    return Result(response.headers.get("x-request-id"), [base64.b64decode(each) for each in answer["images"]], answer.get("metrics") or {})


def submit_body(params: dict[str, Any], webhook: str | None) -> dict[str, Any]:
    # The client fetches the images as bytes itself: `base64` is its own business, not the caller's.
    body = {name: encode_image(value) for name, value in params.items() if value is not None and name != "base64"}
    if webhook is not None:
        body["webhook"] = webhook
    return body


def check_arguments(base_url: str | None, timeout: float, max_retries: int) -> str:
    """The base URL to use (the argument, else RETOUCH_BASE_URL, else the default); ValueError for bad arguments."""
    if max_retries < 0:
        raise ValueError(f"max_retries={max_retries}; give 0 or more")
    if timeout <= 0:
        raise ValueError(f"timeout={timeout}; give a positive number of seconds")
    url = (base_url or os.environ.get("RETOUCH_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url={url!r}; give an http:// or https:// address")
    return url


class Job:
    """A request submitted to /v2: poll it, wait for it, fetch its result, cancel it."""

    def __init__(self, client: Client, request_id: str) -> None:
        self.client = client
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"Job({self.request_id!r})"

    def status(self) -> dict[str, Any]:
        """The status body: `status` (QUEUED, PROCESSING, COMPLETED, FAILED, CANCELED), `progress`, `metrics`;
        for an ended-badly request also its `error`."""
        response = self.client.request("GET", f"/v2/requests/{self.request_id}/status", allow={422})
        return response.json()

    def result(self) -> Result:
        """The result of a COMPLETED request (its images fetched); InferenceFailed if it FAILED or was CANCELED."""
        body = self.client.request("GET", f"/v2/requests/{self.request_id}", allow={422}).json()
        images = [self.client.request("GET", url).content for url in output_urls(self.request_id, body)]
        return Result(self.request_id, images, body.get("metrics") or {})

    def wait(self, timeout: float = 600, interval: float = 1.0) -> Result:
        """Poll until the request ends; its Result, or InferenceFailed, or InferenceTimeout past `timeout` seconds."""
        started = time.monotonic()
        while True:
            status = self.status()
            if status.get("status") in TERMINAL:
                return self.result()
            elapsed = time.monotonic() - started
            if elapsed >= timeout:
                raise InferenceTimeout(self.request_id, elapsed)
            time.sleep(min(interval, max(0.0, timeout - elapsed)))

    def cancel(self) -> dict[str, Any]:
        """Ask the server to cancel: a queued request ends at once, a running one at its engine's next step."""
        return self.client.request("DELETE", f"/v2/requests/{self.request_id}").json()


class ClientOptions(ABC):
    """What both clients are configured with. `base_url` and `api_key` default to RETOUCH_BASE_URL and
    RETOUCH_API_KEY; `timeout` is per HTTP call. 429, 502 and 503 are retried up to `max_retries` times,
    waiting what Retry-After says (else backing off from `backoff` seconds, doubling, at most `max_wait`)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 30.0,
    ) -> None:
        self.base_url = check_arguments(base_url, timeout, max_retries)
        self.api_key = api_key if api_key is not None else os.environ.get("RETOUCH_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_wait = max_wait
        headers = {"x-api-key": self.api_key} if self.api_key else {}
        self._http = self._connect(headers)

    @abstractmethod
    def _connect(self, headers: dict[str, str]) -> Any:
        """The HTTP client (httpx.Client or httpx.AsyncClient) the subclass calls with."""


class Client(ClientOptions, SlugMethods):
    """A retouch server, called synchronously (arguments: ClientOptions)."""

    def _connect(self, headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, url: str, allow: frozenset[int] | set[int] = frozenset(), **kwargs: Any) -> httpx.Response:
        """One API call with the retries; RetouchError (or a subclass) for an error status not in `allow`."""
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as error:
                raise RetouchError(0, f"could not reach {self.base_url}: {error}") from error
            if response.status_code in RETRIED_STATUSES and attempt < self.max_retries:
                time.sleep(retry_delay(response, attempt, self.backoff, self.max_wait))
                continue
            if response.status_code >= 400 and response.status_code not in allow:
                raise _error_of(response)
            return response
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def run_sync(self, slug: str, **params: Any) -> Result:
        """POST /v1/{slug} and wait in that one call (past the server's sync timeout: InferenceTimeout)."""
        started = time.monotonic()
        response = self.request("POST", f"/v1/{slug}", json={**submit_body(params, None), "base64": True}, allow={422, 504})
        return sync_result(response, started)

    def submit_async(self, slug: str, idempotency_key: str | None = None, webhook: str | None = None, **params: Any) -> Job:
        """POST /v2/{slug}: the Job, at once. The same `idempotency_key` gives back the same request."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = self.request("POST", f"/v2/{slug}", json=submit_body(params, webhook), headers=headers).json()
        return Job(self, answer["request_id"])

    def run(self, slug: str, timeout: float = 600, interval: float = 1.0, **params: Any) -> Result:
        """Submit through /v2 and wait for the result (InferenceFailed, InferenceTimeout)."""
        return self.submit_async(slug, **params).wait(timeout=timeout, interval=interval)

    def models(self) -> list[dict[str, Any]]:
        """GET /v1/models: every slug, its engine, whether its weights are installed, its parameter schema."""
        return self.request("GET", "/v1/models").json()["models"]


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


_default: Client | None = None


def default_client() -> Client:
    """The client of the module-level functions, made on first use from RETOUCH_BASE_URL and RETOUCH_API_KEY."""
    global _default
    if _default is None:
        _default = Client()
    return _default


def run(slug: str, **params: Any) -> Result:
    return default_client().run(slug, **params)


def run_sync(slug: str, **params: Any) -> Result:
    return default_client().run_sync(slug, **params)


def submit_async(slug: str, **params: Any) -> Job:
    return default_client().submit_async(slug, **params)
