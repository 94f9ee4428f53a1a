"""Webhooks end to end: /v2 with `webhook`, a receiving server on loopback, the key's signing secret."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from images import b64
from polling import poll

from retouch.jobs.access import new_key
from retouch.jobs.records import Status
from retouch.jobs.webhooks import SIGNATURE_HEADER, verify


class Receiver:
    def __init__(self, status: int) -> None:
        self.status = status
        self.posts: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(({name.lower(): value for name, value in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.posts) >= count, f"{len(self.posts)} webhook calls, expected {count}"


@pytest.fixture
def receiver() -> Iterator[Any]:
    made: list[Receiver] = []

    def start(status: int = 200) -> Receiver:
        made.append(Receiver(status))
        return made[-1]

    yield start
    for each in made:
        each.server.shutdown()
        each.server.server_close()


def keyed_client(make_client: Any, backend_settings: dict[str, str], **overrides: Any) -> Any:
    return make_client(auth=True, allow_private_urls=True, webhook_backoff=0.05, **{**backend_settings, **overrides})


def make_key(client: Any, credits: float | None = None) -> tuple[str, str]:
    service = client.app.state.service
    key, secret = new_key("alice", None, credits, None, service.slugs, time.time())
    service.store.create_key(key)
    return secret, key.webhook_secret


def test_called_once_signed_with_the_result_body(make_client, backend_settings, receiver, photo):
    hook = receiver()
    with keyed_client(make_client, backend_settings) as client:
        secret, signing = make_key(client)
        headers = {"x-api-key": secret}
        submitted = client.post("/v2/fake-invert", json={"image": b64(photo), "webhook": hook.url}, headers=headers).json()
        poll(client, submitted["request_id"], lambda body: body["status"] == "COMPLETED", headers=headers)
        failed = client.post("/v2/fake-exc-in-predict", json={"image": b64(photo), "webhook": hook.url}, headers=headers).json()
        hook.wait_for(2)
        time.sleep(0.3)
        assert len(hook.posts) == 2
        by_id = {json.loads(body)["request_id"]: (headers_, body) for headers_, body in hook.posts}
        received_headers, body = by_id[submitted["request_id"]]
        assert verify(signing, received_headers[SIGNATURE_HEADER.lower()], body)
        assert not verify("whsec_wrong", received_headers[SIGNATURE_HEADER.lower()], body)
        result = json.loads(body)
        assert result["status"] == "COMPLETED" and result["metrics"]["engine"]
        assert result["output"] == f"http://testserver/v2/requests/{submitted['request_id']}/output/0"
        assert client.get(result["output"], headers=headers).status_code == 200
        _, failed_body = by_id[failed["request_id"]]
        assert json.loads(failed_body)["status"] == "FAILED" and "error" in json.loads(failed_body)


def test_a_webhook_that_fails_never_changes_the_request(make_client, backend_settings, receiver, photo):
    hook = receiver(status=500)
    with keyed_client(make_client, backend_settings, webhook_attempts=3) as client:
        secret, _ = make_key(client)
        headers = {"x-api-key": secret}
        submitted = client.post("/v2/fake-invert", json={"image": b64(photo), "webhook": hook.url}, headers=headers).json()
        hook.wait_for(3)
        time.sleep(0.5)
        assert len(hook.posts) == 3
        assert client.get(f"/v2/requests/{submitted['request_id']}", headers=headers).json()["status"] == "COMPLETED"


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "ftp://example.com/hook", "not a url"])
def test_a_refused_webhook_is_a_400_before_any_charge(make_client, backend_settings, photo, url):
    with keyed_client(make_client, backend_settings, workers=0, idle_worker=True) as client:
        secret, _ = make_key(client, credits=1)
        answer = client.post("/v2/fake-invert", json={"image": b64(photo), "webhook": url}, headers={"x-api-key": secret})
        assert answer.status_code == 400, answer.text
        assert "webhook" in answer.json()["error"]
        assert answer.headers["x-remaining-credits"] == "1"
        assert client.app.state.service.store.count(Status.QUEUED) == 0


def test_a_private_webhook_is_refused_unless_allowed(make_client, receiver, photo):
    hook = receiver()
    with make_client(workers=0, idle_worker=True) as client:
        answer = client.post("/v2/fake-invert", json={"image": b64(photo), "webhook": hook.url})
        assert answer.status_code == 400 and "RETOUCH_ALLOW_PRIVATE_URLS" in answer.json()["error"]


def test_without_keys_the_webhook_is_signed_with_the_server_secret(make_client, receiver, photo):
    hook = receiver()
    with make_client(allow_private_urls=True, webhook_secret="whsec_server") as client:
        client.post("/v2/fake-invert", json={"image": b64(photo), "webhook": hook.url})
        hook.wait_for(1)
        headers, body = hook.posts[0]
        assert verify("whsec_server", headers[SIGNATURE_HEADER.lower()], body)
