"""Webhooks: the server calls a client's URL once when its request ends, with the result body, signed.

A webhook URL is a URL the server itself connects to, on a client's say-so, so it goes through the
same SSRF guard as an image URL (retouch.imaging.fetch): at submit, so that a bad URL is a 400 and
not a silent failure an hour later, and again before every attempt, since the host's DNS answer may
have changed in between (DNS rebinding). Each attempt connects to an address that was just checked,
as an IP literal, with the host name kept in the Host header and, for https, in TLS SNI, where it is
also the name the certificate is checked against.

Delivery runs on the dispatcher's own threads, so a worker that ends a job never waits for a
client's server. A failed attempt (a non-2xx answer, a timeout, a connection error) is tried again
after a backoff that doubles each time; the waits sit in a heap of due times rather than in sleeping
threads, so one slow or dead receiver cannot hold back the deliveries of others.

The receiver checks the X-Retouch-Signature header (see `verify`): an HMAC-SHA256 over the
timestamp and the exact body bytes, with the signing secret of the API key that submitted the
request, so that it can tell a genuine call from a forged one and a fresh one from a replay.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from retouch.errors import ImageError, InvalidInput, URLRefused
from retouch.imaging.fetch import (
    FetchPolicy,
    IPAddress,
    Resolver,
    _check_url,
    _resolve_checked,
    _Target,
    _url_for_address,
    shorten_url,
    system_resolver,
)

if TYPE_CHECKING:
    from retouch.config import Settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Retouch-Signature"
REQUEST_ID_HEADER = "X-Retouch-Request-Id"
USER_AGENT = "retouch-webhook"

_FIELD = "webhook"


def check_webhook_url(url: str, settings: Settings, resolver: Resolver = system_resolver) -> str:
    """The webhook URL, if the server may call it; raises URLRefused or InvalidInput (400) if not.

    At submit: the scheme is http or https, there is no user information, the host resolves, and
    every address it resolves to is allowed by the SSRF policy of the settings (cloud metadata
    addresses are refused even when private addresses are allowed).
    """
    stripped = url.strip()
    _checked_target(stripped, FetchPolicy.from_settings(settings), resolver)
    return stripped


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the signature header: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``.

    The HMAC is keyed with the secret and covers f"{timestamp}." followed by the body, so a
    receiver that checks the timestamp also refuses an old call sent again (a replay).
    """
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether header is a valid signature of body with secret, made within `tolerance` seconds of now.

    For receivers (and the tests). The comparison is constant-time, so that a forger cannot find
    the signature byte by byte from how long a refusal takes. Any v1 entry may match, so that a
    sender may one day sign with an old and a new secret at once while the receiver switches.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, separator, value = part.strip().partition("=")
        if not separator:
            return False
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    matched = False
    for candidate in candidates:
        # No early exit: every candidate is compared, so timing does not tell which one matched.
        matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    return matched


