"""uvicorn's HTTP/1.1 protocol (httptools) with the two limits it lacks: time to send the headers, and
their size.

Stock uvicorn keeps a connection that sends half its headers open for good (a few hundred of them
exhaust the open-file limit) and reads a 128 MB header block to the end. Here a connection has
RETOUCH_HEADER_TIMEOUT seconds from its first byte (or from the end of its previous response, on
a kept-alive connection, once new bytes arrive) to finish its request line and headers, else it is
answered 408 and closed; and more than RETOUCH_MAX_HEADER_BYTES of them are answered 431 and
closed without reading further. A body that stalls is the ASGI middleware's (BodyGuardMiddleware).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from retouch.config import Settings

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_header_bytes: int = 65_536

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._reading_headers = True
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        was_reading_headers = self._reading_headers
        super().data_received(data)
        # Counted after parsing: a chunk that completes the headers may carry the start of the body.
        if was_reading_headers and self._reading_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, f"the request line and headers are over the limit of {self.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this connection starts counting at its first byte.
        self._reading_headers = True
        self._header_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._reading_headers and not self.transport.is_closing():
            self._refuse(408, f"the request headers did not arrive within {self.header_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        body = json.dumps({"error": message}).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        self.transport.close()
        self._reading_headers = False


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, with the settings' limits."""
    return type(
        "RetouchHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": settings.header_timeout, "max_header_bytes": settings.max_header_bytes},
    )
