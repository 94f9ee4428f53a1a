"""Full storage: a submission that cannot be stored is a 503 that leaves nothing behind; a job whose
writes fail keeps its inputs and completes once space returns. Faults injected at each write of a
job's life on both backends, then a real full disk (a small tmpfs) and a real Redis at its maxmemory."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from images import b64
from polling import poll
from servers import RedisServer
from test_flows import leftovers

from retouch.errors import StorageFull
from retouch.jobs.service import JobService


class Full:
    """While set, the wrapped backend method raises StorageFull, as a full disk or Redis at maxmemory does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
        self.full = threading.Event()
        self.full.set()
        self.refused = 0
        original = getattr(target, name)

        def refuse_while_full(*arguments, **keywords):
            if self.full.is_set():
                self.refused += 1
                raise StorageFull("the server's storage is full; try again later")
            return original(*arguments, **keywords)

        monkeypatch.setattr(target, name, refuse_while_full)

    def clear_after(self, seconds: float) -> None:
        threading.Timer(seconds, self.full.clear).start()


@pytest.mark.parametrize("write", ["blobs.put", "store.admit"])
def test_a_submission_that_cannot_be_stored_is_503_and_leaves_nothing(make_client, backend_settings, photo, monkeypatch, write):
    with make_client(workers=0, idle_worker=True, **backend_settings) as client:
        service: JobService = client.app.state.service
        part, method = write.split(".")
        Full(monkeypatch, getattr(service, part), method)
        answer = client.post("/v2/fake-invert", json={"image": b64(photo)})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "the server's storage is full; try again later"
        request_id = answer.headers["x-request-id"]
        assert service.store.get(request_id) is None
        assert leftovers(service, request_id) == []


def test_a_job_whose_outputs_cannot_be_written_keeps_its_inputs_and_completes_when_space_returns(make_client, backend_settings, photo, monkeypatch):
    with make_client(**backend_settings) as client:
        service: JobService = client.app.state.service
        full = Full(monkeypatch, service.blobs, "put")
        # Inputs are stored at submission: refuse only the outputs' writes.
        full.full.clear()
        request_id = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()["request_id"]
        full.full.set()
        full.clear_after(1.0)
        running = poll(client, request_id, lambda body: full.refused > 0)
        assert running["status"] in ("QUEUED", "PROCESSING")
        record = service.store.get(request_id)
        assert all(service.blobs.get(request_id, name) is not None for name in record.inputs)
        done = poll(client, request_id, lambda body: body["status"] == "COMPLETED")
        assert done["status"] == "COMPLETED" and done["metrics"]["attempts"] == 1


def test_a_job_whose_worker_cannot_write_for_longer_than_its_lease_runs_again(make_client, backend_settings, photo, monkeypatch):
    """Its end and its lease renewals refused for two leases: it is left with its inputs, and the sweep
    runs it again once writes succeed."""
    with make_client(lease=1.5, store_timeout=0.5, **backend_settings) as client:
        service: JobService = client.app.state.service
        full = Full(monkeypatch, service.store, "finish")
        renewals = Full(monkeypatch, service.store, "renew")
        full.clear_after(3.0)
        renewals.clear_after(3.0)
        request_id = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()["request_id"]
        poll(client, request_id, lambda body: full.refused + renewals.refused > 0)
        record = service.store.get(request_id)
        assert record.status.value == "PROCESSING"
        assert all(service.blobs.get(request_id, name) is not None for name in record.inputs)
        done = poll(client, request_id, lambda body: body["status"] == "COMPLETED")
        assert done["status"] == "COMPLETED" and done["metrics"]["attempts"] == 2


def test_a_job_its_worker_could_not_take_runs_once_writes_succeed_again(make_client, backend_settings, photo, monkeypatch):
    """The queue entry was popped, the take refused: the job stays QUEUED and the sweep puts it back."""
    with make_client(lease=1.5, store_timeout=0.5, **backend_settings) as client:
        service: JobService = client.app.state.service
        full = Full(monkeypatch, service.store, "take")
        full.clear_after(1.0)
        request_id = client.post("/v2/fake-invert", json={"image": b64(photo)}).json()["request_id"]
        done = poll(client, request_id, lambda body: body["status"] == "COMPLETED", timeout=40)
        assert full.refused >= 1
        assert done["status"] == "COMPLETED" and done["metrics"]["attempts"] == 1


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this sandbox does not let root mount a tmpfs: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(descriptor)
    return filler


def test_a_real_full_disk(make_client, small_disk):
    photo = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    with make_client(home=small_disk / "home", min_free_bytes=1_000_000) as client:
        service: JobService = client.app.state.service
        assert client.post("/v1/fake-invert", json={"image": b64(photo)}).status_code == 200
        filler = fill(small_disk)
        answer = client.post("/v2/fake-invert", json={"image": b64(photo)})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "the server's storage is full; try again later"
        request_id = answer.headers["x-request-id"]
        assert not (service.settings.jobs_path / request_id).exists()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "MB free" in ready.json()["error"]
        filler.unlink()
        assert client.post("/v1/fake-invert", json={"image": b64(photo)}).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_real_redis_at_its_maxmemory(make_client, tmp_path):
    server = RedisServer(tmp_path / "redis", extra=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"))
    try:
        photo = np.random.default_rng(0).integers(0, 255, (500, 500, 3), dtype=np.uint8)
        settings = {"queue_url": server.url, "redis_prefix": f"t{uuid.uuid4().hex[:8]}"}
        # 2 MB kept free of 4: after a refused write the intake deletes what it stored, so Redis may fall back
        # below its maxmemory by a blob or two; /readyz must still see the store as full.
        with make_client(workers=0, idle_worker=True, min_free_bytes=2_000_000, **settings) as client:
            service: JobService = client.app.state.service
            answers = [client.post("/v2/fake-invert", json={"image": b64(photo)}) for _ in range(8)]
            codes = [answer.status_code for answer in answers]
            assert 200 in codes and 503 in codes, codes
            for answer in answers:
                if answer.status_code == 503:
                    assert answer.json()["error"] == "the server's storage is full; try again later"
                    assert leftovers(service, answer.headers["x-request-id"]) == []
            assert "maxmemory" in client.get("/readyz").json()["error"]
    finally:
        server.stop()
