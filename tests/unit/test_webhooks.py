"""Webhook delivery against a real receiving HTTP server on 127.0.0.1: signing, retries, giving up,
timeouts, the SSRF check at submit and again at delivery, and a dispatcher that never blocks its caller."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retouch.config import Settings
from retouch.errors import InvalidInput, URLRefused
from retouch.jobs.webhooks import (
    REQUEST_ID_HEADER,
    SIGNATURE_HEADER,
    WebhookDispatcher,
    check_webhook_url,
    sign,
    verify,
)

SECRET = "whsec_test_secret"
PUBLIC = "93.184.216.34"
METADATA = "169.254.169.254"
LOGGER = "retouch.jobs.webhooks"
BODY = {
    "status": "COMPLETED",
    "request_id": "req-1",
    "output": ["https://retouch.example/v2/req-1/0.png"],
    "note": "é",
}


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: answers each POST with the status that `answer` gives for its number (1, 2, ...)."""

    answer: Callable[[int], int]
    delay: Callable[[int], float] = lambda number: 0.0
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def record(self, post: Post) -> int:
        with self.lock:
            self.posts.append(post)
            return len(self.posts)

    def count(self) -> int:
        with self.lock:
            return len(self.posts)


@pytest.fixture
def serve() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(
        answer: Callable[[int], int] = lambda number: 200,
        delay: Callable[[int], float] = lambda number: 0.0,
    ) -> Receiver:
        receiver = Receiver(answer=answer, delay=delay)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                post = Post(
                    path=self.path,
                    headers=dict(self.headers.items()),
                    body=self.rfile.read(length),
                )
                number = receiver.record(post)
                time.sleep(receiver.delay(number))
                try:
                    self.send_response(receiver.answer(number))
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # The sender timed out and hung up: that is what some tests want.

            def log_message(self, format: str, *arguments: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        receiver.port = server.server_address[1]
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def make_dispatcher() -> Iterator[Callable[..., WebhookDispatcher]]:
    dispatchers: list[WebhookDispatcher] = []

    def make(
        settings: Settings,
        secret: str | None = SECRET,
        resolver: Callable[[str, int], list[str]] | None = None,
    ) -> WebhookDispatcher:
        def secret_of(owner_key: str | None) -> str | None:
            return secret

        if resolver is None:
            dispatcher = WebhookDispatcher(settings, secret_of)
        else:
            dispatcher = WebhookDispatcher(settings, secret_of, resolver=resolver)
        dispatchers.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in dispatchers:
        dispatcher.close(timeout=2.0)


def settings_for(tmp_path: Path, **options: object) -> Settings:
    values: dict[str, object] = {
        "allow_private_urls": True,
        "webhook_backoff": 0.05,
        "home": tmp_path,
        **options,
    }
    return Settings(**values)  # type: ignore[arg-type]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def logged(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.INFO) -> bool:
    return any(text in record.getMessage() and record.levelno >= level for record in caplog.records if record.name == LOGGER)


def delivered(caplog: pytest.LogCaptureFixture, request_id: str) -> Callable[[], bool]:
    return lambda: logged(caplog, f"webhook of request {request_id} delivered")


def given_up(caplog: pytest.LogCaptureFixture, request_id: str) -> Callable[[], bool]:
    return lambda: any(
        f"webhook of request {request_id} to" in record.getMessage() and "given up" in record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    )


# -- signatures -------------------------------------------------------------------------------------------------


def test_sign_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"1700000000." + b'{"a":1}', hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, b'{"a":1}') == f"t=1700000000,v1={expected}"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=abc,v1=00",
        "v1=00",
        "t=1700000000",
        "t=1700000000,v1=",
        "t=1700000000;v1=00",
    ],
)
def test_verify_refuses_malformed_headers(header: str) -> None:
    assert not verify(SECRET, header, b"{}", now=1700000000)


def test_verify_accepts_any_matching_v1_entry() -> None:
    header = sign(SECRET, 1700000000, b"{}")
    assert verify(SECRET, f"{header},v1={'0' * 64}", b"{}", now=1700000000)
    assert verify(
        SECRET,
        f"t=1700000000,v1={'0' * 64},{header.split(',')[1]}",
        b"{}",
        now=1700000000,
    )


