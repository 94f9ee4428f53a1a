"""Fetch an image URL without letting a client reach the service's own network (SSRF guard).

Every address a host name resolves to is checked, and the connection then goes to a checked
address as an IP literal, so a second DNS answer (DNS rebinding) can never redirect it. The
original host name still travels in the ``Host`` header and, for https, in TLS SNI, where it
is also what the certificate is checked against. Redirects are followed by hand so that each
hop goes through the same checks.

URLs with user information (``http://user:password@host/``) are refused: credentials have no
place in an image URL, and ``http://public.example@10.0.0.1/`` is a classic way to disguise
the real host from a person reading the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from retouch import __version__
from retouch.errors import Busy, ImageError, URLRefused

if TYPE_CHECKING:
    from retouch.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MESSAGE_URL_LENGTH = 200
_PRIVATE_HINT = "set RETOUCH_ALLOW_PRIVATE_URLS=true to allow it on a trusted network"

# Instance metadata services hand out cloud credentials, so they stay refused even when private
# addresses are allowed. Most sit in ranges refused anyway; 168.63.129.16 (Azure) is public.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS IPv6
        "fd00:ec2::253",
        "168.63.129.16",  # Azure wire server
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)

# Python 3.11's is_global misses some of these (192.0.0.0/24, multicast), so they are listed
# from the IANA special-purpose registries and checked before is_global.
_REFUSED_IPV4 = tuple(
    (ipaddress.IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)
_IPV6_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """What fetch_url allows: private addresses, body size, timeouts and redirects.

    total_timeout bounds the whole fetch, redirects included, so that a server that sends one
    byte just before each read timeout cannot hold a worker for hours.
    """

    allow_private: bool = False
    max_bytes: int = 50_000_000
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_redirects: int = 5
    total_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        """The policy an operator configured through Settings."""
        return cls(
            allow_private=settings.allow_private_urls,
            max_bytes=settings.max_image_bytes,
            connect_timeout=settings.fetch_connect_timeout,
            read_timeout=settings.fetch_read_timeout,
            total_timeout=settings.fetch_total_timeout,
        )


class FetchLimiter:
    """How many URLs one process fetches at once, in all and from any one host. Waiting for a slot
    counts against the URL's total time."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = total
        self.per_host = per_host
        self._all: asyncio.Semaphore | None = None
        self._hosts: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        if self._all is None:
            self._all = asyncio.Semaphore(self.total)
        semaphore, users = self._hosts.get(host, (asyncio.Semaphore(self.per_host), 0))
        self._hosts[host] = (semaphore, users + 1)
        try:
            async with self._all, semaphore:
                yield
        finally:
            semaphore, users = self._hosts[host]
            if users <= 1:
                del self._hosts[host]
            else:
                self._hosts[host] = (semaphore, users - 1)


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for host, without duplicates, in its order."""
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def shorten_url(url: str) -> str:
    """url cut to a length that fits in an error message or a log line."""
    if len(url) <= _MESSAGE_URL_LENGTH:
        return url
    return url[:_MESSAGE_URL_LENGTH] + "..."


def refusal_reason(address: IPAddress) -> str | None:
    """Why address is not a public internet address ("a loopback address" ...), or None if it is.

    IPv6 forms that carry an IPv4 address (mapped, compatible, 6to4, NAT64) are judged by the
    IPv4 address they carry, since that is where the packets end up.
    """
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = refusal_reason(embedded)
        return None if reason is None else f"an IPv6 address that carries {embedded}, {reason}"
    if isinstance(address, ipaddress.IPv4Address):
        for network, reason in _REFUSED_IPV4:
            if address in network:
                return reason
    else:
        if address.is_unspecified:
            return "an unspecified address"
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_site_local or address in _IPV6_UNIQUE_LOCAL:
            return "a private address"
        if address.is_multicast:
            return "a multicast address"
        if address.teredo is not None:
            return "a Teredo tunnel address"
        if address.is_reserved:
            return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    low_32_bits = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64_WELL_KNOWN:
        return low_32_bits
    # :: and ::1 are in ::/96 too but are IPv6's own unspecified and loopback addresses.
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return low_32_bits
    return None


def _address_refusal(address: IPAddress, policy: FetchPolicy) -> str | None:
    embedded = _embedded_ipv4(address)
    if address in _METADATA_ADDRESSES or embedded in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if policy.allow_private:
        return None
    return refusal_reason(address)


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str
    port: int


def _check_url(url: httpx.URL, field: str) -> _Target:
    shown = shorten_url(str(url))
    if url.scheme not in _DEFAULT_PORTS:
        scheme = url.scheme or "(none)"
        raise URLRefused(f"{field} URL {shown} uses the scheme '{scheme}'; only http and https URLs are fetched")
    if url.userinfo:
        raise URLRefused(f"{field} URL {shown} contains a user name or password; give the URL without them")
    host = url.raw_host.decode("ascii")
    if not host:
        raise URLRefused(f"{field} URL {shown} has no host name")
    return _Target(url=url, host=host, port=url.port or _DEFAULT_PORTS[url.scheme])


def _resolve_checked(target: _Target, field: str, policy: FetchPolicy, resolver: Resolver) -> list[IPAddress]:
    """Every address of target's host, all of them checked; refused if any one is refused."""
    shown = shorten_url(str(target.url))
    literal = _parse_address(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            answers = resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise ImageError(f"could not fetch {field} from URL {shown}: the host name '{target.host}' could not be resolved ({exc})") from None
        addresses = []
        for answer in answers:
            address = _parse_address(answer)
            if address is None:
                raise ImageError(f"could not fetch {field} from URL {shown}: the resolver answered '{answer}', which is not an IP address")
            addresses.append(address)
        if not addresses:
            raise ImageError(f"could not fetch {field} from URL {shown}: the host name '{target.host}' has no address")
    for address in addresses:
        reason = _address_refusal(address, policy)
        if reason is not None:
            raise URLRefused(
                f"{field} URL {shown} points to {_show_address(address)}, {reason}; only public internet addresses are fetched"
                + ("" if reason == "a cloud metadata address" else f" ({_PRIVATE_HINT})")
            )
    return addresses


def _show_address(address: IPAddress) -> str:
    # Python before 3.13 prints ::ffff:127.0.0.1 as ::ffff:7f00:1, which hides the IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _url_for_address(url: httpx.URL, address: IPAddress) -> httpx.URL:
    # A scope id (fe80::1%eth0) cannot travel in a URL host; only link-local addresses have one.
    return url.copy_with(host=str(address).split("%", 1)[0])


async def _read_body(response: httpx.Response, field: str, policy: FetchPolicy, shown: str) -> bytes:
    too_large = f"{field} at URL {shown} is larger than the limit of {policy.max_bytes} bytes"
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise ImageError(f"{too_large} (it declares {int(declared)} bytes)")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Asked for identity: a compressed answer could expand far past the size limit before it is counted.
        raise ImageError(f"{field} at URL {shown} came compressed ({encoding}); serve the image without Content-Encoding")
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > policy.max_bytes:
            raise ImageError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_url(
    url: str,
    *,
    field: str,
    policy: FetchPolicy,
    resolver: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
) -> bytes:
    """fetch_url_async for a caller without an event loop (the command line)."""
    return asyncio.run(fetch_url_async(url, field=field, policy=policy, resolver=resolver, transport=transport))


async def fetch_url_async(
    url: str,
    *,
    field: str,
    policy: FetchPolicy,
    resolver: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
    limiter: FetchLimiter | None = None,
) -> bytes:
    """The body of an http(s) URL, fetched only from public addresses (unless policy allows private ones).

    Raises URLRefused for a scheme other than http(s), credentials in the URL, or a host with any
    refused address (checked again for every redirect), and ImageError for network failures,
    non-2xx answers, too many redirects, bodies over policy.max_bytes and a fetch that takes more
    than policy.total_timeout in all. Holds no thread while it waits: a slow server costs a socket,
    not a worker of the request pool. With a `limiter`, it first waits for a slot (Busy, 429, if
    none comes within the total time).
    """
    try:
        current = httpx.URL(url.strip())
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ImageError(f"{field} URL {shorten_url(url)} is not a valid URL ({exc})") from None
    host = _check_url(current, field).host
    slot: contextlib.AbstractAsyncContextManager[None] = limiter.slot(host) if limiter is not None else contextlib.nullcontext()
    started = time.monotonic()
    fetching = False
    try:
        async with asyncio.timeout(policy.total_timeout):
            async with slot:
                fetching = True
                return await _fetch(current, url, field, policy, resolver, transport)
    except TimeoutError:
        if not fetching:
            raise Busy(
                f"could not fetch {field} from URL {shorten_url(url)}: the server was already fetching as many images as it "
                f"allows from '{host}' for {time.monotonic() - started:.0f} s; try again later",
                retry_after=5,
            ) from None
        raise ImageError(f"could not fetch {field} from URL {shorten_url(url)}: timed out after {policy.total_timeout:g} s") from None


async def _fetch(current: httpx.URL, url: str, field: str, policy: FetchPolicy, resolver: Resolver, transport: httpx.AsyncBaseTransport | None) -> bytes:
    timeout = httpx.Timeout(
        connect=policy.connect_timeout, read=policy.read_timeout, write=policy.read_timeout, pool=policy.connect_timeout
    )
    # trust_env=False: a proxy from the environment would do its own DNS lookup and undo the checks.
    async with httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(policy.max_redirects + 1):
            target = _check_url(current, field)
            addresses = await asyncio.to_thread(_resolve_checked, target, field, policy, resolver)
            shown = shorten_url(str(current))
            response_or_location = await _request(client, target, addresses, field, policy, shown)
            if isinstance(response_or_location, bytes):
                return response_or_location
            try:
                current = current.join(response_or_location)
            except (httpx.InvalidURL, UnicodeError) as exc:
                raise ImageError(f"{field} URL {shown} redirects to an invalid URL ({exc})") from None
    raise ImageError(
        f"{field} URL {shorten_url(url)} redirects more than {policy.max_redirects} times; give the final URL of the image"
    )


async def _request(
    client: httpx.AsyncClient,
    target: _Target,
    addresses: list[IPAddress],
    field: str,
    policy: FetchPolicy,
    shown: str,
) -> bytes | str:
    """The body of a 2xx answer, or the Location of a redirect. Tries the addresses in order until one connects."""
    headers = {
        "Host": target.url.netloc.decode("ascii"),
        "User-Agent": f"retouch/{__version__}",
        # Named types first: a CDN that negotiates may otherwise answer AVIF, which is not decoded.
        "Accept": "image/jpeg,image/png,image/webp,image/gif,image/bmp,image/tiff;q=0.9,*/*;q=0.5",
        # Images are compressed already; identity also rules out gzip bombs.
        "Accept-Encoding": "identity",
    }
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    failure = ""
    for address in addresses:
        try:
            async with client.stream("GET", _url_for_address(target.url, address), headers=headers, extensions=extensions) as response:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise ImageError(f"could not fetch {field} from URL {shown}: it answered {response.status_code} without a Location")
                    return location
                if not 200 <= response.status_code < 300:
                    raise ImageError(
                        f"could not fetch {field} from URL {shown}: the server answered {response.status_code} "
                        f"{response.reason_phrase}".rstrip()
                    )
                return await _read_body(response, field, policy, shown)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            failure = "timed out" if isinstance(exc, httpx.ConnectTimeout) else f"could not connect ({exc})"
        except httpx.TimeoutException:
            raise ImageError(f"could not fetch {field} from URL {shown}: timed out") from None
        except httpx.HTTPError as exc:
            raise ImageError(f"could not fetch {field} from URL {shown}: {shorten_url(str(exc))}") from None
    raise ImageError(f"could not fetch {field} from URL {shown}: {shorten_url(failure)}")
