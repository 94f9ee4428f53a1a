"""The SSRF guard of fetch_url, with a mock transport and a fake resolver, and once over a real socket."""

from __future__ import annotations

import io
import itertools
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from PIL import Image

from retouch.config import Settings
from retouch.errors import ImageError, URLRefused
from retouch.imaging.fetch import FetchPolicy, fetch_url, system_resolver

PUBLIC = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def make_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), 200, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = make_png()


class FakeNetwork:
    """A resolver with a fixed table and a transport that records every request it is sent."""

    def __init__(self, table: dict[str, list[str]] | None = None, respond: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.table = {"images.example": [PUBLIC], **(table or {})}
        self.respond = respond or (lambda request: httpx.Response(200, content=PNG))
        self.lookups: list[tuple[str, int]] = []
        self.requests: list[httpx.Request] = []

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    def fetch(self, url: str, **policy_options: object) -> bytes:
        return fetch_url(
            url,
            field="image",
            policy=FetchPolicy(**policy_options),  # type: ignore[arg-type]
            resolver=self.resolve,
            transport=httpx.MockTransport(self.handle),
        )


REFUSED_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "0.0.0.0",
    "::",
    "100.64.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.0.192",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "::7f00:1",
    "2002:7f00:1::1",
    "64:ff9b::a00:1",
    "ff02::1",
    "2001:db8::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]


def literal_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_ip_literals_that_are_not_public_are_refused(address: str) -> None:
    network = FakeNetwork()

    with pytest.raises(URLRefused, match="only public internet addresses are fetched"):
        network.fetch(f"http://{literal_host(address)}/image.png")

    assert network.requests == []
    assert network.lookups == []


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_names_that_resolve_to_addresses_that_are_not_public_are_refused(address: str) -> None:
    network = FakeNetwork({"sneaky.example": [address]})

    with pytest.raises(URLRefused, match="sneaky.example"):
        network.fetch("http://sneaky.example/image.png")

    assert network.requests == []


def test_the_refusal_names_the_address_and_why() -> None:
    network = FakeNetwork({"sneaky.example": ["::ffff:127.0.0.1"]})

    with pytest.raises(URLRefused) as caught:
        network.fetch("http://sneaky.example/image.png")

    assert caught.value.message == (
        "image URL http://sneaky.example/image.png points to ::ffff:127.0.0.1, an IPv6 address that carries 127.0.0.1, "
        "a loopback address; only public internet addresses are fetched "
        "(set RETOUCH_ALLOW_PRIVATE_URLS=true to allow it on a trusted network)"
    )


def test_a_name_with_any_private_address_is_refused() -> None:
    network = FakeNetwork({"mixed.example": [PUBLIC, "10.1.2.3"]})

    with pytest.raises(URLRefused, match="10.1.2.3, a private address"):
        network.fetch("https://mixed.example/image.png")

    assert network.requests == []


@pytest.mark.parametrize("address", [PUBLIC, PUBLIC_V6, "64:ff9b::5db8:d822", "::ffff:93.184.216.34"])
def test_public_addresses_are_fetched(address: str) -> None:
    network = FakeNetwork({"public.example": [address]})

    assert network.fetch("http://public.example/image.png") == PNG


def test_the_request_goes_to_the_checked_address_with_the_original_host() -> None:
    network = FakeNetwork()

    network.fetch("https://images.example/photos/cat.png?size=large")

    assert network.lookups == [("images.example", 443)]
    (request,) = network.requests
    assert request.url.host == PUBLIC
    assert request.url.scheme == "https"
    assert request.url.raw_path == b"/photos/cat.png?size=large"
    assert request.headers["host"] == "images.example"
    assert request.extensions["sni_hostname"] == "images.example"


def test_a_non_default_port_and_ipv6_address_are_kept() -> None:
    network = FakeNetwork({"v6.example": [PUBLIC_V6]})

    network.fetch("http://v6.example:8080/cat.png")

    assert network.lookups == [("v6.example", 8080)]
    (request,) = network.requests
    assert request.url.host == PUBLIC_V6
    assert request.url.port == 8080
    assert str(request.url) == f"http://[{PUBLIC_V6}]:8080/cat.png"
    assert request.headers["host"] == "v6.example:8080"
    assert "sni_hostname" not in request.extensions


@pytest.mark.parametrize("url", ["ftp://images.example/a.png", "file:///etc/passwd", "gopher://images.example/"])
def test_schemes_other_than_http_are_refused(url: str) -> None:
    network = FakeNetwork()

    with pytest.raises(URLRefused, match="uses the scheme '(ftp|file|gopher)'; only http and https URLs are fetched"):
        network.fetch(url)

    assert network.requests == []


def test_credentials_in_the_url_are_refused() -> None:
    network = FakeNetwork()

    with pytest.raises(URLRefused, match="contains a user name or password"):
        network.fetch("http://images.example@10.0.0.1/a.png")

    assert network.requests == []


def test_a_redirect_to_loopback_is_refused() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://127.0.0.1/admin"})

    network = FakeNetwork(respond=respond)

    with pytest.raises(URLRefused, match="http://127.0.0.1/admin points to 127.0.0.1, a loopback address"):
        network.fetch("http://images.example/a.png")

    assert [request.url.host for request in network.requests] == [PUBLIC]


def test_a_redirect_to_a_name_that_resolves_privately_is_refused() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://intranet.example/secret.png"})

    network = FakeNetwork({"intranet.example": ["192.168.0.10"]}, respond=respond)

    with pytest.raises(URLRefused, match="192.168.0.10, a private address"):
        network.fetch("http://images.example/a.png")

    assert len(network.requests) == 1


def hops(count: int) -> Callable[[httpx.Request], httpx.Response]:
    """A server that redirects /0 -> /1 -> ... -> /count and serves the image there."""

    def respond(request: httpx.Request) -> httpx.Response:
        step = int(request.url.path.strip("/"))
        if step < count:
            return httpx.Response(302, headers={"Location": f"/{step + 1}"})
        return httpx.Response(200, content=PNG)

    return respond


def test_five_redirects_are_followed_each_one_checked() -> None:
    network = FakeNetwork(respond=hops(5))

    assert network.fetch("http://images.example/0", max_redirects=5) == PNG

    assert [request.url.path for request in network.requests] == ["/0", "/1", "/2", "/3", "/4", "/5"]
    assert all(request.headers["host"] == "images.example" for request in network.requests)
    assert len(network.lookups) == 6


def test_six_redirects_are_refused() -> None:
    network = FakeNetwork(respond=hops(6))

    with pytest.raises(ImageError, match="redirects more than 5 times"):
        network.fetch("http://images.example/0", max_redirects=5)

    assert len(network.requests) == 6


def test_a_body_over_the_limit_with_content_length_is_refused() -> None:
    network = FakeNetwork(respond=lambda request: httpx.Response(200, content=b"x" * 2000))

    with pytest.raises(ImageError, match="larger than the limit of 1024 bytes \\(it declares 2000 bytes\\)"):
        network.fetch("http://images.example/a.png", max_bytes=1024)


def test_a_streamed_body_over_the_limit_is_cut_off() -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for index in itertools.count():
            sent.append(index)
            yield b"x" * 500

    def respond(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(200, content=endless())
        assert "content-length" not in response.headers
        return response

    network = FakeNetwork(respond=respond)

    with pytest.raises(ImageError, match="larger than the limit of 1024 bytes$"):
        network.fetch("http://images.example/a.png", max_bytes=1024)

    assert len(sent) <= 4


def test_a_body_at_the_limit_is_accepted() -> None:
    async def two_chunks() -> AsyncIterator[bytes]:
        yield b"x" * 600
        yield b"y" * 424

    network = FakeNetwork(respond=lambda request: httpx.Response(200, content=two_chunks()))

    assert network.fetch("http://images.example/a.png", max_bytes=1024) == b"x" * 600 + b"y" * 424


@pytest.mark.parametrize("status", [404, 500, 304])
def test_a_non_2xx_answer_is_an_image_error(status: int) -> None:
    network = FakeNetwork(respond=lambda request: httpx.Response(status))

    with pytest.raises(ImageError, match=f"could not fetch image from URL http://images.example/a.png: the server answered {status}"):
        network.fetch("http://images.example/a.png")


def test_a_redirect_without_location_is_an_image_error() -> None:
    network = FakeNetwork(respond=lambda request: httpx.Response(302))

    with pytest.raises(ImageError, match="answered 302 without a Location"):
        network.fetch("http://images.example/a.png")


def test_a_timeout_is_an_image_error() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    network = FakeNetwork(respond=respond)

    with pytest.raises(ImageError, match="could not fetch image from URL http://images.example/a.png: timed out$"):
        network.fetch("http://images.example/a.png")


def test_a_refused_connection_tries_the_next_address() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(200, content=PNG)

    network = FakeNetwork({"twice.example": [PUBLIC, "93.184.216.35"]}, respond=respond)

    assert network.fetch("http://twice.example/a.png") == PNG
    assert [request.url.host for request in network.requests] == [PUBLIC, "93.184.216.35"]


def test_no_address_connecting_is_an_image_error() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    network = FakeNetwork(respond=respond)

    with pytest.raises(ImageError, match="could not connect"):
        network.fetch("http://images.example/a.png")


def test_an_unknown_host_is_an_image_error() -> None:
    network = FakeNetwork()

    with pytest.raises(ImageError, match="the host name 'nowhere.example' could not be resolved"):
        network.fetch("http://nowhere.example/a.png")


def test_allow_private_lets_loopback_through() -> None:
    network = FakeNetwork({"box.local": ["192.168.1.5"]})

    assert network.fetch("http://127.0.0.1/a.png", allow_private=True) == PNG
    assert network.fetch("http://box.local/a.png", allow_private=True) == PNG
    assert [request.url.host for request in network.requests] == ["127.0.0.1", "192.168.1.5"]


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "168.63.129.16"])
def test_metadata_addresses_stay_refused_with_allow_private(address: str) -> None:
    network = FakeNetwork()

    with pytest.raises(URLRefused, match="a cloud metadata address"):
        network.fetch(f"http://{literal_host(address)}/latest/meta-data/", allow_private=True)

    assert network.requests == []


