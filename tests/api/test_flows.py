"""The /v1 and /v2 flows of the contract, on fake engines; the job flows on both backends."""

from __future__ import annotations

import base64
import time

import numpy as np
from images import b64, decode, png_bytes

from retouch.jobs.service import JobService


def inverted(image: np.ndarray) -> np.ndarray:
    return 255 - image


def wait_completed(client, status_url: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url)
        body = response.json()
        if body["status"] in ("COMPLETED", "FAILED", "CANCELED") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_v1_returns_image_bytes(make_client, backend_settings, photo):
    with make_client(**backend_settings) as client:
        _test_v1_returns_image_bytes(client, photo)


def _test_v1_returns_image_bytes(client, photo):
    response = client.post("/v1/fake-invert", json={"image": b64(photo), "output_format": "png"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert np.array_equal(decode(response.content), inverted(photo))


def test_v1_default_format_is_jpeg_for_opaque_photos(client, photo):
    response = client.post("/v1/fake-invert", json={"image": b64(photo)})
    assert response.headers["content-type"] == "image/jpeg"
    assert np.abs(decode(response.content).astype(int) - inverted(photo)).mean() < 3


def test_v1_alpha_stays_png(client, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 100, np.uint8)])
    response = client.post("/v1/fake-invert", json={"image": b64(rgba)})
    assert response.headers["content-type"] == "image/png"
    result = decode(response.content)
    assert result.shape == rgba.shape and np.all(result[..., 3] == 100)


def test_v1_base64_json_with_every_sample(make_client, backend_settings, photo):
    with make_client(**backend_settings) as client:
        _test_v1_base64_json_with_every_sample(client, photo)


def _test_v1_base64_json_with_every_sample(client, photo):
    response = client.post("/v1/fake-invert", json={"image": b64(photo), "base64": True, "samples": 2, "output_format": "png"})
    body = response.json()
    assert body["status"] == "COMPLETED"
    assert len(body["images"]) == 2 and body["image"] == body["images"][0]
    assert np.array_equal(decode(base64.b64decode(body["image"])), inverted(photo))
    assert isinstance(body["metrics"]["inference_time"], float)
    assert body["metrics"]["engine"] == "fake"


def test_v2_flow_with_absolute_urls(make_client, backend_settings, photo):
    with make_client(**backend_settings) as client:
        _test_v2_flow_with_absolute_urls(client, photo)


def _test_v2_flow_with_absolute_urls(client, photo):
    submitted = client.post("/v2/fake-invert", json={"image": b64(photo), "output_format": "png", "samples": 2})
    assert submitted.status_code == 200
    body = submitted.json()
    request_id = body["request_id"]
    assert body["status"] == "QUEUED"
    assert submitted.headers["x-request-id"] == request_id
    assert body["status_url"] == f"http://testserver/v2/requests/{request_id}/status"
    assert body["response_url"] == f"http://testserver/v2/requests/{request_id}"
    status = wait_completed(client, body["status_url"])
    assert status["status"] == "COMPLETED"
    metrics = status["metrics"]
    for key in ("inference_time", "queue_time", "total_time"):
        assert isinstance(metrics[key], float) and metrics[key] >= 0
    assert metrics["engine"] == "fake" and metrics["seed"] == 7
    result = client.get(body["response_url"]).json()
    assert result["status"] == "COMPLETED" and result["request_id"] == request_id
    assert result["output"] == f"http://testserver/v2/requests/{request_id}/output/0"
    assert result["outputs"][1].endswith("/output/1")
    image = client.get(result["output"])
    assert image.headers["content-type"] == "image/png"
    assert np.array_equal(decode(image.content), inverted(photo))
    assert client.get(f"/v2/requests/{request_id}/output/2").status_code == 404


def test_v2_base64_output_is_the_string(make_client, backend_settings, photo):
    with make_client(**backend_settings) as client:
        _test_v2_base64_output_is_the_string(client, photo)


def _test_v2_base64_output_is_the_string(client, photo):
    body = client.post("/v2/fake-invert", json={"image": b64(photo), "base64": True, "output_format": "png"}).json()
    wait_completed(client, body["status_url"])
    result = client.get(body["response_url"]).json()
    assert np.array_equal(decode(base64.b64decode(result["output"])), inverted(photo))


