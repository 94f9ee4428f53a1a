"""The three small interfaces the job system stands on, after Huey's storage classes.

Each has an embedded implementation (SQLite, files and datagrams under RETOUCH_HOME: one machine)
and a Redis one (a fleet on several hosts, nothing shared through a disk). The service, the
workers and the sweep see only these.

Ownership (see JOBS.md): `take` is the one compare-and-set that makes a worker a job's owner;
every later write by a worker (`renew`, `set_progress`, `finish`, `fail`, `cancel_at_step`) is
conditional on "still PROCESSING and still mine" and answers False (or LOST) otherwise, writing
nothing. The write that ends a job deletes its inputs and starts its retention clock, on the
record and the blobs together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from retouch.errors import NotEnoughCredits
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

# What a notice about a job says: it ended, it made progress, or its cancellation was asked for.
NOTICES = ("ended", "progress", "cancel")

# Inputs are stored before their record; until the record claims them they expire on their own
# (where the backend can), so that a submission cut short leaves nothing behind.
UNCLAIMED_INPUT_TTL = 3600.0


def not_enough_credits(remaining: float, price: float) -> NotEnoughCredits:
    return NotEnoughCredits(
        f"this API key has {remaining:g} credits left and the request costs {price:g}; ask the operator to add credits (retouch keys credit NAME +N)",
        remaining,
    )


def queue_name(prefix: str, slug: str) -> str:
    """The Huey queue of a slug (Huey keeps only letters, digits and underscores of a name)."""
    return f"{prefix}_{slug.replace('-', '_')}"


class JobStore(Protocol):
    def now(self) -> float:
        """The store's clock, which every timestamp of every record comes from."""

    def ping(self) -> None:
        """Return if the store answers; raise BackendUnavailable if not."""

    def create(self, record: JobRecord) -> JobRecord:
        """Store a new QUEUED record; its created_at and enqueued_at are set from the store's clock."""

    def admit(self, record: JobRecord, retention: float) -> Admitted:
        """Create, at once and all or nothing: if the record has an idempotency_key that a live job of the same
        owner already has, nothing is written and `replay_of` names that job; otherwise the owner's key is charged
        `record.charge` (NotEnoughCredits if it has fewer; an unlimited key pays nothing, and the record says 0)
        and the record is created as `create` does. Unauthorized if the owner's key is gone."""

    def find_idempotent(self, owner_key: str | None, idempotency_key: str, retention: float) -> JobRecord | None:
        """The live (not expired) job of `owner_key` with this Idempotency-Key, if there is one."""

    def get(self, job_id: str) -> JobRecord | None: ...

    def take(self, job_id: str, worker: str, lease: float) -> JobRecord | None:
        """QUEUED to PROCESSING, owned by `worker` until now + lease, attempts + 1; None if not QUEUED."""

    def renew(self, job_id: str, worker: str, lease: float) -> Renewal: ...

    def set_progress(self, job_id: str, worker: str, fraction: float) -> bool: ...

    def finish(
        self,
        job_id: str,
        worker: str,
        outputs: list[OutputFile],
        engine: str,
        metrics: dict[str, Any],
    ) -> bool:
        """PROCESSING (owned by `worker`) to COMPLETED, publishing `outputs` (already stored as blobs)."""

    def fail(
        self,
        job_id: str,
        worker: str,
        error: str,
        metrics: dict[str, Any] | None = None,
        refund: bool = True,
    ) -> bool:
        """PROCESSING (owned by `worker`) to FAILED; `refund`: the same write gives the job's charge back to its key
        (a failure of the server's, not of the caller's request)."""

    def fail_queued(self, job_id: str, error: str) -> bool:
        """QUEUED to FAILED: the queue refused the job right after it was recorded (refunded)."""

    def cancel(self, job_id: str) -> CancelOutcome:
        """QUEUED: CANCELED now, refunded (nothing ran). PROCESSING: flagged, ended by its worker at the next step
        (the charge kept: the work was under way)."""

    def cancel_at_step(self, job_id: str, worker: str) -> bool:
        """PROCESSING (owned by `worker`) to CANCELED."""

    def expired_leases(self, slug: str) -> list[str]:
        """PROCESSING jobs of `slug` whose lease has run out (their worker stopped renewing)."""

    def expire_lease(self, job_id: str, max_attempts: int) -> LeaseOutcome | None:
        """If its lease has run out: back to QUEUED, or FAILED (refunded) once it has had `max_attempts`. None: nothing done."""

    def stale_queued(self, slug: str, older_than: float) -> list[str]:
        """QUEUED jobs of `slug` last put on the queue more than `older_than` seconds ago."""

    def mark_enqueued(self, job_id: str) -> bool:
        """Record that a QUEUED job was put on the queue again now; False if it is no longer QUEUED."""

    def count(self, status: Status, slug: str | None = None) -> int:
        """QUEUED or PROCESSING jobs (of one slug, or all)."""

    def heartbeat(self, worker: str, slugs: tuple[str, ...], threads: int) -> None: ...

    def live_workers(self, within: float) -> dict[str, WorkerInfo]:
        """Workers heard from in the last `within` seconds, with the slugs each serves and its threads."""

    def forget_worker(self, worker: str) -> None: ...

    def record_duration(self, slug: str, seconds: float) -> None:
        """Fold one job's time on a worker into the slug's moving average (for admission)."""

    def typical_durations(self) -> dict[str, float]:
        """Each slug's moving average of the time its jobs take on a worker, where one is known."""

    def storage_problem(self, min_free_bytes: int) -> str | None:
        """Why the store may soon refuse writes (a disk nearly full, Redis near its maxmemory), or None."""

    def purge_expired(self, retention: float) -> int:
        """Delete the records and blobs of jobs that ended more than `retention` ago (Redis expires them itself)."""

    # ---- API keys: in the same store, so that every replica sees a revocation at once ----

    def create_key(self, key: ApiKey) -> None:
        """Conflict (409) if a key of that name exists."""

    def key_by_hash(self, secret_hash: str) -> ApiKey | None: ...

    def key_by_id(self, key_id: str) -> ApiKey | None: ...

    def key_by_name(self, name: str) -> ApiKey | None: ...

    def list_keys(self) -> list[ApiKey]: ...

    def delete_key(self, name: str) -> bool: ...

    def add_credits(self, name: str, delta: float) -> ApiKey | None:
        """Add (or with a negative delta take) credits, atomically; a balance never goes below 0. None: no such key.
        A key with unlimited credits keeps them unlimited."""

    def touch_key(self, key_id: str) -> None:
        """Record that the key was used now."""

    def key_count(self) -> int: ...

    def close(self) -> None: ...