# -- delivery ---------------------------------------------------------------------------------------------------


def test_delivered_once_signed_with_the_body_as_sent(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    receiver = serve()
    dispatcher = make_dispatcher(settings_for(tmp_path))
    dispatcher.deliver(receiver.url, "key-1", "req-1", BODY)
    wait_until(delivered(caplog, "req-1"))
    assert receiver.count() == 1
    post = receiver.posts[0]
    assert post.path == "/hook"
    assert post.body == json.dumps(BODY, separators=(",", ":")).encode()
    assert json.loads(post.body) == BODY
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["User-Agent"] == "retouch-webhook"
    assert post.headers[REQUEST_ID_HEADER] == "req-1"
    assert post.headers["Host"] == f"127.0.0.1:{receiver.port}"
    header = post.headers[SIGNATURE_HEADER]
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(timestamp - time.time()) < 60
    assert verify(SECRET, header, post.body)
    assert not verify("another secret", header, post.body)
    assert not verify(SECRET, header, post.body, now=timestamp + 301)
    assert not verify(SECRET, header, post.body, now=timestamp - 301)
    assert not verify(SECRET, header, post.body.replace(b"COMPLETED", b"FAILED"))
    # Neither the secret nor the signature may end up in a log.
    assert SECRET not in caplog.text
    assert header.split("v1=")[1] not in caplog.text
    # Still exactly one, a moment later: a success is not retried.
    time.sleep(0.2)
    assert receiver.count() == 1


def test_without_a_secret_the_call_is_unsigned(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve()
    dispatcher = make_dispatcher(settings_for(tmp_path), secret=None)
    dispatcher.deliver(receiver.url, None, "req-unsigned", BODY)
    wait_until(delivered(caplog, "req-unsigned"))
    assert SIGNATURE_HEADER not in receiver.posts[0].headers


def test_connects_to_the_checked_address_and_keeps_the_host_name(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve()
    lookups: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append((host, port))
        return ["127.0.0.1"]

    url = f"http://hooks.example:{receiver.port}/hook"
    settings = settings_for(tmp_path)
    assert check_webhook_url(url, settings, resolver) == url
    dispatcher = make_dispatcher(settings, resolver=resolver)
    dispatcher.deliver(url, "key-1", "req-named", BODY)
    wait_until(delivered(caplog, "req-named"))
    assert receiver.posts[0].headers["Host"] == f"hooks.example:{receiver.port}"
    # Once at submit and once more before the attempt.
    assert lookups == [("hooks.example", receiver.port)] * 2


def test_retried_after_two_failures_then_delivered(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve(answer=lambda number: 500 if number <= 2 else 204)
    dispatcher = make_dispatcher(settings_for(tmp_path))
    dispatcher.deliver(receiver.url, "key-1", "req-retry", BODY)
    wait_until(delivered(caplog, "req-retry"))
    assert receiver.count() == 3
    assert logged(caplog, "attempt 3")
    # Every attempt is signed afresh and carries the same body.
    for post in receiver.posts:
        assert post.body == receiver.posts[0].body
        assert verify(SECRET, post.headers[SIGNATURE_HEADER], post.body)
    assert not logged(caplog, "given up", logging.WARNING)


def test_given_up_after_the_limit(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve(answer=lambda number: 500)
    dispatcher = make_dispatcher(settings_for(tmp_path, webhook_attempts=3))
    dispatcher.deliver(receiver.url, "key-1", "req-doomed", BODY)
    wait_until(given_up(caplog, "req-doomed"))
    warnings = [record for record in caplog.records if record.name == LOGGER and record.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "req-doomed" in message
    assert receiver.url in message
    assert "after 3 attempt(s)" in message
    assert "500" in message
    # Past the longest backoff (0.2 s): no fourth attempt.
    time.sleep(0.4)
    assert receiver.count() == 3


def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve(delay=lambda number: 1.5 if number == 1 else 0.0)
    dispatcher = make_dispatcher(settings_for(tmp_path, webhook_timeout=0.3))
    started = time.monotonic()
    dispatcher.deliver(receiver.url, "key-1", "req-slow", BODY)
    wait_until(delivered(caplog, "req-slow"))
    assert receiver.count() == 2
    assert logged(caplog, "timed out after 0.3 s")
    # The first attempt was cut at the timeout, not waited out.
    assert time.monotonic() - started < 1.5


def test_deliver_returns_at_once_while_the_receiver_is_slow(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve(delay=lambda number: 2.0)
    dispatcher = make_dispatcher(settings_for(tmp_path))
    started = time.monotonic()
    dispatcher.deliver(receiver.url, "key-1", "req-a", BODY)
    dispatcher.deliver(receiver.url, "key-1", "req-b", BODY)
    assert time.monotonic() - started < 0.5
    for request_id in ("req-a", "req-b"):
        wait_until(delivered(caplog, request_id))
    assert receiver.count() == 2


def test_a_waiting_retry_does_not_hold_back_other_deliveries(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    failing = serve(answer=lambda number: 503)
    working = serve()
    dispatcher = make_dispatcher(settings_for(tmp_path, webhook_backoff=30.0))
    dispatcher.deliver(failing.url, "key-1", "req-failing", BODY)
    wait_until(lambda: failing.count() == 1)
    started = time.monotonic()
    for number in range(4):
        dispatcher.deliver(working.url, "key-1", f"req-ok-{number}", BODY)
    wait_until(lambda: working.count() == 4)
    assert time.monotonic() - started < 5.0


def test_deliver_never_raises(
    tmp_path: Path,
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    dispatcher = make_dispatcher(settings_for(tmp_path))
    dispatcher.deliver("http://127.0.0.1:9/hook", "key-1", "req-unserialisable", {"value": object()})
    assert logged(caplog, "could not be queued", logging.ERROR)
    dispatcher.close(timeout=1.0)
    dispatcher.deliver("http://127.0.0.1:9/hook", "key-1", "req-late", BODY)
    assert logged(caplog, "req-late", logging.WARNING)


def test_a_failing_secret_lookup_is_retried(tmp_path: Path, serve: Callable[..., Receiver], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve()
    calls: list[str | None] = []

    def secret_of(owner_key: str | None) -> str | None:
        calls.append(owner_key)
        if len(calls) == 1:
            raise ConnectionError("the key store is down")
        return SECRET

    dispatcher = WebhookDispatcher(settings_for(tmp_path), secret_of)
    try:
        dispatcher.deliver(receiver.url, "key-9", "req-secret", BODY)
        wait_until(delivered(caplog, "req-secret"))
    finally:
        dispatcher.close(timeout=2.0)
    assert calls == ["key-9", "key-9"]
    assert receiver.count() == 1
    assert verify(SECRET, receiver.posts[0].headers[SIGNATURE_HEADER], receiver.posts[0].body)


# -- the SSRF check ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://168.63.129.16/",
    ],
)
def test_metadata_addresses_are_refused_even_with_private_urls_allowed(tmp_path: Path, url: str) -> None:
    with pytest.raises(URLRefused, match="webhook URL .* a cloud metadata address") as caught:
        check_webhook_url(url, settings_for(tmp_path))
    assert caught.value.status_code == 400


def test_a_host_name_that_resolves_to_a_metadata_address_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(URLRefused, match="cloud metadata"):
        check_webhook_url(
            "https://hooks.example/hook",
            settings_for(tmp_path),
            lambda host, port: [PUBLIC, METADATA],
        )


def test_loopback_is_refused_unless_private_urls_are_allowed(tmp_path: Path) -> None:
    with pytest.raises(URLRefused) as caught:
        check_webhook_url(
            "http://127.0.0.1:8080/hook",
            settings_for(tmp_path, allow_private_urls=False),
        )
    message = caught.value.message
    assert message.startswith("webhook URL http://127.0.0.1:8080/hook")
    assert "a loopback address" in message
    assert "RETOUCH_ALLOW_PRIVATE_URLS=true" in message
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://hooks.example/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:pass@hooks.example/hook", "without them"),
        ("http://public.example@10.0.0.1/hook", "without them"),
    ],
)
def test_bad_schemes_and_credentials_are_refused(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(URLRefused, match="webhook URL") as caught:
        check_webhook_url(url, settings_for(tmp_path), lambda host, port: [PUBLIC])
    assert says in caught.value.message


def test_a_host_that_does_not_resolve_is_refused(tmp_path: Path) -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(InvalidInput, match="webhook URL https://nowhere.example/hook cannot be called") as caught:
        check_webhook_url("https://nowhere.example/hook", settings_for(tmp_path), resolver)
    assert "could not fetch" not in caught.value.message
    assert "give a URL whose host name resolves" in caught.value.message


def test_an_invalid_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="webhook URL .* is not a valid URL"):
        check_webhook_url("http://[::1", settings_for(tmp_path))


def test_loopback_is_accepted_when_private_urls_are_allowed(tmp_path: Path, serve: Callable[..., Receiver]) -> None:
    receiver = serve()
    assert check_webhook_url(f"  {receiver.url}  ", settings_for(tmp_path)) == receiver.url


def test_public_addresses_are_accepted(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, allow_private_urls=False)
    assert check_webhook_url("https://hooks.example/hook", settings, lambda host, port: [PUBLIC]) == "https://hooks.example/hook"


@pytest.mark.parametrize(("first_answer", "allow_private"), [(PUBLIC, False), ("127.0.0.1", True)])
def test_a_url_refused_at_delivery_is_not_posted(
    tmp_path: Path,
    serve: Callable[..., Receiver],
    make_dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
    first_answer: str,
    allow_private: bool,
) -> None:
    """DNS rebinding: the host answers an allowed address at submit and the metadata address at delivery."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    # With loopback at submit the receiver is really there, so "not posted" is seen, not assumed.
    receiver = serve()
    answers = iter([[first_answer]])

    def rebinding_resolver(host: str, port: int) -> list[str]:
        return next(answers, [METADATA])

    url = f"http://hooks.example:{receiver.port}/hook"
    settings = settings_for(tmp_path, allow_private_urls=allow_private)
    check_webhook_url(url, settings, rebinding_resolver)
    dispatcher = make_dispatcher(settings, resolver=rebinding_resolver)
    dispatcher.deliver(url, "key-1", "req-rebound", BODY)
    wait_until(given_up(caplog, "req-rebound"))
    message = next(record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    assert "refused at delivery" in message
    assert "cloud metadata address" in message
    assert "after 1 attempt(s)" in message
    assert receiver.count() == 0


# -- closing ----------------------------------------------------------------------------------------------------


def test_close_does_not_wait_for_pending_retries(tmp_path: Path, serve: Callable[..., Receiver], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve(answer=lambda number: 500)
    dispatcher = WebhookDispatcher(settings_for(tmp_path, webhook_backoff=60.0), lambda owner_key: SECRET)
    dispatcher.deliver(receiver.url, "key-1", "req-pending", BODY)
    wait_until(lambda: logged(caplog, "next attempt in 60 s"))
    started = time.monotonic()
    dispatcher.close(timeout=5.0)
    assert time.monotonic() - started < 2.0
    assert logged(caplog, "webhook of request req-pending", logging.WARNING)
    assert logged(caplog, "the server stopped before the next attempt", logging.WARNING)
    assert receiver.count() == 1
    # Closing twice is harmless.
    dispatcher.close()


def test_close_gives_up_on_an_attempt_that_outlasts_its_timeout(
    tmp_path: Path, serve: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = serve(delay=lambda number: 3.0)
    dispatcher = WebhookDispatcher(settings_for(tmp_path), lambda owner_key: SECRET, threads=1)
    dispatcher.deliver(receiver.url, "key-1", "req-in-flight", BODY)
    dispatcher.deliver(receiver.url, "key-1", "req-queued", BODY)
    wait_until(lambda: receiver.count() == 1)
    started = time.monotonic()
    dispatcher.close(timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert logged(caplog, "still in progress", logging.WARNING)
    assert logged(caplog, "webhook of request req-queued", logging.WARNING)
    # The attempt left running ends (and is logged) on its own; waited for, so that it logs inside this test.
    wait_until(lambda: logged(caplog, "webhook of request req-in-flight", logging.WARNING), timeout=10)
