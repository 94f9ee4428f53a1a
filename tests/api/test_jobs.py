"""The job system through HTTP, on both backends: cancel in each state, progress, deadlines, readiness,
metrics and the request log."""

from __future__ import annotations

import json
import logging
import time
import uuid

import numpy as np
import pytest
from fakes import GATES_VARIABLE, release, started_marks
from images import b64
from polling import poll

from retouch.jobs.service import JobService
from retouch.jobs.worker import WorkerPool


@pytest.fixture(autouse=True)
def gates(tmp_path, monkeypatch):
    folder = tmp_path / "gates"
    folder.mkdir()
    monkeypatch.setenv(GATES_VARIABLE, str(folder))
    return folder


def gate_name() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def wait_started(gate: str, count: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(started_marks(gate)) < count:
        assert time.monotonic() < deadline, f"the gated job {gate} did not start"
        time.sleep(0.02)


def test_cancel_a_queued_request_ends_it_at_once(make_client, backend_settings, photo):
    with make_client(workers=0, idle_worker=True, **backend_settings) as client:
        request_id = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()["request_id"]
        service: JobService = client.app.state.service
        inputs = service.store.get(request_id).inputs
        answer = client.delete(f"/v2/requests/{request_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"request_id": request_id, "status": "CANCELED", "cancel_requested": True}
        status = client.get(f"/v2/requests/{request_id}/status")
        assert status.status_code == 422
        assert status.json()["status"] == "CANCELED" and "cancelled" in status.json()["error"]
        assert client.get(f"/v2/requests/{request_id}").status_code == 422
        assert client.get(f"/v2/requests/{request_id}/output/0").status_code == 422
        assert all(service.blobs.get(request_id, name) is None for name in inputs)
        again = client.delete(f"/v2/requests/{request_id}")
        assert again.status_code == 409 and "CANCELED" in again.json()["error"]


def test_cancel_a_running_request_stops_it_at_its_next_step(make_client, backend_settings, photo):
    gate = gate_name()
    with make_client(**backend_settings) as client:
        request_id = client.post("/v2/fake-blocks-until-released", json={"image": b64(photo), "gate": gate}).json()["request_id"]
        wait_started(gate)
        assert poll(client, request_id, lambda body: body["status"] == "PROCESSING")["status"] == "PROCESSING"
        answer = client.delete(f"/v2/requests/{request_id}")
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "PROCESSING" and answer.json()["cancel_requested"] is True
        started = time.monotonic()
        ended = poll(client, request_id, lambda body: body["status"] != "PROCESSING")
        assert ended["status"] == "CANCELED", ended
        assert time.monotonic() - started < 5
        # Never released: it stopped because of the cancel, and the worker serves the next request.
        assert client.post("/v1/fake-invert", json={"image": b64(photo)}).status_code == 200


def test_a_cancel_asked_while_its_worker_was_dead_is_honoured_when_it_runs_again(make_client, backend_settings, photo):
    with make_client(workers=0, idle_worker=True, lease=1.5, store_timeout=0.5, **backend_settings) as client:
        service: JobService = client.app.state.service
        request_id = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()["request_id"]
        assert service.queue.dequeue(("fake-invert",), timeout=1) == request_id
        service.store.take(request_id, "host:1:dead", lease=1.5)
        assert client.delete(f"/v2/requests/{request_id}").status_code == 202
        pool = WorkerPool(service.settings, service.models, service.backend, ("fake-invert",), threads=1)
        pool.start(warm_up=False)
        try:
            ended = poll(client, request_id, lambda body: body["status"] not in ("QUEUED", "PROCESSING"), timeout=30)
        finally:
            pool.stop()
    assert ended["status"] == "CANCELED", ended


def test_cancel_a_finished_or_unknown_request(make_client, backend_settings, photo):
    with make_client(**backend_settings) as client:
        completed = client.post("/v1/fake-invert", json={"image": b64(photo)}).headers["x-request-id"]
        conflict = client.delete(f"/v2/requests/{completed}")
        assert conflict.status_code == 409 and "COMPLETED" in conflict.json()["error"]
        failed = client.post("/v1/fake-refuses-in-predict", json={"image": b64(photo)}).headers["x-request-id"]
        assert client.delete(f"/v2/requests/{failed}").status_code == 409
        missing = client.delete("/v2/requests/no-such-request")
        assert missing.status_code == 404 and "no-such-request" in missing.json()["error"]
        assert client.get(f"/v2/requests/{completed}/status").json()["status"] == "COMPLETED"


def test_progress_of_a_request_that_runs_in_steps(make_client, backend_settings, photo):
    with make_client(**backend_settings) as client:
        request_id = client.post("/v2/fake-counts-steps", json={"image": b64(photo), "steps": 40, "step_seconds": 0.05}).json()["request_id"]
        seen = poll(client, request_id, lambda body: 0 < (body.get("progress") or 0) < 1)
        assert seen["status"] == "PROCESSING" and 0 < seen["progress"] < 1, seen
        done = poll(client, request_id, lambda body: body["status"] == "COMPLETED")
        assert done["progress"] == 1.0 and done["metrics"]["steps"] == 40


def test_a_request_past_its_deadline_fails_and_the_worker_is_recycled(make_client, backend_settings, photo, caplog):
    gate = gate_name()
    settings = {"deadlines": {"fake-hangs-until-released": 0.5}, "lease": 3, "store_timeout": 1}
    with make_client(**settings, **backend_settings) as client:
        try:
            request_id = client.post("/v2/fake-hangs-until-released", json={"image": b64(photo), "gate": gate}).json()["request_id"]
            ended = poll(client, request_id, lambda body: body["status"] != "QUEUED" and body["status"] != "PROCESSING")
            assert ended["status"] == "FAILED", ended
            assert "deadline of 0.5 s" in ended["error"]
            # The one worker thread is stuck in the hung engine; a fresh one serves the next request.
            assert client.post("/v1/fake-invert", json={"image": b64(photo)}).status_code == 200
        finally:
            release(gate)
    # Released afterwards, the hung thread returns: its request stays FAILED.
    assert "recycling its worker" in caplog.text


def test_readyz_needs_a_live_worker_for_every_slug_with_weights(make_client, backend_settings, photo):
    with make_client(workers=0, **backend_settings) as client:
        service: JobService = client.app.state.service
        refused = client.get("/readyz")
        assert refused.status_code == 503 and "fake-invert" in refused.json()["error"]
        # A worker for only some slugs: still not ready, and the answer names what is missing.
        partial = WorkerPool(service.settings, service.models, service.backend, ("fake-invert",), threads=1)
        partial.start(warm_up=False)
        try:
            answer = client.get("/readyz")
            assert answer.status_code == 503 and "fake-invert" not in answer.json()["error"] and "fake-slow" in answer.json()["error"]
            models = {entry["slug"]: entry for entry in client.get("/v1/models").json()["models"]}
            assert models["fake-invert"]["live_workers"] == 1 and models["fake-slow"]["live_workers"] == 0
            assert client.post("/v1/fake-invert", json={"image": b64(photo)}).status_code == 200
        finally:
            partial.stop()
        everything = WorkerPool(service.settings, service.models, service.backend, tuple(s for s, m in service.models.items() if m.built), threads=1)
        everything.start(warm_up=False)
        try:
            assert client.get("/readyz").status_code == 200
        finally:
            everything.stop()


def test_metrics_count_requests_queue_jobs_and_workers(make_client, backend_settings, photo):
    with make_client(**backend_settings) as client:
        assert client.post("/v1/fake-invert", json={"image": b64(photo)}).status_code == 200
        assert client.post("/v1/fake-invert", json={"image": b64(photo), "samples": 9}).status_code == 400
        text = client.get("/metrics").text
    assert 'retouch_http_requests_total{code="200",route="v1",slug="fake-invert"} 1.0' in text
    assert 'retouch_http_requests_total{code="400",route="v1",slug="fake-invert"} 1.0' in text
    assert 'retouch_job_duration_seconds_count{engine="fake",slug="fake-invert",status="COMPLETED"} 1.0' in text
    assert 'retouch_job_attempts_total{slug="fake-invert"} 1.0' in text
    assert 'retouch_queue_depth{slug="fake-invert"} 0.0' in text
    assert 'retouch_live_workers{slug="fake-invert"} 1.0' in text
    assert "retouch_job_store_up 1.0" in text


def test_one_json_log_line_per_request(make_client, photo, capsys):
    from retouch.logs import configure_logging

    with make_client(log_format="json") as client:
        configure_logging(client.app.state.service.settings)
        try:
            request_id = client.post("/v1/fake-invert", json={"image": b64(photo)}).headers["x-request-id"]
            client.get("/healthz")
        finally:
            logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "retouch.requests"]
    assert len(requests) == 1, requests
    (line,) = requests
    assert line["request_id"] == request_id and line["slug"] == "fake-invert" and line["status"] == 200
    assert line["method"] == "POST" and line["path"] == "/v1/fake-invert" and line["duration_ms"] > 0
    assert any(entry["logger"] == "retouch.jobs.worker" and request_id in entry["message"] for entry in lines)


def test_a_request_of_retouch_0_1_left_in_the_queue_still_runs(make_client, photo, tmp_path):
    """Its image was stored encoded as sent: the worker decodes it as that version did."""
    import sqlite3

    from images import png_bytes

    home = tmp_path / "old-home"
    (home / "jobs" / "old-job").mkdir(parents=True)
    (home / "jobs" / "old-job" / "input-image").write_bytes(png_bytes(photo))
    connection = sqlite3.connect(home / "jobs.db")
    connection.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, slug TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,"
        " params TEXT NOT NULL, params_digest TEXT NOT NULL, base64 INTEGER NOT NULL, started_at REAL, finished_at REAL,"
        " worker TEXT, engine TEXT, metrics TEXT NOT NULL, error TEXT, outputs TEXT NOT NULL);"
        "CREATE TABLE workers (id TEXT PRIMARY KEY, seen REAL NOT NULL);"
    )
    params = json.dumps({"base64": False, "output_format": "png", "samples": 1})
    connection.execute(f"INSERT INTO jobs VALUES ('old-job', 'fake-invert', 'QUEUED', {time.time()}, ?, 'd', 0, NULL, NULL, NULL, NULL, '{{}}', NULL, '[]')", (params,))
    connection.commit()
    connection.close()
    with make_client(home=home, lease=1.5, store_timeout=0.5) as client:
        # Its queue entry was in the old queue's format: the sweep puts it on the new queue.
        service: JobService = client.app.state.service
        service.store.mark_enqueued("old-job")
        service.queue.enqueue("fake-invert", "old-job")
        body = poll(client, "old-job", lambda body: body["status"] == "COMPLETED")
        assert body["status"] == "COMPLETED", body
        image = client.get("/v2/requests/old-job/output/0").content
    from images import decode

    assert np.array_equal(decode(image), 255 - photo)
