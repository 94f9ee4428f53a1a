"""Keys, permissions, credits, rate limits and idempotency: every answer with its status and `error`,
on both backends."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import pytest
from images import b64
from polling import poll

from retouch.jobs.access import new_key
from retouch.jobs.records import ApiKey


def make_key(
    client: Any,
    name: str = "alice",
    models: tuple[str, ...] | None = None,
    credits: float | None = None,
    rate: str | None = None,
) -> str:
    service = client.app.state.service
    key, secret = new_key(name, models, credits, rate, service.slugs, time.time())
    service.store.create_key(key)
    return secret


def stored_key(client: Any, name: str) -> ApiKey:
    key = client.app.state.service.store.key_by_name(name)
    assert key is not None
    return key


def ended(client: Any, request_id: str, secret: str) -> dict:
    return poll(
        client,
        request_id,
        lambda body: body["status"] in ("COMPLETED", "FAILED", "CANCELED"),
        headers={"x-api-key": secret},
    )


@pytest.fixture
def keyed(make_client, backend_settings):
    """`with keyed(**overrides) as client:` a server with keys on, on both backends."""

    def factory(**overrides: Any) -> Any:
        return make_client(auth=True, **{**backend_settings, **overrides})

    return factory


def test_missing_unknown_and_revoked_keys_are_401(keyed, photo):
    with keyed() as client:
        body = {"image": b64(photo)}
        missing = client.post("/v1/fake-invert", json=body)
        assert missing.status_code == 401
        assert "x-api-key" in missing.json()["error"]
        assert "x-remaining-credits" not in missing.headers
        unknown = client.post("/v1/fake-invert", json=body, headers={"x-api-key": "rt_not-a-key"})
        assert unknown.status_code == 401 and "not known" in unknown.json()["error"]
        secret = make_key(client)
        assert client.post("/v1/fake-invert", json=body, headers={"x-api-key": secret}).status_code == 200
        assert client.get("/v1/models", headers={"x-api-key": secret}).status_code == 200
        assert client.get("/v1/models").status_code == 401
        client.app.state.service.store.delete_key("alice")
        revoked = client.post("/v1/fake-invert", json=body, headers={"x-api-key": secret})
        assert revoked.status_code == 401, revoked.text


def test_a_key_is_random_prefixed_and_stored_only_as_its_hash(keyed):
    with keyed() as client:
        first, second = make_key(client, "one"), make_key(client, "two")
        assert first.startswith("rt_") and second.startswith("rt_") and first != second
        assert len(first) - len("rt_") >= 32  # 24 random bytes, base64: 192 bits
        stored = [key.__dict__ for key in client.app.state.service.store.list_keys()]
        assert all(first not in str(entry) and second not in str(entry) for entry in stored)


def test_open_routes_need_no_key(keyed):
    with keyed() as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
    with keyed(metrics_enabled=False) as client:
        response = client.get("/metrics")
        assert response.status_code == 404 and "RETOUCH_METRICS_ENABLED" in response.json()["error"]


def test_a_slug_the_key_may_not_use_is_403(keyed, photo):
    with keyed() as client:
        secret = make_key(client, models=("fake-invert",), credits=5)
        response = client.post(
            "/v2/fake-mask-echo",
            json={"image": b64(photo)},
            headers={"x-api-key": secret},
        )
        assert response.status_code == 403
        assert "fake-mask-echo" in response.json()["error"] and "fake-invert" in response.json()["error"]
        assert response.headers["x-remaining-credits"] == "5"
        assert stored_key(client, "alice").credits == 5


def test_credits_run_out_mid_batch(keyed, photo):
    with keyed(workers=0, idle_worker=True) as client:
        secret = make_key(client, credits=3)
        answers = [
            client.post(
                "/v2/fake-invert",
                json={"image": b64(photo)},
                headers={"x-api-key": secret},
            )
            for _ in range(4)
        ]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 406]
        assert [answer.headers["x-remaining-credits"] for answer in answers] == [
            "2",
            "1",
            "0",
            "0",
        ]
        error = answers[3].json()["error"]
        assert "0 credits left" in error and "costs 1" in error
        assert stored_key(client, "alice").credits == 0


def test_prices_are_per_slug(keyed, photo):
    with keyed(workers=0, idle_worker=True, prices={"fake-invert": 2.5}) as client:
        secret = make_key(client, credits=6)
        first = client.post("/v2/fake-invert", json={"image": b64(photo)}, headers={"x-api-key": secret})
        assert first.headers["x-remaining-credits"] == "3.5"
        second = client.post("/v2/fake-invert", json={"image": b64(photo)}, headers={"x-api-key": secret})
        assert second.headers["x-remaining-credits"] == "1"
        assert (
            client.post(
                "/v2/fake-invert",
                json={"image": b64(photo)},
                headers={"x-api-key": secret},
            ).status_code
            == 406
        )
        cheaper = client.post(
            "/v2/fake-exc-in-predict",
            json={"image": b64(photo)},
            headers={"x-api-key": secret},
        )
        assert cheaper.status_code == 200 and cheaper.headers["x-remaining-credits"] == "0"


def test_an_engine_failure_is_refunded_and_a_bad_request_is_not(keyed, photo):
    with keyed() as client:
        secret = make_key(client, credits=2)
        headers = {"x-api-key": secret}
        crashed = client.post("/v2/fake-exc-in-predict", json={"image": b64(photo)}, headers=headers).json()
        assert ended(client, crashed["request_id"], secret)["status"] == "FAILED"
        assert stored_key(client, "alice").credits == 2
        refused = client.post("/v2/fake-refuses-in-predict", json={"image": b64(photo)}, headers=headers).json()
        assert ended(client, refused["request_id"], secret)["status"] == "FAILED"
        assert stored_key(client, "alice").credits == 1
        invalid = client.post(
            "/v2/fake-invert",
            json={"image": b64(photo), "output_format": "gif"},
            headers=headers,
        )
        assert invalid.status_code == 400 and stored_key(client, "alice").credits == 1


def test_an_unlimited_key_is_never_charged(keyed, photo):
    with keyed(workers=0, idle_worker=True) as client:
        secret = make_key(client)
        response = client.post("/v2/fake-invert", json={"image": b64(photo)}, headers={"x-api-key": secret})
        assert response.status_code == 200 and response.headers["x-remaining-credits"] == "unlimited"


def test_over_its_rate_is_429_with_retry_after(keyed, photo):
    with keyed(workers=0, idle_worker=True) as client:
        secret = make_key(client, rate="2/minute")
        answers = [
            client.post(
                "/v2/fake-invert",
                json={"image": b64(photo)},
                headers={"x-api-key": secret},
            )
            for _ in range(3)
        ]
        assert [answer.status_code for answer in answers] == [200, 200, 429]
        # The window opened with the first request a moment ago: the wait is the rest of its minute.
        wait = int(answers[2].headers["Retry-After"])
        assert 55 <= wait <= 60
        assert "2/minute" in answers[2].json()["error"] and f"try again in {wait} s" in answers[2].json()["error"]
        other = make_key(client, "bob", rate="2/minute")
        assert (
            client.post(
                "/v2/fake-invert",
                json={"image": b64(photo)},
                headers={"x-api-key": other},
            ).status_code
            == 200
        )


def test_two_replicas_share_one_rate_limit(make_client, redis_url, tmp_path, photo):
    prefix = f"t{time.monotonic_ns()}"
    shared = {
        "auth": True,
        "queue_url": redis_url,
        "redis_prefix": prefix,
        "workers": 0,
        "idle_worker": True,
    }
    with (
        make_client(home=tmp_path / "a", **shared) as first,
        make_client(home=tmp_path / "b", **shared) as second,
    ):
        secret = make_key(first, rate="3/minute")
        codes = [
            replica.post(
                "/v2/fake-invert",
                json={"image": b64(photo)},
                headers={"x-api-key": secret},
            ).status_code
            for replica in (first, second, first, second)
        ]
        assert codes == [200, 200, 200, 429]


def _concurrent_charges(clients: list[Any], secret: str, photo, requests: int = 50) -> list[int]:
    body = {"image": b64(photo)}

    def submit(index: int) -> int:
        return clients[index % len(clients)].post("/v2/fake-invert", json=body, headers={"x-api-key": secret}).status_code

    with ThreadPoolExecutor(max_workers=requests) as pool:
        return list(pool.map(submit, range(requests)))


def test_fifty_concurrent_requests_on_ten_credits_accept_exactly_ten(keyed, photo):
    with keyed(workers=0, idle_worker=True) as client:
        secret = make_key(client, credits=10)
        codes = _concurrent_charges([client], secret, photo)
        assert codes.count(200) == 10 and codes.count(406) == 40, codes
        assert stored_key(client, "alice").credits == 0


def test_fifty_concurrent_requests_across_two_replicas_accept_exactly_ten(make_client, redis_url, tmp_path, photo):
    shared = {
        "auth": True,
        "queue_url": redis_url,
        "redis_prefix": f"t{time.monotonic_ns()}",
        "workers": 0,
        "idle_worker": True,
    }
    with ExitStack() as stack:
        replicas = [stack.enter_context(make_client(home=tmp_path / name, **shared)) for name in ("a", "b")]
        secret = make_key(replicas[0], credits=10)
        codes = _concurrent_charges(replicas, secret, photo)
        assert codes.count(200) == 10 and codes.count(406) == 40, codes
        assert stored_key(replicas[1], "alice").credits == 0


def test_an_idempotent_replay_returns_the_first_request_and_charges_once(keyed, photo):
    with keyed(workers=0, idle_worker=True) as client:
        secret = make_key(client, credits=5)
        headers = {"x-api-key": secret, "Idempotency-Key": "order-17"}
        first = client.post("/v2/fake-invert", json={"image": b64(photo)}, headers=headers)
        again = client.post("/v2/fake-invert", json={"image": b64(photo)}, headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json()["request_id"] == again.json()["request_id"]
        assert again.headers["x-remaining-credits"] == "4"
        assert stored_key(client, "alice").credits == 4
        conflict = client.post("/v2/fake-invert", json={"image": b64(255 - photo)}, headers=headers)
        assert conflict.status_code == 409 and "order-17" in conflict.json()["error"]
        other = make_key(client, "bob", credits=5)
        separate = client.post(
            "/v2/fake-invert",
            json={"image": b64(photo)},
            headers={**headers, "x-api-key": other},
        )
        assert separate.json()["request_id"] != first.json()["request_id"]


def test_concurrent_replays_make_one_job(keyed, photo):
    with keyed(workers=0, idle_worker=True) as client:
        secret = make_key(client, credits=20)
        headers = {"x-api-key": secret, "Idempotency-Key": "same"}
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(
                pool.map(
                    lambda _: client.post("/v2/fake-invert", json={"image": b64(photo)}, headers=headers),
                    range(10),
                )
            )
        assert {answer.status_code for answer in answers} == {200}
        assert len({answer.json()["request_id"] for answer in answers}) == 1
        assert stored_key(client, "alice").credits == 19


def test_another_keys_request_is_404(keyed, photo):
    with keyed() as client:
        owner, stranger = make_key(client, "owner"), make_key(client, "stranger")
        request_id = client.post("/v2/fake-invert", json={"image": b64(photo)}, headers={"x-api-key": owner}).json()["request_id"]
        assert ended(client, request_id, owner)["status"] == "COMPLETED"
        for path in (
            f"/v2/requests/{request_id}/status",
            f"/v2/requests/{request_id}",
            f"/v2/requests/{request_id}/output/0",
        ):
            assert client.get(path, headers={"x-api-key": owner}).status_code == 200
            assert client.get(path, headers={"x-api-key": stranger}).status_code == 404
            assert client.get(path).status_code == 401
        assert client.delete(f"/v2/requests/{request_id}", headers={"x-api-key": stranger}).status_code == 404


def test_the_request_log_never_contains_a_key(keyed, photo, caplog):
    caplog.set_level(logging.DEBUG)
    with keyed() as client:
        secret = make_key(client)
        client.post("/v1/fake-invert", json={"image": b64(photo)}, headers={"x-api-key": secret})
        client.post(
            "/v1/fake-invert",
            json={"image": b64(photo)},
            headers={"x-api-key": secret + "x"},
        )
    assert caplog.records
    assert all(secret not in record.getMessage() and secret not in str(record.__dict__) for record in caplog.records)


def test_cors_is_off_by_default_and_never_credentials_with_a_wildcard(make_client):
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    with make_client() as client:
        assert "access-control-allow-origin" not in client.options("/v2/fake-invert", headers=preflight).headers
    with make_client(cors_origins=["https://app.example.com"]) as client:
        answer = client.options("/v2/fake-invert", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert "x-api-key" in answer.headers["access-control-allow-headers"]
        assert (
            "access-control-allow-origin"
            not in client.options(
                "/v2/fake-invert",
                headers={**preflight, "Origin": "https://evil.example"},
            ).headers
        )
    with make_client(cors_origins=["*"]) as client:
        answer = client.options("/v2/fake-invert", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