def test_urls_follow_forwarded_headers(client, photo):
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "images.example.com"}
    body = client.post("/v2/fake-invert", json={"image": b64(photo)}, headers=headers).json()
    assert body["status_url"].startswith("https://images.example.com/v2/requests/")


def test_urls_follow_public_base_url(make_client, photo):
    with make_client(public_base_url="https://retouch.example.org/") as client:
        body = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()
    assert body["response_url"].startswith("https://retouch.example.org/v2/requests/")


def test_multipart_upload_with_typed_fields(client, photo):
    files = {"image": ("photo.png", png_bytes(photo), "image/png")}
    data = {"samples": "2", "base64": "true", "output_format": "png"}
    response = client.post("/v1/fake-invert", files=files, data=data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 2
    assert np.array_equal(decode(base64.b64decode(body["image"])), inverted(photo))


def test_multipart_refuses_a_file_for_a_non_image_parameter(client, photo):
    files = {"image": ("a.png", png_bytes(photo), "image/png"), "samples": ("b.png", b"2", "text/plain")}
    response = client.post("/v1/fake-invert", files=files)
    assert response.status_code == 400 and "samples" in response.json()["error"]


def test_mask_of_same_aspect_is_resized_to_the_image(client, photo):
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 15:20] = 255
    response = client.post("/v1/fake-mask-echo", json={"image": b64(photo), "mask": b64(mask)})
    result = decode(response.content)
    assert result.shape == photo.shape[:2]
    assert set(np.unique(result)) == {0, 255}
    assert result[15, 35] == 0 and result[0, 0] == 255


def test_data_uri_input(client, photo):
    uri = "data:image/png;base64," + b64(photo)
    response = client.post("/v1/fake-invert", json={"image": uri, "output_format": "png"})
    assert np.array_equal(decode(response.content), inverted(photo))


def test_image_url_input_on_a_trusted_network(make_client, photo, image_server):
    url = image_server({"/photo.png": png_bytes(photo)}) + "/photo.png"
    with make_client(allow_private_urls=True) as client:
        response = client.post("/v1/fake-invert", json={"image": url, "output_format": "png"})
    assert response.status_code == 200, response.text
    assert np.array_equal(decode(response.content), inverted(photo))


def test_results_expire_after_retention_with_their_images(make_client, backend_settings, photo):
    with make_client(retention=0.5, **backend_settings) as client:
        submitted = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()
        request_id = submitted["request_id"]
        assert wait_completed(client, submitted["status_url"])["status"] == "COMPLETED"
        service: JobService = client.app.state.service
        record = service.store.get(request_id)
        assert service.blobs.get(request_id, record.outputs[0].name) is not None
        assert record.inputs and all(service.blobs.get(request_id, name) is None for name in record.inputs)
        time.sleep(0.8)
        assert client.get(submitted["status_url"]).status_code == 404
        assert client.get(submitted["response_url"]).status_code == 404
        service.store.purge_expired(service.settings.retention)
        # Record and images together: nothing is left behind.
        assert service.store.get(request_id) is None
        assert service.blobs.get(request_id, record.outputs[0].name) is None
        assert leftovers(service, request_id) == []


def leftovers(service: JobService, request_id: str) -> list[str]:
    """Anything still stored under the request's id: files, or Redis keys."""
    if service.backend.kind == "embedded":
        folder = service.settings.jobs_path / request_id
        return [path.name for path in folder.iterdir()] if folder.exists() else []
    client = service.store.client  # type: ignore[attr-defined]
    return [key.decode() for key in client.scan_iter(match=f"{service.settings.redis_prefix}:*{request_id}*")]


def test_queued_jobs_run_after_a_restart(make_client, backend_settings, photo, tmp_path):
    home = tmp_path / "restart-home"
    with make_client(workers=0, idle_worker=True, home=home, **backend_settings) as client:
        ids = [client.post("/v2/fake-invert", json={"image": b64(photo)}).json()["request_id"] for _ in range(3)]
        assert all(client.get(f"/v2/requests/{i}/status").json()["status"] == "QUEUED" for i in ids)
    with make_client(workers=1, home=home, **backend_settings) as client:
        statuses = [wait_completed(client, f"/v2/requests/{i}/status")["status"] for i in ids]
    assert statuses == ["COMPLETED"] * 3


