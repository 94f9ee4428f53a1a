"""The fleet for real: API replicas and workers as separate processes, each with a home of its own,
on a real Redis, and the faults an operator meets (a worker killed, a worker paused past its lease,
Redis stalled, an engine that kills its worker, one that hangs, a worker drained)."""

from __future__ import annotations

import base64
import io
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from fakes import GATES_VARIABLE, release, started_marks
from PIL import Image
from servers import RedisServer, RetouchProcess, free_port, wait_until_healthy

pytestmark = pytest.mark.slow


def photo() -> np.ndarray:
    rows, cols = np.mgrid[0:48, 0:64]
    return np.stack([rows * 5, cols * 4, (rows + cols) * 2], axis=-1).astype(np.uint8)


def png_b64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Fleet:
    """API replicas (`serve --workers 0`) and supervised workers, each with its own RETOUCH_HOME."""

    def __init__(self, root: Path, redis_url: str, **settings: str) -> None:
        self.root = root
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self.gates = root / "gates"
        self.gates.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.common = {
            "RETOUCH_QUEUE_URL": redis_url,
            "RETOUCH_REDIS_PREFIX": self.prefix,
            "RETOUCH_LEASE": "2",
            "RETOUCH_STORE_TIMEOUT": "0.5",
            "RETOUCH_IDLE_POLL": "0.5",
            "RETOUCH_LOG_LEVEL": "info",
            "RETOUCH_MIN_FREE_BYTES": "0",
            "RETOUCH_WEIGHTS_DIR": str(root / "no-weights"),
            GATES_VARIABLE: str(self.gates),
            **settings,
        }
        self.apis: list[tuple[str, RetouchProcess]] = []
        self.workers: list[RetouchProcess] = []

    def _environment(self, name: str, **extra: str) -> dict[str, str]:
        return {**self.common, "RETOUCH_HOME": str(self.root / name / "home"), **extra}

    def start_api(self) -> str:
        name = f"api-{len(self.apis)}"
        port = free_port()
        process = RetouchProcess(["serve"], self._environment(name, RETOUCH_PORT=str(port), RETOUCH_WORKERS="0"), self.root / f"{name}.log")
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, process)
        self.apis.append((base, process))
        return base

    def start_worker(self, models: str | None = None, threads: int = 1) -> RetouchProcess:
        name = f"worker-{len(self.workers)}"
        arguments = ["worker", "--workers", str(threads)] + (["--models", models] if models else [])
        process = RetouchProcess(arguments, self._environment(name), self.root / f"{name}.log")
        self.workers.append(process)
        return process

    def wait_for_workers(self, base: str, slug: str, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            models = {entry["slug"]: entry for entry in httpx.get(f"{base}/v1/models").json()["models"]}
            if models[slug]["live_workers"] >= count:
                return
            assert time.monotonic() < deadline, f"{count} worker(s) for {slug} did not come up:\n{self.logs()}"
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}" for path in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        # Open every gate first: a worker stopping drains, and would wait for a gated job forever.
        for mark in self.gates.glob("*.started.*"):
            (self.gates / mark.name.split(".")[0]).touch()
        for process in [*self.workers, *(process for _, process in self.apis)]:
            process.stop(timeout=20)


@pytest.fixture
def make_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Fleet]]:
    """`make_fleet(redis_url, **settings)`; the tests' own process sees the fleet's gates folder too."""
    fleets: list[Fleet] = []

    def make(redis_url: str, **settings: str) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet-{len(fleets)}", redis_url, **settings)
        monkeypatch.setenv(GATES_VARIABLE, str(fleet.gates))
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


@pytest.fixture
def fleet(make_fleet: Callable[..., Fleet], redis_url: str) -> Fleet:
    return make_fleet(redis_url)


def submit(base: str, slug: str, **params: object) -> dict:
    response = httpx.post(f"{base}/v2/{slug}", json={"image": png_b64(photo()), **params}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def status_of(base: str, request_id: str) -> dict:
    return httpx.get(f"{base}/v2/requests/{request_id}/status", timeout=30).json()


def wait_for(base: str, request_id: str, statuses: tuple[str, ...], timeout: float = 60, fleet: Fleet | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = status_of(base, request_id)
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"{request_id} still {body}" + (f"\n{fleet.logs()}" if fleet else "")
        time.sleep(0.05)


def wait_started(gate: str, count: int = 1, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(started_marks(gate)) < count:
        assert time.monotonic() < deadline, f"the gated job {gate} did not start {count} time(s)"
        time.sleep(0.02)
    return started_marks(gate)


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_request_submitted_on_one_replica_is_read_polled_and_fetched_on_the_other(fleet):
    first, second = fleet.start_api(), fleet.start_api()
    fleet.start_worker()
    fleet.start_worker()
    fleet.wait_for_workers(first, "fake-invert", 2)
    submitted = submit(first, "fake-invert", output_format="png")
    assert submitted["status_url"].startswith(first)
    done = wait_for(second, submitted["request_id"], ("COMPLETED",))
    assert done["metrics"]["engine"] == "fake"
    result = httpx.get(f"{second}/v2/requests/{submitted['request_id']}").json()
    assert result["output"].startswith(second)
    image = np.asarray(Image.open(io.BytesIO(httpx.get(result["output"]).content)))
    assert np.array_equal(image, 255 - photo())
    synchronous = httpx.post(f"{second}/v1/fake-invert", json={"image": png_b64(photo()), "output_format": "png"}, timeout=30)
    assert synchronous.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(synchronous.content))), 255 - photo())
    for base in (first, second):
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
    # Nothing went through a disk: no home holds a job database, a queue or a job folder.
    for home in fleet.root.glob("*/home"):
        assert not {"jobs.db", "queue.db", "jobs"} & {entry.name for entry in home.iterdir()}, sorted(home.iterdir())


