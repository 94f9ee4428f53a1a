"""Slow and oversized requests, over raw sockets, on the server as `retouch serve` runs it: partial
headers, a stalled body and huge headers are each cut off within the configured time."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import ALL_MODELS
from servers import serving

from retouch.api.app import create_app
from retouch.api.protocol import guarded_protocol
from retouch.config import Settings


@pytest.fixture
def address(tmp_path: Path) -> Iterator[tuple[str, int]]:
    settings = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights", header_timeout=1.0, body_timeout=1.0, max_header_bytes=8192)
    with serving(create_app(settings, models=ALL_MODELS, workers=1), http=guarded_protocol(settings)) as base:
        host, port = base.removeprefix("http://").split(":")
        yield host, int(port)


def read_until_closed(connection: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    connection.settimeout(timeout)
    received = b""
    while True:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {timeout} s; received {received[:200]!r}") from None
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def status_and_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def test_a_connection_that_sends_nothing_is_closed(address):
    with socket.create_connection(address) as connection:
        answer, seconds = read_until_closed(connection, timeout=5)
    assert seconds < 2.5
    assert status_and_error(answer)[0] == 408


def test_partial_headers_are_cut_off(address):
    with socket.create_connection(address) as connection:
        connection.sendall(b"POST /v1/fake-invert HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl")
        answer, seconds = read_until_closed(connection, timeout=5)
    assert seconds < 2.5
    status, error = status_and_error(answer)
    assert status == 408 and "headers did not arrive within 1 s" in error


def test_a_stalled_body_is_cut_off(address):
    with socket.create_connection(address) as connection:
        connection.sendall(
            b"POST /v1/fake-invert HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"image\": "
        )
        answer, seconds = read_until_closed(connection, timeout=5)
    assert seconds < 2.5
    status, error = status_and_error(answer)
    assert status == 408 and "stalled" in error


def test_headers_over_the_limit_are_431_without_reading_them_all(address):
    with socket.create_connection(address) as connection:
        started = time.monotonic()
        try:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 1_000_000 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = read_until_closed(connection, timeout=5)
        seconds = time.monotonic() - started
    assert seconds < 2
    status, error = status_and_error(answer)
    assert status == 431 and "8192 bytes" in error


def read_one_response(connection: socket.socket) -> bytes:
    """One whole response off a kept-alive connection: its head, then as many body bytes as it announces
    (a single recv may hold only part of it)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_ordinary_requests_on_a_kept_alive_connection_still_work(address):
    with socket.create_connection(address) as connection:
        for _ in range(3):
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            connection.settimeout(5)
            answer = read_one_response(connection)
            assert answer.startswith(b"HTTP/1.1 200")
            # Slower than the header timeout between requests: each request's clock starts at its first byte.
            time.sleep(1.3)


def test_a_large_body_sent_with_its_headers_is_not_counted_as_headers(address):
    body = b'{"image": "' + b"A" * 300_000 + b'"}'
    with socket.create_connection(address) as connection:
        connection.sendall(
            b"POST /v1/fake-invert HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        answer, _ = read_until_closed(connection, timeout=10)
    status, error = status_and_error(answer)
    # Read whole, then refused for what it is: not an image.
    assert status == 400 and "image" in error
