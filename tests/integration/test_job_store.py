"""The job store's contract (JOBS.md), the same tests on both backends: SQLite and files, and a real Redis.

Each test drives the store as the workers and the sweep do, and checks the invariants: one winner
per take, no write by a worker that does not own the job, nothing changes a terminal record, the
write that ends a job deletes its inputs and starts the retention of its record and outputs together.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import RedisServer

from retouch.config import Settings
from retouch.errors import BackendUnavailable, Conflict, NotEnoughCredits, Unauthorized
from retouch.jobs.backends import Backend, open_backend
from retouch.jobs.backends.embedded import SCHEMA_VERSION
from retouch.jobs.records import (
    Admitted,
    ApiKey,
    CancelOutcome,
    JobRecord,
    LeaseOutcome,
    OutputFile,
    Renewal,
    Status,
    WorkerInfo,
)

SLUGS = ("slug-a", "slug-b")
LEASE = 0.6


@pytest.fixture
def store_backend(backend_settings: dict[str, str], tmp_path: Path) -> Iterator[Backend]:
    settings = Settings(
        home=tmp_path / "home",
        retention=60,
        lease=3,
        store_timeout=1,
        **backend_settings,
    )
    opened = open_backend(settings, SLUGS)
    yield opened
    opened.close()


def new_job(backend: Backend, slug: str = "slug-a", inputs: dict[str, bytes] | None = None) -> JobRecord:
    job_id = uuid.uuid4().hex
    inputs = {"input-image.npy": b"pixels"} if inputs is None else inputs
    for name, data in inputs.items():
        backend.blobs.put(job_id, name, data, ttl=3600)
    record = JobRecord(
        id=job_id,
        slug=slug,
        status=Status.QUEUED,
        params={"grow_mask": 3},
        params_digest="d",
        inputs=sorted(inputs),
    )
    return backend.store.create(record)


def frozen(record: JobRecord | None) -> dict:
    assert record is not None
    return json.loads(
        json.dumps(
            record.__dict__,
            default=lambda value: getattr(value, "value", None) or value.__dict__,
        )
    )


def test_a_record_reads_back_as_written(store_backend):
    record = new_job(store_backend)
    read = store_backend.store.get(record.id)
    assert read is not None and read.status is Status.QUEUED and read.params == {"grow_mask": 3}
    assert read.inputs == ["input-image.npy"] and read.attempts == 0
    assert abs(read.created_at - store_backend.store.now()) < 5
    assert store_backend.store.get("no-such-id") is None


def test_one_take_wins_whatever_the_number_of_workers(store_backend):
    record = new_job(store_backend)
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def race(worker: str) -> None:
        barrier.wait()
        if store_backend.store.take(record.id, worker, LEASE) is not None:
            winners.append(worker)

    threads = [threading.Thread(target=race, args=(f"worker-{index}",)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    taken = store_backend.store.get(record.id)
    assert taken.status is Status.PROCESSING and taken.worker == winners[0] and taken.attempts == 1


def test_no_write_by_a_worker_that_does_not_own_the_job(store_backend):
    store = store_backend.store
    record = new_job(store_backend)
    store.take(record.id, "owner", LEASE)
    before = frozen(store.get(record.id))
    assert store.renew(record.id, "intruder", LEASE) is Renewal.LOST
    assert store.set_progress(record.id, "intruder", 0.5) is False
    assert store.finish(record.id, "intruder", [OutputFile("o.png", "image/png")], "x", {}) is False
    assert store.fail(record.id, "intruder", "no") is False
    assert store.cancel_at_step(record.id, "intruder") is False
    assert frozen(store.get(record.id)) == before
    assert store_backend.blobs.get(record.id, "input-image.npy") == b"pixels"


def test_the_owner_renews_reports_progress_and_finishes(store_backend):
    store, blobs = store_backend.store, store_backend.blobs
    record = new_job(store_backend, inputs={"input-image.npy": b"pixels", "input-mask.npy": b"mask"})
    store.take(record.id, "owner", LEASE)
    first_lease = store.get(record.id).lease_until
    time.sleep(0.05)
    assert store.renew(record.id, "owner", LEASE) is Renewal.OWNED
    assert store.get(record.id).lease_until > first_lease
    assert store.set_progress(record.id, "owner", 0.25) is True
    assert store.get(record.id).progress == 0.25
    blobs.put(record.id, "output-a1-0.png", b"png", ttl=60)
    outputs = [OutputFile("output-a1-0.png", "image/png")]
    assert store.finish(record.id, "owner", outputs, "fake", {"inference_time": 0.1}) is True
    done = store.get(record.id)
    assert done.status is Status.COMPLETED and done.outputs == outputs and done.engine == "fake" and done.progress == 1.0
    assert done.metrics == {"inference_time": 0.1} and done.finished_at >= done.started_at >= done.created_at
    # The finishing write deleted the inputs; the outputs stay for the retention.
    assert blobs.get(record.id, "input-image.npy") is None and blobs.get(record.id, "input-mask.npy") is None
    assert blobs.get(record.id, "output-a1-0.png") == b"png"
    assert store.count(Status.PROCESSING, "slug-a") == 0 and store.count(Status.QUEUED) == 0


def test_nothing_changes_a_terminal_record(store_backend):
    store = store_backend.store
    record = new_job(store_backend)
    store.take(record.id, "owner", LEASE)
    store.fail(record.id, "owner", "the engine refused")
    ended = frozen(store.get(record.id))
    time.sleep(LEASE + 0.1)
    assert store.take(record.id, "owner", LEASE) is None
    assert store.finish(record.id, "owner", [], "x", {}) is False
    assert store.fail(record.id, "owner", "again") is False
    assert store.fail_queued(record.id, "again") is False
    assert store.cancel(record.id) is CancelOutcome.ENDED
    assert store.cancel_at_step(record.id, "owner") is False
    assert store.expire_lease(record.id, max_attempts=3) is None
    assert store.mark_enqueued(record.id) is False
    assert store.renew(record.id, "owner", LEASE) is Renewal.LOST
    assert frozen(store.get(record.id)) == ended


def test_an_expired_lease_goes_back_to_the_queue_then_fails_after_the_last_attempt(
    store_backend,
):
    store = store_backend.store
    record = new_job(store_backend)
    for attempt in (1, 2):
        assert store.take(record.id, f"worker-{attempt}", LEASE).attempts == attempt
        assert store.expired_leases("slug-a") == []
        assert store.expire_lease(record.id, max_attempts=3) is None
        time.sleep(LEASE + 0.1)
        assert store.expired_leases("slug-a") == [record.id]
        assert store.expire_lease(record.id, max_attempts=3) is LeaseOutcome.REQUEUED
        requeued = store.get(record.id)
        assert requeued.status is Status.QUEUED and requeued.worker is None and requeued.attempts == attempt
    store.take(record.id, "worker-3", LEASE)
    time.sleep(LEASE + 0.1)
    assert store.expire_lease(record.id, max_attempts=3) is LeaseOutcome.FAILED
    failed = store.get(record.id)
    assert failed.status is Status.FAILED and "tried 3 times" in failed.error and "worker-3" in failed.error
    assert store_backend.blobs.get(record.id, "input-image.npy") is None


def test_a_stale_worker_writes_nothing_once_another_took_the_job(store_backend):
    store, blobs = store_backend.store, store_backend.blobs
    record = new_job(store_backend)
    store.take(record.id, "paused", LEASE)
    time.sleep(LEASE + 0.1)
    assert store.expire_lease(record.id, max_attempts=3) is LeaseOutcome.REQUEUED
    assert store.take(record.id, "other", LEASE).attempts == 2
    blobs.put(record.id, "output-a2-0.png", b"second", ttl=60)
    assert store.finish(record.id, "other", [OutputFile("output-a2-0.png", "image/png")], "fake", {}) is True
    finished = frozen(store.get(record.id))
    # The paused worker resumes: every one of its writes is refused.
    assert store.renew(record.id, "paused", LEASE) is Renewal.LOST
    assert store.set_progress(record.id, "paused", 0.9) is False
    assert (
        store.finish(
            record.id,
            "paused",
            [OutputFile("output-a1-0.png", "image/png")],
            "fake",
            {},
        )
        is False
    )
    assert store.fail(record.id, "paused", "late") is False
    assert frozen(store.get(record.id)) == finished


def test_cancel_in_each_state(store_backend):
    store, blobs = store_backend.store, store_backend.blobs
    queued = new_job(store_backend)
    assert store.cancel(queued.id) is CancelOutcome.CANCELED
    canceled = store.get(queued.id)
    assert canceled.status is Status.CANCELED and canceled.finished_at is not None
    assert blobs.get(queued.id, "input-image.npy") is None
    assert store.count(Status.QUEUED) == 0

    running = new_job(store_backend)
    store.take(running.id, "owner", LEASE)
    assert store.cancel(running.id) is CancelOutcome.REQUESTED
    assert store.get(running.id).status is Status.PROCESSING
    assert store.renew(running.id, "owner", LEASE) is Renewal.CANCEL_REQUESTED
    assert store.cancel_at_step(running.id, "owner") is True
    assert store.get(running.id).status is Status.CANCELED
    assert blobs.get(running.id, "input-image.npy") is None

    assert store.cancel(running.id) is CancelOutcome.ENDED
    assert store.cancel("no-such-id") is CancelOutcome.NOT_FOUND


def test_a_job_that_the_queue_refused_is_failed(store_backend):
    record = new_job(store_backend)
    assert store_backend.store.fail_queued(record.id, "the queue could not take this request") is True
    assert store_backend.store.get(record.id).status is Status.FAILED


def test_stale_queued_jobs_and_marking_them_enqueued_again(store_backend):
    store = store_backend.store
    record = new_job(store_backend, slug="slug-b")
    assert store.stale_queued("slug-b", older_than=10) == []
    time.sleep(0.3)
    assert store.stale_queued("slug-b", older_than=0.2) == [record.id]
    assert store.stale_queued("slug-a", older_than=0.2) == []
    assert store.mark_enqueued(record.id) is True
    assert store.stale_queued("slug-b", older_than=0.2) == []
    assert store.count(Status.QUEUED, "slug-b") == 1 and store.count(Status.QUEUED, "slug-a") == 0


def test_heartbeats_say_which_workers_are_live_and_what_they_serve(store_backend):
    store = store_backend.store
    store.heartbeat("gpu-box:1:a", ("slug-a",), 1)
    store.heartbeat("cpu-box:2:b", ("slug-a", "slug-b"), 4)
    assert store.live_workers(within=10) == {
        "gpu-box:1:a": WorkerInfo(slugs=("slug-a",), threads=1),
        "cpu-box:2:b": WorkerInfo(slugs=("slug-a", "slug-b"), threads=4),
    }
    time.sleep(0.3)
    store.heartbeat("cpu-box:2:b", ("slug-a", "slug-b"), 4)
    assert set(store.live_workers(within=0.2)) == {"cpu-box:2:b"}
    store.forget_worker("cpu-box:2:b")
    assert "cpu-box:2:b" not in store.live_workers(within=10)


def test_job_times_are_a_moving_average_per_slug(store_backend):
    store = store_backend.store
    assert store.typical_durations() == {}
    store.record_duration("slug-a", 2.0)
    assert store.typical_durations() == {"slug-a": 2.0}
    store.record_duration("slug-a", 12.0)
    store.record_duration("slug-b", 0.5)
    durations = store.typical_durations()
    assert abs(durations["slug-a"] - (0.2 * 12.0 + 0.8 * 2.0)) < 1e-6 and durations["slug-b"] == 0.5


def test_a_queue_per_slug(store_backend):
    queue = store_backend.queue
    queue.enqueue("slug-a", "job-a")
    queue.enqueue("slug-b", "job-b")
    assert queue.pending("slug-a") == 1 and queue.pending("slug-b") == 1
    assert queue.dequeue(("slug-b",), timeout=0.2) == "job-b"
    assert queue.dequeue(("slug-b",), timeout=0.2) is None
    assert queue.dequeue(("slug-a", "slug-b"), timeout=0.2) == "job-a"


def test_an_ended_notice_reaches_a_waiter_in_another_process(backend_settings, tmp_path):
    """Two backends on the same settings stand for two processes (an API replica and a worker)."""
    import asyncio

    settings = Settings(home=tmp_path / "home", **backend_settings)
    api, worker = open_backend(settings, SLUGS), open_backend(settings, SLUGS)
    try:
        if hasattr(api.events, "wait_subscribed"):
            assert api.events.wait_subscribed(10)
        ended = threading.Event()

        async def wait() -> bool:
            waiting = asyncio.ensure_future(api.events.wait_changed("job-x", timeout=20, is_done=ended.is_set, recheck=600))
            await asyncio.sleep(0.1)
            ended.set()
            worker.events.publish_changed("job-x", "ended")
            return await waiting

        started = time.monotonic()
        assert asyncio.run(wait()) is True
        assert time.monotonic() - started < 5
    finally:
        api.close()
        worker.close()


# ---- one backend's own ----------------------------------------------------------------------


def test_redis_ends_record_and_images_together(redis_url, tmp_path):
    """The retention is one expiry on the record and the outputs, set by the write that ends the job."""
    import redis

    prefix = f"t{uuid.uuid4().hex[:12]}"
    settings = Settings(home=tmp_path / "home", queue_url=redis_url, redis_prefix=prefix, retention=0.5)
    backend = open_backend(settings, SLUGS)
    client = redis.Redis.from_url(redis_url)
    try:
        record = new_job(backend)
        job_key, input_key = (
            f"{prefix}:job:{record.id}",
            f"{prefix}:blob:{record.id}:input-image.npy",
        )
        assert client.ttl(job_key) == -1 and client.ttl(input_key) == -1, "an unfinished job never expires"
        backend.store.take(record.id, "owner", 3)
        backend.blobs.put(record.id, "output-a1-0.png", b"png", ttl=3600)
        backend.store.finish(record.id, "owner", [OutputFile("output-a1-0.png", "image/png")], "fake", {})
        output_key = f"{prefix}:blob:{record.id}:output-a1-0.png"
        assert not client.exists(input_key)
        assert 0 < client.pttl(job_key) <= 500 and 0 < client.pttl(output_key) <= 500
        time.sleep(0.7)
        assert list(client.scan_iter(match=f"{prefix}:*{record.id}*")) == []
    finally:
        backend.close()
        client.close()


def test_redis_unclaimed_inputs_expire_and_claimed_ones_do_not(redis_url, tmp_path):
    import redis

    prefix = f"t{uuid.uuid4().hex[:12]}"
    backend = open_backend(
        Settings(home=tmp_path / "home", queue_url=redis_url, redis_prefix=prefix),
        SLUGS,
    )
    client = redis.Redis.from_url(redis_url)
    try:
        backend.blobs.put("orphan", "input-image.npy", b"never recorded", ttl=3600)
        assert client.ttl(f"{prefix}:blob:orphan:input-image.npy") > 3000
        record = new_job(backend)
        assert client.ttl(f"{prefix}:blob:{record.id}:input-image.npy") == -1
    finally:
        backend.close()
        client.close()


def test_redis_that_does_not_answer_is_backend_unavailable_within_its_timeout(tmp_path):
    server = RedisServer(tmp_path / "redis")
    settings = Settings(home=tmp_path / "home", queue_url=server.url, store_timeout=1, lease=3)
    backend = open_backend(settings, SLUGS)
    try:
        record = new_job(backend)
        server.pause()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="Redis at 127.0.0.1"):
            backend.store.get(record.id)
        assert time.monotonic() - started < 3
        server.resume()
        assert backend.store.get(record.id).status is Status.QUEUED
    finally:
        backend.close()
        server.stop()


def test_redis_layout_of_a_newer_retouch_is_refused(redis_url, tmp_path):
    import redis

    prefix = f"t{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}:schema", 99)
    try:
        with pytest.raises(RuntimeError, match="newer retouch"):
            open_backend(
                Settings(home=tmp_path / "home", queue_url=redis_url, redis_prefix=prefix),
                SLUGS,
            )
    finally:
        client.delete(f"{prefix}:schema")
        client.close()


_RETOUCH_0_1_SCHEMA = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, slug TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    params TEXT NOT NULL, params_digest TEXT NOT NULL, base64 INTEGER NOT NULL, started_at REAL, finished_at REAL,
    worker TEXT, engine TEXT, metrics TEXT NOT NULL, error TEXT, outputs TEXT NOT NULL);
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_finished ON jobs (finished_at);
CREATE TABLE workers (id TEXT PRIMARY KEY, seen REAL NOT NULL);
"""