def test_a_worker_killed_mid_job_leaves_it_to_the_other_worker(fleet):
    base = fleet.start_api()
    workers = [fleet.start_worker("fake-blocks-until-released"), fleet.start_worker("fake-blocks-until-released")]
    fleet.wait_for_workers(base, "fake-blocks-until-released", 2)
    gate = f"g-{uuid.uuid4().hex[:8]}"
    submitted = submit(base, "fake-blocks-until-released", gate=gate)
    (running_pid,) = (int(pid) for pid in wait_started(gate))
    supervisor = next(worker for worker in workers if worker.pid == parent_of(running_pid))
    supervisor.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(running_pid):
        assert time.monotonic() < deadline, "the worker process outlived its killed supervisor"
        time.sleep(0.02)
    killed_at = time.monotonic()
    release(gate)
    done = wait_for(base, submitted["request_id"], ("COMPLETED", "FAILED"), fleet=fleet)
    assert done["status"] == "COMPLETED", done
    assert done["metrics"]["attempts"] == 2 and done["metrics"]["pid"] != running_pid
    # Lease 2 s: taken over within about twice the lease.
    assert time.monotonic() - killed_at < 2 * 2 + 2


def test_a_worker_paused_past_its_lease_never_overwrites_the_job_another_finished(fleet):
    base = fleet.start_api()
    fleet.start_worker("fake-blocks-until-released")
    fleet.start_worker("fake-blocks-until-released")
    fleet.wait_for_workers(base, "fake-blocks-until-released", 2)
    gate = f"g-{uuid.uuid4().hex[:8]}"
    submitted = submit(base, "fake-blocks-until-released", gate=gate, output_format="png")
    request_id = submitted["request_id"]
    (paused_pid,) = (int(pid) for pid in wait_started(gate))
    Path(f"/proc/{paused_pid}").exists()
    import os

    os.kill(paused_pid, signal.SIGSTOP)
    try:
        marks = wait_started(gate, count=2, timeout=30)
        other_pid = next(int(pid) for pid in marks if int(pid) != paused_pid)
        release(gate)
        done = wait_for(base, request_id, ("COMPLETED",))
        assert done["metrics"]["pid"] == other_pid and done["metrics"]["attempts"] == 2
        result_before = httpx.get(f"{base}/v2/requests/{request_id}").json()
        client = redis.Redis.from_url(fleet.redis_url)
        keys_before = sorted(client.scan_iter(match=f"{fleet.prefix}:*{request_id}*"))
    finally:
        os.kill(paused_pid, signal.SIGCONT)
    # The paused worker resumes with the gate open: it learns it lost the job and writes nothing.
    time.sleep(3)
    assert httpx.get(f"{base}/v2/requests/{request_id}").json() == result_before
    keys_after = sorted(client.scan_iter(match=f"{fleet.prefix}:*{request_id}*"))
    assert keys_after == keys_before
    assert not [key for key in keys_after if b"output-a1-" in key]
    client.close()
    assert "no longer owns it; it wrote nothing" in fleet.logs()


def test_redis_stalled_during_traffic(make_fleet, tmp_path):
    """While Redis is stopped: 503 with an error within 15 s, /healthz answers; afterwards every request
    accepted before the stall completes."""
    server = RedisServer(tmp_path / "redis", persistence=True)
    fleet = make_fleet(server.url, RETOUCH_STORE_TIMEOUT="1", RETOUCH_LEASE="10")
    try:
        base = fleet.start_api()
        fleet.start_worker("fake-slow", threads=2)
        fleet.wait_for_workers(base, "fake-slow", 1)
        accepted = [submit(base, "fake-slow", seconds=0.4)["request_id"] for _ in range(6)]
        server.pause()
        try:
            for method, path in (("POST", "/v2/fake-slow"), ("POST", "/v1/fake-slow")):
                started = time.monotonic()
                answer = httpx.request(method, f"{base}{path}", json={"image": png_b64(photo()), "seconds": 0.1}, timeout=30)
                assert answer.status_code == 503, answer.text
                assert "Redis" in answer.json()["error"]
                assert time.monotonic() - started < 15
            started = time.monotonic()
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            assert time.monotonic() - started < 1
            assert httpx.get(f"{base}/readyz", timeout=15).status_code == 503
        finally:
            server.resume()
        for request_id in accepted:
            assert wait_for(base, request_id, ("COMPLETED", "FAILED"), timeout=60, fleet=fleet)["status"] == "COMPLETED"
    finally:
        fleet.stop()
        server.stop()