def test_a_job_left_processing_by_a_dead_worker_runs_again_within_two_leases(make_client, backend_settings, photo, tmp_path):
    home = tmp_path / "crash-home"
    lease = {"lease": 1.5, "store_timeout": 0.5}
    with make_client(workers=0, idle_worker=True, home=home, **lease, **backend_settings) as client:
        request_id = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()["request_id"]
        service: JobService = client.app.state.service
        # As if a worker had taken the job and died: its entry is gone and its lease is never renewed.
        assert service.queue.dequeue(("fake-invert",), timeout=1) == request_id
        assert service.store.take(request_id, "host:1:dead", lease=1.5) is not None
        taken = time.monotonic()
    with make_client(workers=1, home=home, **lease, **backend_settings) as client:
        status = wait_completed(client, f"/v2/requests/{request_id}/status")
        ran_again_after = time.monotonic() - taken
    assert status["status"] == "COMPLETED"
    assert status["metrics"]["attempts"] == 2
    assert ran_again_after < 2 * 1.5 + 1.0


def test_engine_loads_once_under_concurrent_first_requests(make_client, photo):
    from fakes import FakeEngine

    FakeEngine.setups = 0
    with make_client(workers=2) as client:
        bodies = [client.post("/v2/fake-invert", json={"image": b64(photo)}).json() for _ in range(4)]
        statuses = [wait_completed(client, body["status_url"]) for body in bodies]
        assert [status["status"] for status in statuses] == ["COMPLETED"] * 4, statuses
    assert FakeEngine.setups == 1


def test_v1_learns_of_completion_without_polling(make_client, backend_settings, photo):
    """With the record's safety-net re-check a minute apart, /v1 can only answer this soon through the notice."""
    started = time.monotonic()
    with make_client(idle_poll=60, sync_timeout=15, **backend_settings) as client:
        response = client.post("/v1/fake-invert", json={"image": b64(photo), "output_format": "png"})
    assert response.status_code == 200
    assert np.array_equal(decode(response.content), inverted(photo))
    assert time.monotonic() - started < 15


def test_models_listing(client):
    models = {entry["slug"]: entry for entry in client.get("/v1/models").json()["models"]}
    for slug in ("magic-eraser", "background-eraser", "automatic-mask-generator", "inpaint-mask-maker", "bg-replace"):
        assert slug in models
    assert models["background-eraser"]["built"] is True
    assert models["background-eraser"]["engine"] == "u2net-int8"  # the default weights: RETOUCH_BACKGROUND_ERASER_MODEL
    assert models["background-eraser"]["weights_installed"] is False
    assert models["bg-replace"]["built"] is True and models["bg-replace"]["engine"] == "composite"
    assert models["fake-not-built-yet"]["built"] is False
    assert models["background-eraser"]["input_schema"]["properties"]["grow_mask"]["maximum"] == 50
    # The client's own worker serves every built slug; one not built has none.
    assert models["fake-invert"]["live_workers"] == 1
    assert models["fake-not-built-yet"]["live_workers"] == 0


def test_openapi_documents_each_slug(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/background-eraser"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["grow_mask"]["maximum"] == 50
    assert "image" in schema["required"]
    assert "/v2/requests/{request_id}/status" in spec["paths"]
    # Every answer is described: the submit answer, the status, the result, the errors.
    submit = spec["paths"]["/v2/background-eraser"]["post"]["responses"]
    assert submit["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SubmitAnswer")
    assert submit["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    status = spec["paths"]["/v2/requests/{request_id}/status"]["get"]["responses"]
    assert status["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/StatusAnswer")
    assert status["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/EndedBadly")
    assert "delete" in spec["paths"]["/v2/requests/{request_id}"]
    schemas = spec["components"]["schemas"]
    assert {"ResultAnswer", "ModelsAnswer", "CancelAnswer", "Metrics"} <= set(schemas)
    assert "progress" in schemas["StatusAnswer"]["properties"]


def test_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