def test_a_database_of_retouch_0_1_is_migrated_with_its_records(tmp_path):
    home = tmp_path / "home"
    (home / "jobs" / "old-job").mkdir(parents=True)
    (home / "jobs" / "old-job" / "input-image").write_bytes(b"encoded as sent")
    connection = sqlite3.connect(home / "jobs.db")
    connection.executescript(_RETOUCH_0_1_SCHEMA)
    connection.execute(
        "INSERT INTO jobs VALUES ('old-job', 'slug-a', 'QUEUED', 1.0, '{\"grow_mask\": 1}', 'd', 0, NULL, NULL, NULL, NULL, '{}', NULL, '[]')"
    )
    connection.commit()
    connection.close()
    backend = open_backend(Settings(home=home), SLUGS)
    try:
        record = backend.store.get("old-job")
        assert record.status is Status.QUEUED and record.params == {"grow_mask": 1} and record.attempts == 0
        assert record.inputs == ["input-image"]
        assert backend.store.take("old-job", "w", LEASE).attempts == 1
    finally:
        backend.close()
    version = sqlite3.connect(home / "jobs.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION


def test_a_database_of_a_newer_retouch_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    connection = sqlite3.connect(home / "jobs.db")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(RuntimeError, match="newer retouch"):
        open_backend(Settings(home=home), SLUGS)


# ---- keys, charges, refunds and Idempotency-Keys: in the same store, on both backends ----


def stored_key(backend: Backend, name: str = "alice", credits: float | None = 5.0) -> ApiKey:
    from retouch.jobs.access import new_key

    key, _ = new_key(name, ("slug-a",), credits, "10/minute", SLUGS, time.time())
    backend.store.create_key(key)
    return key


def charged_job(
    backend: Backend,
    key: ApiKey | None,
    charge: float = 1.0,
    idempotency_key: str | None = None,
) -> Admitted:
    record = JobRecord(
        id=uuid.uuid4().hex,
        slug="slug-a",
        status=Status.QUEUED,
        params={},
        params_digest="d",
        owner_key=key.id if key else None,
        charge=charge,
        idempotency_key=idempotency_key,
    )
    return backend.store.admit(record, retention=60)


def test_a_key_reads_back_by_hash_id_and_name_and_goes_when_revoked(store_backend):
    key = stored_key(store_backend)
    for found in (
        store_backend.store.key_by_hash(key.secret_hash),
        store_backend.store.key_by_id(key.id),
        store_backend.store.key_by_name("alice"),
    ):
        assert found == key
    with pytest.raises(Conflict):
        store_backend.store.create_key(key)
    assert store_backend.store.key_count() == 1 and store_backend.store.list_keys() == [key]
    store_backend.store.touch_key(key.id)
    assert store_backend.store.key_by_name("alice").last_used is not None
    assert store_backend.store.delete_key("alice") and not store_backend.store.delete_key("alice")
    assert store_backend.store.key_by_hash(key.secret_hash) is None and store_backend.store.key_count() == 0


def test_credits_are_added_and_taken_never_below_zero(store_backend):
    stored_key(store_backend)
    assert store_backend.store.add_credits("alice", 2.5).credits == 7.5
    assert store_backend.store.add_credits("alice", -100).credits == 0
    assert store_backend.store.add_credits("nobody", 1) is None
    stored_key(store_backend, "unlimited", credits=None)
    assert store_backend.store.add_credits("unlimited", 5).credits is None


def test_admitting_charges_once_and_refuses_past_the_balance(store_backend):
    key = stored_key(store_backend, credits=2.0)
    assert charged_job(store_backend, key).remaining_credits == 1.0
    assert charged_job(store_backend, key).remaining_credits == 0.0
    with pytest.raises(NotEnoughCredits):
        charged_job(store_backend, key)
    assert store_backend.store.key_by_id(key.id).credits == 0
    unlimited = stored_key(store_backend, "unlimited", credits=None)
    admitted = charged_job(store_backend, unlimited)
    assert admitted.remaining_credits is None and store_backend.store.get(admitted.record.id).charge == 0
    store_backend.store.delete_key("alice")
    with pytest.raises(Unauthorized):
        charged_job(store_backend, key)


def test_a_refund_comes_with_the_failing_write_and_only_once(store_backend):
    key = stored_key(store_backend, credits=3.0)
    refunded = charged_job(store_backend, key).record
    store_backend.store.take(refunded.id, "w", LEASE)
    assert store_backend.store.fail(refunded.id, "w", "engine crashed", refund=True)
    assert not store_backend.store.fail(refunded.id, "w", "engine crashed", refund=True)
    assert store_backend.store.key_by_id(key.id).credits == 3.0
    kept = charged_job(store_backend, key).record
    store_backend.store.take(kept.id, "w", LEASE)
    assert store_backend.store.fail(kept.id, "w", "bad request", refund=False)
    assert store_backend.store.key_by_id(key.id).credits == 2.0
    queued = charged_job(store_backend, key).record
    assert store_backend.store.fail_queued(queued.id, "queue refused it")
    assert store_backend.store.key_by_id(key.id).credits == 2.0
    cancelled_while_queued = charged_job(store_backend, key).record
    assert store_backend.store.cancel(cancelled_while_queued.id) is CancelOutcome.CANCELED
    assert store_backend.store.key_by_id(key.id).credits == 2.0
    cancelled_while_running = charged_job(store_backend, key).record
    store_backend.store.take(cancelled_while_running.id, "w", LEASE)
    store_backend.store.cancel(cancelled_while_running.id)
    assert store_backend.store.cancel_at_step(cancelled_while_running.id, "w")
    assert store_backend.store.key_by_id(key.id).credits == 1.0
    store_backend.store.add_credits("alice", 1)
    completed = charged_job(store_backend, key).record
    store_backend.store.take(completed.id, "w", LEASE)
    assert store_backend.store.finish(completed.id, "w", [], "fake", {})
    assert store_backend.store.key_by_id(key.id).credits == 1.0


def test_a_job_that_keeps_killing_its_worker_is_refunded(store_backend):
    key = stored_key(store_backend, credits=1.0)
    record = charged_job(store_backend, key).record
    store_backend.store.take(record.id, "w", 0.05)
    time.sleep(0.2)
    assert store_backend.store.expire_lease(record.id, max_attempts=1) is LeaseOutcome.FAILED
    assert store_backend.store.key_by_id(key.id).credits == 1.0


def test_an_idempotency_key_names_one_live_job_per_owner(store_backend):
    key = stored_key(store_backend, credits=10.0)
    first = charged_job(store_backend, key, idempotency_key="order-1")
    again = charged_job(store_backend, key, idempotency_key="order-1")
    assert again.record is None and again.replay_of == first.record.id
    assert store_backend.store.key_by_id(key.id).credits == 9.0
    assert store_backend.store.find_idempotent(key.id, "order-1", retention=60).id == first.record.id
    assert store_backend.store.find_idempotent(key.id, "order-2", retention=60) is None
    assert charged_job(store_backend, None, idempotency_key="order-1").record is not None
