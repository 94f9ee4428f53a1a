"""The asyncio client: the same surface as `Client`, each call awaited."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Self

import httpx

from retouch.client.core import (
    RETRIED_STATUSES,
    TERMINAL,
    ClientOptions,
    InferenceTimeout,
    RetouchError,
    _error_of,
    output_urls,
    retry_delay,
    submit_body,
    sync_result,
)
from retouch.client.results import Result
from retouch.client.typed import AsyncSlugMethods


class AsyncJob:
    """A request submitted to /v2, for asyncio: `await job.wait()`."""

    def __init__(self, client: AsyncClient, request_id: str) -> None:
        self.client = client
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"AsyncJob({self.request_id!r})"

    async def status(self) -> dict[str, Any]:
        return (await self.client.request("GET", f"/v2/requests/{self.request_id}/status", allow={422})).json()

    async def result(self) -> Result:
        body = (await self.client.request("GET", f"/v2/requests/{self.request_id}", allow={422})).json()
        images = [(await self.client.request("GET", url)).content for url in output_urls(self.request_id, body)]
        return Result(self.request_id, images, body.get("metrics") or {})

    async def wait(self, timeout: float = 600, interval: float = 1.0) -> Result:
        started = time.monotonic()
        while True:
            status = await self.status()
            if status.get("status") in TERMINAL:
                return await self.result()
            elapsed = time.monotonic() - started
            if elapsed >= timeout:
                raise InferenceTimeout(self.request_id, elapsed)
            await asyncio.sleep(min(interval, max(0.0, timeout - elapsed)))

    async def cancel(self) -> dict[str, Any]:
        return (await self.client.request("DELETE", f"/v2/requests/{self.request_id}")).json()


class AsyncClient(ClientOptions, AsyncSlugMethods):
    """`Client` for asyncio: `async with AsyncClient(url) as client: result = await client.run(...)`."""

    def _connect(self, headers: dict[str, str]) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def request(self, method: str, url: str, allow: frozenset[int] | set[int] = frozenset(), **kwargs: Any) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            try:
                response = await self._http.request(method, url, **kwargs)
            except httpx.TransportError as error:
                raise RetouchError(0, f"could not reach {self.base_url}: {error}") from error
            if response.status_code in RETRIED_STATUSES and attempt < self.max_retries:
                await asyncio.sleep(retry_delay(response, attempt, self.backoff, self.max_wait))
                continue
            if response.status_code >= 400 and response.status_code not in allow:
                raise _error_of(response)
            return response
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def run_sync(self, slug: str, **params: Any) -> Result:
        started = time.monotonic()
        response = await self.request("POST", f"/v1/{slug}", json={**submit_body(params, None), "base64": True}, allow={422, 504})
        return sync_result(response, started)

    async def submit_async(self, slug: str, idempotency_key: str | None = None, webhook: str | None = None, **params: Any) -> AsyncJob:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = (await self.request("POST", f"/v2/{slug}", json=submit_body(params, webhook), headers=headers)).json()
        return AsyncJob(self, answer["request_id"])

    async def run(self, slug: str, timeout: float = 600, interval: float = 1.0, **params: Any) -> Result:
        job = await self.submit_async(slug, **params)
        return await job.wait(timeout=timeout, interval=interval)

    async def models(self) -> list[dict[str, Any]]:
        return (await self.request("GET", "/v1/models")).json()["models"]