class JobQueue(Protocol):
    """One queue per slug, on Huey's storage classes; each entry is a job id, and only a hint (the record decides)."""

    def enqueue(self, slug: str, job_id: str) -> None: ...

    def dequeue(self, slugs: tuple[str, ...], timeout: float) -> str | None:
        """The next job id of any of `slugs`, waiting up to `timeout` seconds for one; None if none came."""

    def pending(self, slug: str) -> int: ...

    def interrupt(self) -> None:
        """End the waits of this process's idle dequeues now (workers stopping)."""

    def close(self) -> None: ...


class BlobStore(Protocol):
    """A job's inputs and outputs, by name. Unpublished blobs expire on their own (`ttl`) where the backend can."""

    def put(self, job_id: str, name: str, data: bytes, ttl: float | None = None) -> None: ...

    def get(self, job_id: str, name: str) -> bytes | None: ...

    def delete_job(self, job_id: str) -> None: ...

    def close(self) -> None: ...


class Events(Protocol):
    """Best-effort notices between processes; the record always decides (a notice may be lost, late or stale)."""

    def publish_wake(self, slug: str) -> None:
        """A job of `slug` was queued: wake an idle worker that polls (blocking queues need no wake-up)."""

    def wake_event_set(self) -> bool:
        """Wait-free check used by polling workers: was a wake-up heard since the last check?"""

    def wait_for_wake(self, timeout: float) -> bool: ...

    def publish_changed(self, job_id: str, kind: str) -> None:
        """The job's record changed in a way someone may wait for: `kind` is one of NOTICES."""

    def watch(self, job_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(kind)` (from another thread) on each notice about `job_id`; returns the function that stops it."""

    async def wait_changed(self, job_id: str, timeout: float, is_done: Callable[[], bool], recheck: float) -> bool:
        """True once `is_done()` (a read of the record) says so, False after `timeout`; wakes on notices, and
        re-checks every `recheck` seconds as a safety net."""

    def close(self) -> None: ...