def _checked_target(url: str, policy: FetchPolicy, resolver: Resolver) -> tuple[_Target, list[IPAddress]]:
    """url's target and its addresses, all allowed by policy; URLRefused if any is not."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise InvalidInput(f"webhook URL {shorten_url(url)} is not a valid URL ({exc}); give an http or https URL") from None
    target = _check_url(parsed, _FIELD)
    try:
        addresses = _resolve_checked(target, _FIELD, policy, resolver)
    except URLRefused:
        raise
    except ImageError as exc:
        # fetch.py words a lookup failure as "could not fetch ... from URL ...: <what went wrong>",
        # which reads wrong for a URL the server calls rather than fetches; keep only what went wrong.
        what_went_wrong = exc.message.split(": ", 1)[-1]
        raise InvalidInput(f"webhook URL {shorten_url(url)} cannot be called: {what_went_wrong}; give a URL whose host name resolves") from None
    return target, addresses


@dataclass
class _Delivery:
    url: str
    owner_key: str | None
    request_id: str
    body: bytes
    attempts_made: int = 0
    secret: str | None = None
    # Looked up on the dispatcher's thread at the first attempt, not in deliver(): the key store may be slow.
    secret_known: bool = False


class _Refused(Exception):
    """The SSRF check refused the URL at delivery: no retry can change that in time."""


class WebhookDispatcher:
    """Delivers webhooks on its own daemon threads, retrying with a doubling backoff.

    deliver() only queues; the threads take the deliveries that are due from a heap ordered by due
    time, so a retry that waits does not hold a thread.
    """

    def __init__(
        self,
        settings: Settings,
        secret_of: Callable[[str | None], str | None],
        resolver: Resolver = system_resolver,
        threads: int = 2,
    ) -> None:
        """secret_of(owner_key) gives the signing secret of the API key id that submitted the request (None: unsigned)."""
        if threads < 1:
            raise ValueError(f"threads is {threads}; give 1 or more")
        self.settings = settings
        self.secret_of = secret_of
        self.resolver = resolver
        self.policy = FetchPolicy.from_settings(settings)
        self.attempts = settings.webhook_attempts
        self.backoff = settings.webhook_backoff
        # trust_env=False: a proxy from the environment would do its own DNS lookup and undo the checks.
        # No kept-alive connections: the pool keys connections by IP and port only, so a TLS
        # connection made for one host name could otherwise carry a request for another name on
        # the same address, past the certificate check of its own name.
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.webhook_timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, _Delivery]] = []
        # Breaks ties between equal due times, so that the heap never compares two deliveries.
        self._sequence = itertools.count()
        self._in_progress = 0
        self._closing = False
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"retouch-webhook-{number}", daemon=True) for number in range(1, threads + 1)]
        for thread in self._threads:
            thread.start()

    def deliver(self, url: str, owner_key: str | None, request_id: str, body: dict[str, Any]) -> None:
        """Queue one delivery of body to url and return at once; never raises into the caller.

        Called from worker threads right after a job's terminal write: a failure here must not
        turn a finished job into a failed one, so it is logged instead.
        """
        try:
            encoded = json.dumps(body, separators=(",", ":")).encode()
            delivery = _Delivery(url=url, owner_key=owner_key, request_id=request_id, body=encoded)
            with self._condition:
                if self._closing:
                    logger.warning(
                        "webhook of request %s to %s not sent: the server is stopping",
                        request_id,
                        shorten_url(url),
                    )
                    return
                self._schedule(delivery, time.monotonic())
        except Exception:
            logger.exception(
                "webhook of request %s to %s could not be queued",
                request_id,
                shorten_url(str(url)),
            )

    def close(self, timeout: float = 10.0) -> None:
        """Stop: wait up to `timeout` for deliveries in progress and due now, then give up on the rest (logged).

        Retries that are not due yet are not waited for: a receiver that keeps failing must not
        hold up a shutdown for the whole backoff.
        """
        with self._condition:
            if self._closing:
                return
            self._closing = True
            self._condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._condition:
            self._stopped = True
            abandoned = [delivery for _due, _sequence, delivery in self._heap]
            self._heap.clear()
            in_progress = self._in_progress
            self._condition.notify_all()
        for delivery in abandoned:
            self._give_up(delivery, "the server stopped before the next attempt")
        if in_progress:
            logger.warning(
                "%d webhook deliveries were still in progress after %g s at shutdown; given up",
                in_progress,
                timeout,
            )
        # An attempt still in progress fails here, and its thread then gives it up (it is stopped).
        self._client.close()

    def _schedule(self, delivery: _Delivery, due: float) -> None:
        # The caller holds the condition.
        heapq.heappush(self._heap, (due, next(self._sequence), delivery))
        self._condition.notify()

    def _next_due(self) -> _Delivery | None:
        """The next delivery that is due, waiting for one; None when the thread should end."""
        with self._condition:
            while True:
                if self._stopped:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    delivery = heapq.heappop(self._heap)[2]
                    self._in_progress += 1
                    return delivery
                if self._closing:
                    return None
                self._condition.wait(self._heap[0][0] - now if self._heap else None)

    def _work(self) -> None:
        while True:
            delivery = self._next_due()
            if delivery is None:
                return
            try:
                self._attempt_and_follow_up(delivery)
            except Exception:
                # A bug here must not end the thread: the other deliveries still need it.
                logger.exception(
                    "webhook of request %s to %s failed unexpectedly; given up",
                    delivery.request_id,
                    shorten_url(delivery.url),
                )
            finally:
                with self._condition:
                    self._in_progress -= 1

    def _attempt_and_follow_up(self, delivery: _Delivery) -> None:
        delivery.attempts_made += 1
        try:
            cause = self._attempt(delivery)
        except _Refused as exc:
            self._give_up(delivery, str(exc))
            return
        if cause is None:
            logger.info(
                "webhook of request %s delivered to %s (attempt %d)",
                delivery.request_id,
                shorten_url(delivery.url),
                delivery.attempts_made,
            )
            return
        if delivery.attempts_made >= self.attempts:
            self._give_up(delivery, cause)
            return
        wait = self.backoff * 2 ** (delivery.attempts_made - 1)
        with self._condition:
            if self._stopped:
                stopped = True
            else:
                stopped = False
                self._schedule(delivery, time.monotonic() + wait)
        if stopped:
            self._give_up(delivery, f"{cause}; the server stopped before the next attempt")
            return
        logger.info(
            "webhook of request %s to %s failed (attempt %d of %d: %s); next attempt in %g s",
            delivery.request_id,
            shorten_url(delivery.url),
            delivery.attempts_made,
            self.attempts,
            cause,
            wait,
        )

    def _attempt(self, delivery: _Delivery) -> str | None:
        """One attempt: None if the receiver answered 2xx, else what went wrong. _Refused if the URL is refused now."""
        try:
            target, addresses = _checked_target(delivery.url, self.policy, self.resolver)
        except URLRefused as exc:
            raise _Refused(f"refused at delivery: {exc.message}") from None
        except InvalidInput as exc:
            # A lookup that fails now may work at the next attempt.
            return exc.message
        if not delivery.secret_known:
            try:
                secret = self.secret_of(delivery.owner_key)
            except Exception as exc:  # noqa: BLE001 - any failure of the key store is retried like a failed POST
                return f"the signing secret could not be read ({type(exc).__name__})"
            # An empty secret would make a signature anyone can compute: send such a call unsigned.
            delivery.secret = secret or None
            delivery.secret_known = True
        headers = {
            "Host": target.url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            REQUEST_ID_HEADER: delivery.request_id,
        }
        if delivery.secret is not None:
            # Signed at each attempt, so that a late retry still passes the receiver's timestamp check.
            headers[SIGNATURE_HEADER] = sign(delivery.secret, int(time.time()), delivery.body)
        # As in fetch.py: the connection goes to the checked address, and for https the host name
        # still goes in SNI, and is the name the certificate is checked against.
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        failure = "no address to connect to"
        for address in addresses:
            try:
                with self._client.stream(
                    "POST",
                    _url_for_address(target.url, address),
                    content=delivery.body,
                    headers=headers,
                    extensions=extensions,
                ) as response:
                    # The answer's body is not read: nothing in it is used, and it could be large.
                    if 200 <= response.status_code < 300:
                        return None
                    return f"the receiver answered {response.status_code} {response.reason_phrase}".rstrip()
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Another address of the same host may answer.
                failure = "timed out connecting" if isinstance(exc, httpx.ConnectTimeout) else f"could not connect ({exc})"
            except httpx.TimeoutException:
                return f"timed out after {self.settings.webhook_timeout:g} s"
            except httpx.HTTPError as exc:
                return shorten_url(f"{type(exc).__name__}: {exc}")
        return shorten_url(failure)

    def _give_up(self, delivery: _Delivery, cause: str) -> None:
        logger.warning(
            "webhook of request %s to %s given up after %d attempt(s): %s",
            delivery.request_id,
            shorten_url(delivery.url),
            delivery.attempts_made,
            cause,
        )