def test_redis_killed_and_restarted_loses_no_accepted_request(make_fleet, tmp_path):
    """With its append-only file, a Redis killed (SIGKILL) and started again keeps every accepted request.
    (Accepted with no worker yet, as a fleet that starts its workers on demand allows.)"""
    server = RedisServer(tmp_path / "redis", persistence=True)
    try:
        fleet = make_fleet(server.url, RETOUCH_STORE_TIMEOUT="1", RETOUCH_LEASE="3", RETOUCH_ADMIT_WITHOUT_WORKERS="true")
        base = fleet.start_api()
        accepted = [submit(base, "fake-invert")["request_id"] for _ in range(4)]
        server.kill()
        assert httpx.post(f"{base}/v2/fake-invert", json={"image": png_b64(photo())}, timeout=30).status_code == 503
        server.start()
        fleet.start_worker("fake-invert")
        for request_id in accepted:
            assert wait_for(base, request_id, ("COMPLETED", "FAILED"), fleet=fleet)["status"] == "COMPLETED"
    finally:
        server.stop()


def test_a_job_that_always_kills_its_worker_fails_after_three_attempts(fleet):
    base = fleet.start_api()
    fleet.start_worker("fake-crashes-its-worker")
    fleet.wait_for_workers(base, "fake-crashes-its-worker", 1)
    submitted = submit(base, "fake-crashes-its-worker")
    ended = wait_for(base, submitted["request_id"], ("FAILED", "COMPLETED"), timeout=90, fleet=fleet)
    assert ended["status"] == "FAILED"
    assert "tried 3 times" in ended["error"]
    # The supervisor restarted the worker each time: it still serves.
    fleet.wait_for_workers(base, "fake-crashes-its-worker", 1)


def test_a_hung_job_fails_at_its_deadline_and_its_worker_process_is_replaced(make_fleet, redis_url):
    fleet = make_fleet(redis_url, RETOUCH_DEADLINES='{"fake-hangs-until-released": 1}')
    base = fleet.start_api()
    worker = fleet.start_worker("fake-hangs-until-released,fake-invert")
    fleet.wait_for_workers(base, "fake-invert", 1)
    gate = f"g-{uuid.uuid4().hex[:8]}"
    hung = submit(base, "fake-hangs-until-released", gate=gate)
    (hung_pid,) = (int(pid) for pid in wait_started(gate))
    ended = wait_for(base, hung["request_id"], ("FAILED", "COMPLETED"), fleet=fleet)
    assert ended["status"] == "FAILED" and "deadline of 1 s" in ended["error"]
    deadline = time.monotonic() + 30
    while pid_alive(hung_pid):
        assert time.monotonic() < deadline, "the worker process with the hung thread was not recycled"
        time.sleep(0.05)
    fleet.wait_for_workers(base, "fake-invert", 1)
    after = submit(base, "fake-invert")
    assert wait_for(base, after["request_id"], ("COMPLETED", "FAILED"), fleet=fleet)["status"] == "COMPLETED"
    assert worker.alive()
    assert "ended with status 75" in worker.output()


def test_sigterm_drains_a_worker(fleet):
    base = fleet.start_api()
    worker = fleet.start_worker("fake-blocks-until-released")
    fleet.wait_for_workers(base, "fake-blocks-until-released", 1)
    gate = f"g-{uuid.uuid4().hex[:8]}"
    running = submit(base, "fake-blocks-until-released", gate=gate)
    wait_started(gate)
    worker.signal(signal.SIGTERM)
    time.sleep(0.5)
    waiting = submit(base, "fake-blocks-until-released", gate=gate)
    time.sleep(1.0)
    assert worker.alive(), "a draining worker stops only once its running job ends"
    assert status_of(base, waiting["request_id"])["status"] == "QUEUED", "a draining worker takes no new job"
    release(gate)
    assert wait_for(base, running["request_id"], ("COMPLETED", "FAILED"))["status"] == "COMPLETED"
    assert worker.process.wait(timeout=30) == 0
    assert status_of(base, waiting["request_id"])["status"] == "QUEUED"
