"""Every status code of the contract that this service produces, each with an `error` body."""

from __future__ import annotations

import time

import numpy as np
import pytest
from images import b64, decode

IMAGE_ONLY = "fake-invert"


def assert_error(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    assert response.headers.get("x-request-id")
    return body["error"]


def test_unknown_parameter_is_named(client, photo):
    response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(photo), "colour": "red"})
    assert_error(response, 400, "unknown parameter 'colour'")


def test_out_of_range_names_value_and_range(client, photo):
    response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(photo), "samples": 9})
    assert_error(response, 400, "samples=9", "1 to 4")


def test_wrong_type_names_value_and_expected_type(client, photo):
    response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(photo), "samples": "many"})
    assert_error(response, 400, "samples='many'", "integer", "1 to 4")


def test_missing_required_parameter(client):
    assert_error(client.post(f"/v1/{IMAGE_ONLY}", json={}), 400, "missing required parameter 'image'")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b"", "empty"), (b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object")],
)
def test_body_that_is_not_a_json_object(client, body, fragment):
    response = client.post(f"/v1/{IMAGE_ONLY}", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, fragment)


def test_every_real_slug_validates_its_input(client):
    """Validation answers for all five slugs: a bad value is 400 before anything else."""
    cases = {
        "magic-eraser": {"image": "x", "mask": "y", "grow_mask": 101},
        "background-eraser": {"image": "x", "grow_mask": 51},
        "automatic-mask-generator": {"image": "x", "prompt": "cat", "threshold": 1.5},
        "inpaint-mask-maker": {"image": "x", "prompt": "cat", "iou_thresh": -0.1},
        "bg-replace": {"image": "x", "ref_image": "y", "prompt": "beach", "num_inference_steps": 10},
    }
    for slug, params in cases.items():
        name = next(key for key in params if key not in ("image", "mask", "ref_image", "prompt"))
        assert_error(client.post(f"/v1/{slug}", json=params), 400, f"{name}=")
        assert_error(client.post(f"/v2/{slug}", json=params), 400, f"{name}=")


def test_undecodable_image(client):
    response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": "aGVsbG8gd29ybGQ="})
    assert_error(response, 400, "image")


def test_empty_image_string(client):
    assert_error(client.post(f"/v1/{IMAGE_ONLY}", json={"image": ""}), 400, "image", "empty")


def test_loopback_url_refused_by_default(client):
    response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": "http://127.0.0.1:9/cat.png"})
    assert_error(response, 400, "image")


def test_image_over_pixel_limit(make_client):
    big = np.zeros((80, 80, 3), np.uint8)
    with make_client(max_image_pixels=64 * 64) as client:
        response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(big)})
    assert_error(response, 400, "80x80", str(64 * 64))


def test_mask_of_another_aspect_ratio(client, photo):
    mask = np.zeros((30, 30), np.uint8)
    response = client.post("/v1/fake-mask-echo", json={"image": b64(photo), "mask": b64(mask)})
    assert_error(response, 400, "mask", "aspect")


def test_unknown_slug_is_404(client, photo):
    for version in ("v1", "v2"):
        response = client.post(f"/{version}/no-such-model", json={"image": b64(photo)})
        assert_error(response, 404, "no-such-model", "background-eraser")


def test_unknown_request_id_is_404(client):
    for path in ("/v2/requests/abc/status", "/v2/requests/abc", "/v2/requests/abc/output/0"):
        assert_error(client.get(path), 404, "abc")


def test_unknown_route_and_wrong_method_have_error_bodies(client):
    assert_error(client.get("/nothing/here"), 404, "/nothing/here")
    assert_error(client.get(f"/v1/{IMAGE_ONLY}"), 405, "GET")


def test_body_over_limit_is_413_from_content_length(make_client):
    with make_client(max_body_bytes=4096) as client:
        response = client.post(f"/v1/{IMAGE_ONLY}", content=b"x" * 10_000, headers={"content-type": "application/json"})
    assert_error(response, 413, "4096")


def test_body_over_limit_is_413_while_streaming(make_client):
    """A chunked body (no Content-Length) is cut off once it passes the limit, before the rest arrives."""
    import asyncio

    chunks_sent = 0
    total_chunks = 100
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal chunks_sent
        chunks_sent += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": chunks_sent < total_chunks}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/fake-invert", "raw_path": b"/v1/fake-invert", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {"request_id": "x"},
    }  # fmt: skip
    with make_client(max_body_bytes=4096) as client:
        asyncio.run(client.app(scope, receive, send))
    start = next(message for message in messages if message["type"] == "http.response.start")
    assert start["status"] == 413
    assert chunks_sent <= 6


def test_failed_request_is_422_with_its_error_and_no_internals(client, photo):
    response = client.post("/v1/fake-exc-in-predict", json={"image": b64(photo)})
    error = assert_error(response, 422, "internal error")
    body = response.json()
    assert body["status"] == "FAILED"
    assert body["request_id"] in error
    assert "secret internal detail" not in response.text
    for path in (f"/v2/requests/{body['request_id']}/status", f"/v2/requests/{body['request_id']}"):
        assert_error(client.get(path), 422, "internal error")


def test_domain_error_while_running_keeps_its_message(client, photo):
    response = client.post("/v1/fake-refuses-in-predict", json={"image": b64(photo)})
    assert_error(response, 422, "nothing matching 'unicorn' was found")