def test_a_huge_url_is_shortened_in_messages() -> None:
    network = FakeNetwork(respond=lambda request: httpx.Response(404))
    url = "http://images.example/" + "a" * 100_000

    with pytest.raises(ImageError) as caught:
        network.fetch(url)

    assert len(caught.value.message) < 400
    assert "..." in caught.value.message


def test_policy_from_settings() -> None:
    settings = Settings(
        allow_private_urls=True, max_image_bytes=4096, fetch_connect_timeout=1.5, fetch_read_timeout=7.0, fetch_total_timeout=12.0
    )

    policy = FetchPolicy.from_settings(settings)

    assert policy == FetchPolicy(allow_private=True, max_bytes=4096, connect_timeout=1.5, read_timeout=7.0, total_timeout=12.0)


def test_system_resolver_deduplicates_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:4860::1", 80, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 80)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:4860::1", 80, 0, 0)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, type: answers)

    assert system_resolver("images.example", 80) == ["2001:4860::1", PUBLIC]


# One test over a real socket: the guard without any fake in the way.


class PngHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet (this overrides the standard library's signature)."""


@pytest.fixture
def local_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PngHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_real_local_server_is_refused_unless_private_urls_are_allowed(local_server: int) -> None:
    url = f"http://127.0.0.1:{local_server}/image.png"

    with pytest.raises(URLRefused, match="127.0.0.1, a loopback address"):
        fetch_url(url, field="image", policy=FetchPolicy())
    with pytest.raises(URLRefused, match="a loopback address"):
        fetch_url(f"http://localhost:{local_server}/image.png", field="image", policy=FetchPolicy())

    assert fetch_url(url, field="image", policy=FetchPolicy(allow_private=True)) == PNG


def test_compressed_answer_is_refused_before_it_expands():
    import gzip

    bomb = gzip.compress(b"\0" * 5_000_000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"content-encoding": "gzip", "content-type": "image/png"})

    policy = FetchPolicy(max_bytes=1_000_000)
    with pytest.raises(ImageError, match="compressed"):
        fetch_url("http://images.example/bomb.png", field="image", policy=policy, resolver=lambda host, port: ["93.184.216.34"], transport=httpx.MockTransport(handler))