def test_full_queue_is_429_with_retry_after(make_client, photo):
    with make_client(workers=0, idle_worker=True, max_queued=1) as client:
        assert client.post(f"/v2/{IMAGE_ONLY}", json={"image": b64(photo)}).status_code == 200
        response = client.post(f"/v2/{IMAGE_ONLY}", json={"image": b64(photo)})
    assert_error(response, 429, "queue is full")
    assert int(response.headers["retry-after"]) > 0


def test_internal_error_is_500_with_request_id_and_no_trace(client, photo, monkeypatch):
    from fakes import Invert

    def broken(self, settings):
        raise ZeroDivisionError("secret internal detail")

    monkeypatch.setattr(Invert, "check_ready", broken)
    response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(photo)})
    error = assert_error(response, 500, response.headers["x-request-id"])
    assert "secret internal detail" not in response.text and "Traceback" not in error


def test_unbuilt_slug_is_501_naming_it(client, photo):
    response = client.post("/v1/fake-not-built-yet", json={"image": b64(photo)})
    assert_error(response, 501, "fake-not-built-yet")


def test_missing_weights_are_503_naming_the_command(client, photo):
    assert_error(client.post("/v1/fake-missing-weights", json={"image": b64(photo)}), 503, "retouch models install")
    # The real background-eraser with an empty weights folder.
    assert_error(client.post("/v1/background-eraser", json={"image": b64(photo)}), 503, "retouch models install")


def test_readyz_is_503_without_a_worker(make_client):
    with make_client(workers=0) as client:
        assert_error(client.get("/readyz"), 503, "retouch worker")
    with make_client(workers=1) as client:
        assert client.get("/readyz").status_code == 200


def test_sync_timeout_is_504_and_the_job_goes_on(make_client, photo):
    with make_client(sync_timeout=0.3) as client:
        response = client.post("/v1/fake-slow", json={"image": b64(photo), "seconds": 1.5})
        assert_error(response, 504, "poll")
        body = response.json()
        assert body["status_url"].startswith("http://testserver/v2/requests/")
        deadline = time.monotonic() + 20
        status = client.get(body["status_url"]).json()
        while status["status"] != "COMPLETED" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = client.get(body["status_url"]).json()
        assert status["status"] == "COMPLETED"
        output = client.get(client.get(body["response_url"]).json()["output"])
        assert output.status_code == 200
        assert output.headers["content-type"] == "image/jpeg"
        assert decode(output.content).shape == photo.shape


def test_framework_validation_errors_are_400_with_error_key(client):
    assert_error(client.get("/v2/requests/abc/output/first"), 400, "index")


def test_url_that_is_not_an_image(make_client, image_server):
    base = image_server({"/page.html": b"<!doctype html><html><body>hello</body></html>"})
    with make_client(allow_private_urls=True) as client:
        response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": f"{base}/page.html"})
    assert_error(response, 400, "not an image")


def test_url_that_does_not_exist(make_client, image_server):
    base = image_server({})
    with make_client(allow_private_urls=True) as client:
        response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": f"{base}/missing.png"})
    assert_error(response, 400, "404")


def test_deeply_nested_json_is_400(client):
    body = b"[" * 100_000 + b"]" * 100_000
    assert_error(client.post(f"/v1/{IMAGE_ONLY}", content=body, headers={"content-type": "application/json"}), 400, "nested")


@pytest.mark.parametrize("wrong", [{"samples": "2"}, {"samples": 2.5}, {"base64": 1}, {"base64": "yes"}])
def test_json_types_must_match(client, photo, wrong):
    name = next(iter(wrong))
    assert_error(client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(photo), **wrong}), 400, f"{name}=")


def test_queue_that_cannot_take_a_job_is_503_and_the_record_says_failed(client, photo, monkeypatch):
    from retouch.jobs.service import JobService

    service: JobService = client.app.state.service

    def broken_enqueue(slug: str, job_id: str) -> None:
        raise OSError("database is locked")

    monkeypatch.setattr(service.queue, "enqueue", broken_enqueue)
    response = client.post(f"/v2/{IMAGE_ONLY}", json={"image": b64(photo)})
    assert_error(response, 503, "try again")
    request_id = response.headers["x-request-id"]
    assert client.get(f"/v2/requests/{request_id}/status").json()["status"] == "FAILED"


def test_engine_that_returns_no_image_fails_the_request(client, photo, monkeypatch):
    from fakes import Invert

    from retouch.models.base import ModelResult

    monkeypatch.setattr(Invert, "run", lambda self, params, images, engine, context: ModelResult(images=[]))
    assert_error(client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(photo)}), 422, "no image")


def test_text_mask_slugs_without_the_detector_are_503_naming_npm(client, photo):
    for slug in ("automatic-mask-generator", "inpaint-mask-maker"):
        error = assert_error(client.post(f"/v1/{slug}", json={"image": b64(photo), "prompt": "cat"}), 503, "retouch models install centernet")
        assert "npm" in error


def test_a_whole_number_written_as_a_float_is_an_integer(client, photo):
    """JSON Schema's "integer" admits 2.0, and so does the intake."""
    response = client.post(f"/v1/{IMAGE_ONLY}", json={"image": b64(photo), "samples": 2.0, "base64": True})
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 2


def test_a_path_that_exists_for_other_methods_is_405_with_allow(client):
    for method, path, allowed in (("POST", "/v1/models", "GET"), ("PUT", "/healthz", "GET"), ("GET", f"/v1/{IMAGE_ONLY}", "POST")):
        response = client.request(method, path)
        assert_error(response, 405, method)
        assert response.headers["allow"] == allowed
