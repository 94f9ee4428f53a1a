"""The embedded backend: job records in SQLite, blobs in a folder per job, events as Unix datagrams.

Everything lives under RETOUCH_HOME, so the processes that share it (`retouch serve`, any
`retouch worker` beside it) form one deployment on one machine. Conditional writes are single
UPDATEs guarded by their WHERE clause (SQLite applies each atomically, in WAL mode across
processes); the write that ends a job then deletes its input files, being the only one that can.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from huey.storage import SqliteStorage

from retouch.errors import BackendUnavailable, Conflict, StorageFull, Unauthorized
from retouch.jobs.backends.base import NOTICES, not_enough_credits, queue_name
from retouch.jobs.backends.watchers import LocalWatchers
from retouch.jobs.records import (
    DURATION_WEIGHT,
    FIELDS,
    TRIED_TOO_OFTEN,
    Admitted,
    ApiKey,
    CancelOutcome,
    JobRecord,
    LeaseOutcome,
    OutputFile,
    Renewal,
    Status,
    WorkerInfo,
    key_from_fields,
    key_to_fields,
    record_from_fields,
    record_to_fields,
)

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def sqlite_errors(what: str) -> Iterator[None]:
    """SQLite's operational errors (locked past the store timeout, a full or read-only disk) as
    BackendUnavailable (503), StorageFull when the disk is full."""
    try:
        yield
    except sqlite3.OperationalError as error:
        raise storage_error(what, error) from None


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(what: str, error: Exception) -> BackendUnavailable:
    """The client's side of a storage failure: what kind it is, never the server's paths (they are logged)."""
    logger.warning("%s: %s", what, error)
    code = getattr(error, "errno", None)
    text = str(error).lower()
    if code in _FULL_ERRNOS or "disk is full" in text:
        return StorageFull("the server's storage is full; try again later")
    if code in _UNWRITABLE_ERRNOS or "readonly" in text or "read-only" in text:
        return BackendUnavailable("the server's storage cannot be written to now; try again later")
    return BackendUnavailable(f"the server's {what.split(' ')[0]} store is not usable right now; try again in a moment")


@contextlib.contextmanager
def file_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise storage_error(what, error) from None


# ---- blobs ----------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class FileBlobStore:
    """A folder per job. Writes are atomic (a reader in another process never sees half a file)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, name: str) -> Path:
        if not _SAFE_NAME.match(job_id) or not _SAFE_NAME.match(name):
            raise ValueError(f"unsafe blob name {job_id!r}/{name!r}")
        return self.root / job_id / name

    def put(self, job_id: str, name: str, data: bytes, ttl: float | None = None) -> None:
        path = self._path(job_id, name)
        with file_errors(f"blob {path}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    def get(self, job_id: str, name: str) -> bytes | None:
        with file_errors(f"blob {job_id}/{name}"):
            try:
                return self._path(job_id, name).read_bytes()
            except FileNotFoundError:
                return None

    def remove(self, job_id: str, name: str) -> None:
        with file_errors(f"blob {job_id}/{name}"):
            self._path(job_id, name).unlink(missing_ok=True)

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self._path(job_id, "x").parent, ignore_errors=True)

    def job_ids(self, older_than: float | None = None) -> list[str]:
        """Ids of the job folders, optionally only those last modified before `older_than` (a timestamp)."""
        ids = []
        for entry in self.root.iterdir():
            try:
                if entry.is_dir() and (older_than is None or entry.stat().st_mtime < older_than):
                    ids.append(entry.name)
            except FileNotFoundError:
                continue
        return ids

    def close(self) -> None:
        return None


# ---- records ---------------------------------------------------------------------------------

# Each migration takes the schema from the version before it to its own; PRAGMA user_version holds
# the version reached. Version 1 is the schema of retouch 0.1 (its databases have user_version 0
# and the tables already there, which the IF NOT EXISTS keeps).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        slug TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        params TEXT NOT NULL,
        params_digest TEXT NOT NULL,
        base64 INTEGER NOT NULL,
        started_at REAL,
        finished_at REAL,
        worker TEXT,
        engine TEXT,
        metrics TEXT NOT NULL,
        error TEXT,
        outputs TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
    CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
    CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, seen REAL NOT NULL);
    """,
    """
    ALTER TABLE jobs ADD COLUMN inputs TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    ALTER TABLE jobs ADD COLUMN enqueued_at REAL;
    ALTER TABLE jobs ADD COLUMN progress REAL;
    ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN owner_key TEXT;
    ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE jobs ADD COLUMN webhook TEXT;
    CREATE INDEX IF NOT EXISTS jobs_slug_status ON jobs (slug, status);
    ALTER TABLE workers ADD COLUMN slugs TEXT NOT NULL DEFAULT '[]';
    """,
    """
    ALTER TABLE workers ADD COLUMN threads INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE IF NOT EXISTS durations (slug TEXT PRIMARY KEY, seconds REAL NOT NULL);
    """,
    """
    ALTER TABLE jobs ADD COLUMN charge REAL NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS jobs_idempotency ON jobs (owner_key, idempotency_key);
    CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        secret_hash TEXT NOT NULL UNIQUE,
        models TEXT,
        credits REAL,
        rate TEXT,
        created_at REAL NOT NULL,
        last_used REAL,
        webhook_secret TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_TERMINAL = tuple(status.value for status in Status if status.is_terminal())


def migrate(connection: sqlite3.Connection, legacy_inputs: Callable[[str], list[str]]) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it was at. `legacy_inputs(job_id)` names the
    input blobs of a job recorded by retouch 0.1, which did not record them."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = connection.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the job database was written by a newer retouch (schema {found}; this one knows {SCHEMA_VERSION}); "
                "upgrade retouch, or give this one another RETOUCH_HOME"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    connection.execute(statement)
            if version == 1:
                unfinished = connection.execute("SELECT id FROM jobs WHERE status IN ('QUEUED', 'PROCESSING')").fetchall()
                for (job_id,) in unfinished:
                    connection.execute(
                        "UPDATE jobs SET inputs = ? WHERE id = ?",
                        (json.dumps(legacy_inputs(job_id)), job_id),
                    )
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return found


class SqliteJobStore:
    """Job records in one SQLite file shared by the processes of one home (WAL mode).

    One connection per process, its statements taken in turn under a lock: threads of one process
    then wait on the lock, which hands over at once, rather than on SQLite's busy handler, which
    sleeps in steps of up to 100 ms (the p99 of a loaded server went from 0.9 s to that of its p50).
    """

    def __init__(self, path: Path, blobs: FileBlobStore, timeout: float) -> None:
        self.path = path
        self.blobs = blobs
        self.timeout = timeout
        self._lock = threading.Lock()
        with self._errors():
            self._connection = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            migrate(self._connection, self._legacy_inputs)

    def _legacy_inputs(self, job_id: str) -> list[str]:
        folder = self.blobs.root / job_id
        return sorted(entry.name for entry in folder.glob("input-*")) if folder.is_dir() else []

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return sqlite_errors(f"job database {self.path}")

    def _rows(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._errors(), self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    def _change(self, sql: str, parameters: tuple[Any, ...] = ()) -> int:
        """Rows changed by a statement."""
        with self._errors(), self._lock:
            return self._connection.execute(sql, parameters).rowcount

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Statements that happen all together or not at all (and, under the lock, alone in this process)."""
        with self._errors(), self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def now(self) -> float:
        return time.time()

    def ping(self) -> None:
        self._rows("SELECT 1 FROM jobs LIMIT 1")

    def _live_idempotent(
        self,
        connection: sqlite3.Connection,
        owner_key: str | None,
        idempotency_key: str,
        retention: float,
    ) -> sqlite3.Row | None:
        row = connection.execute(
            "SELECT * FROM jobs WHERE owner_key IS ? AND idempotency_key = ? ORDER BY created_at DESC LIMIT 1",
            (owner_key, idempotency_key),
        ).fetchone()
        if row is None or (row["finished_at"] is not None and self.now() - row["finished_at"] > retention):
            return None
        return row

    def find_idempotent(self, owner_key: str | None, idempotency_key: str, retention: float) -> JobRecord | None:
        with self._errors(), self._lock:
            row = self._live_idempotent(self._connection, owner_key, idempotency_key, retention)
        return record_from_fields(dict(row)) if row is not None else None

    def admit(self, record: JobRecord, retention: float) -> Admitted:
        remaining: float | None = None
        with self._transaction() as connection:
            if record.idempotency_key is not None:
                existing = self._live_idempotent(connection, record.owner_key, record.idempotency_key, retention)
                if existing is not None:
                    return Admitted(record=None, replay_of=existing["id"])
                # An expired job may keep its key: the new one takes it over.
                connection.execute(
                    "UPDATE jobs SET idempotency_key = NULL WHERE owner_key IS ? AND idempotency_key = ?",
                    (record.owner_key, record.idempotency_key),
                )
            if record.owner_key is not None:
                row = connection.execute("SELECT credits FROM api_keys WHERE id = ?", (record.owner_key,)).fetchone()
                if row is None:
                    raise Unauthorized("this API key has been revoked; ask the operator for another")
                if row[0] is None:
                    record.charge = 0.0
                elif record.charge > 0:
                    if row[0] + 1e-9 < record.charge:
                        raise not_enough_credits(row[0], record.charge)
                    remaining = connection.execute(
                        "UPDATE api_keys SET credits = MAX(0, credits - ?) WHERE id = ? RETURNING credits",
                        (record.charge, record.owner_key),
                    ).fetchone()[0]
                else:
                    remaining = row[0]
            now = self.now()
            record.created_at = record.enqueued_at = now
            values = record_to_fields(record)
            placeholders = ", ".join("?" for _ in FIELDS)
            connection.execute(
                f"INSERT INTO jobs ({', '.join(FIELDS)}) VALUES ({placeholders})",
                tuple(values[name] for name in FIELDS),
            )
        return Admitted(record=record, remaining_credits=remaining)

    # ---- API keys ----

    def create_key(self, key: ApiKey) -> None:
        values = key_to_fields(key)
        try:
            self._change(
                f"INSERT INTO api_keys ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
                tuple(values.values()),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"a key named {key.name!r} exists already; choose another name, or revoke it first") from None

    def _key_where(self, column: str, value: str) -> ApiKey | None:
        rows = self._rows(f"SELECT * FROM api_keys WHERE {column} = ?", (value,))
        return key_from_fields(dict(rows[0])) if rows else None

    def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        return self._key_where("secret_hash", secret_hash)

    def key_by_id(self, key_id: str) -> ApiKey | None:
        return self._key_where("id", key_id)

    def key_by_name(self, name: str) -> ApiKey | None:
        return self._key_where("name", name)

    def list_keys(self) -> list[ApiKey]:
        return [key_from_fields(dict(row)) for row in self._rows("SELECT * FROM api_keys ORDER BY created_at")]

    def delete_key(self, name: str) -> bool:
        return self._change("DELETE FROM api_keys WHERE name = ?", (name,)) == 1

    def add_credits(self, name: str, delta: float) -> ApiKey | None:
        self._change(
            "UPDATE api_keys SET credits = MAX(0, credits + ?) WHERE name = ? AND credits IS NOT NULL",
            (delta, name),
        )
        return self.key_by_name(name)

    def touch_key(self, key_id: str) -> None:
        self._change("UPDATE api_keys SET last_used = ? WHERE id = ?", (self.now(), key_id))

    def key_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM api_keys")[0][0])

    def create(self, record: JobRecord) -> JobRecord:
        now = self.now()
        record.created_at = record.enqueued_at = now
        values = record_to_fields(record)
        placeholders = ", ".join("?" for _ in FIELDS)
        self._change(
            f"INSERT INTO jobs ({', '.join(FIELDS)}) VALUES ({placeholders})",
            tuple(values[name] for name in FIELDS),
        )
        return record

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return record_from_fields(dict(rows[0])) if rows else None

    def take(self, job_id: str, worker: str, lease: float) -> JobRecord | None:
        now = self.now()
        rows = self._rows(
            "UPDATE jobs SET status = 'PROCESSING', worker = ?, started_at = ?, lease_until = ?, attempts = attempts + 1,"
            " progress = NULL WHERE id = ? AND status = 'QUEUED' RETURNING *",
            (worker, now, now + lease, job_id),
        )
        return record_from_fields(dict(rows[0])) if rows else None

    def renew(self, job_id: str, worker: str, lease: float) -> Renewal:
        rows = self._rows(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'PROCESSING' AND worker = ? RETURNING cancel_requested",
            (self.now() + lease, job_id, worker),
        )
        if not rows:
            return Renewal.LOST
        return Renewal.CANCEL_REQUESTED if rows[0][0] else Renewal.OWNED

    def set_progress(self, job_id: str, worker: str, fraction: float) -> bool:
        return (
            self._change(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'PROCESSING' AND worker = ?",
                (fraction, job_id, worker),
            )
            == 1
        )

    def _end(
        self,
        job_id: str,
        guard: str,
        guard_parameters: tuple[Any, ...],
        changes: dict[str, Any],
        refund: bool = False,
    ) -> bool:
        """The write that ends a job: guarded, and then the only one that deletes its inputs. `refund`: in the same
        transaction, the job's charge goes back to its key (so a refund happens once, with the one ending write)."""
        changes = {**changes, "finished_at": self.now(), "lease_until": None}
        assignments = ", ".join(f"{name} = ?" for name in changes)
        with self._transaction() as connection:
            rows = connection.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND {guard} RETURNING inputs, owner_key, charge",
                (*changes.values(), job_id, *guard_parameters),
            ).fetchall()
            if rows and refund and rows[0][1] is not None and rows[0][2] > 0:
                connection.execute(
                    "UPDATE api_keys SET credits = credits + ? WHERE id = ? AND credits IS NOT NULL",
                    (rows[0][2], rows[0][1]),
                )
        if not rows:
            return False
        try:
            for name in json.loads(rows[0][0]):
                self.blobs.remove(job_id, name)
        except BackendUnavailable:
            # The job has ended all the same; its folder goes at retention.
            logger.warning("request %s ended, but its inputs could not be deleted yet", job_id)
        return True

    def finish(
        self,
        job_id: str,
        worker: str,
        outputs: list[OutputFile],
        engine: str,
        metrics: dict[str, Any],
    ) -> bool:
        changes = {
            "status": Status.COMPLETED.value,
            "outputs": json.dumps([output.__dict__ for output in outputs]),
            "engine": engine,
            "metrics": json.dumps(metrics),
            "progress": 1.0,
        }
        return self._end(job_id, "status = 'PROCESSING' AND worker = ?", (worker,), changes)

    def fail(
        self,
        job_id: str,
        worker: str,
        error: str,
        metrics: dict[str, Any] | None = None,
        refund: bool = True,
    ) -> bool:
        changes: dict[str, Any] = {"status": Status.FAILED.value, "error": error}
        if metrics is not None:
            changes["metrics"] = json.dumps(metrics)
        return self._end(
            job_id,
            "status = 'PROCESSING' AND worker = ?",
            (worker,),
            changes,
            refund=refund,
        )

    def fail_queued(self, job_id: str, error: str) -> bool:
        return self._end(
            job_id,
            "status = 'QUEUED'",
            (),
            {"status": Status.FAILED.value, "error": error},
            refund=True,
        )

    def cancel(self, job_id: str) -> CancelOutcome:
        if self._end(
            job_id,
            "status = 'QUEUED'",
            (),
            {"status": Status.CANCELED.value, "error": "the request was cancelled"},
            refund=True,
        ):
            return CancelOutcome.CANCELED
        if (
            self._change(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'PROCESSING'",
                (job_id,),
            )
            == 1
        ):
            return CancelOutcome.REQUESTED
        return CancelOutcome.NOT_FOUND if self.get(job_id) is None else CancelOutcome.ENDED

    def cancel_at_step(self, job_id: str, worker: str) -> bool:
        changes = {
            "status": Status.CANCELED.value,
            "error": "the request was cancelled while it ran",
        }
        return self._end(job_id, "status = 'PROCESSING' AND worker = ?", (worker,), changes)

    def expired_leases(self, slug: str) -> list[str]:
        rows = self._rows(
            "SELECT id FROM jobs WHERE slug = ? AND status = 'PROCESSING' AND lease_until < ?",
            (slug, self.now()),
        )
        return [row[0] for row in rows]

    def expire_lease(self, job_id: str, max_attempts: int) -> LeaseOutcome | None:
        now = self.now()
        guard = "status = 'PROCESSING' AND lease_until < ?"
        record = self.get(job_id)
        if record is None or record.status is not Status.PROCESSING:
            return None
        if record.attempts >= max_attempts:
            error = TRIED_TOO_OFTEN.format(attempts=record.attempts, worker=record.worker)
            ended = self._end(
                job_id,
                guard + " AND attempts = ?",
                (now, record.attempts),
                {"status": Status.FAILED.value, "error": error},
                refund=True,
            )
            return LeaseOutcome.FAILED if ended else None
        changed = self._change(
            f"UPDATE jobs SET status = 'QUEUED', worker = NULL, lease_until = NULL, started_at = NULL, progress = NULL,"
            f" enqueued_at = ? WHERE id = ? AND {guard}",
            (now, job_id, now),
        )
        return LeaseOutcome.REQUEUED if changed == 1 else None

    def stale_queued(self, slug: str, older_than: float) -> list[str]:
        rows = self._rows(
            "SELECT id FROM jobs WHERE slug = ? AND status = 'QUEUED' AND enqueued_at < ? ORDER BY created_at",
            (slug, self.now() - older_than),
        )
        return [row[0] for row in rows]

    def mark_enqueued(self, job_id: str) -> bool:
        return (
            self._change(
                "UPDATE jobs SET enqueued_at = ? WHERE id = ? AND status = 'QUEUED'",
                (self.now(), job_id),
            )
            == 1
        )

    def count(self, status: Status, slug: str | None = None) -> int:
        if slug is None:
            return self._rows("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,))[0][0]
        return self._rows(
            "SELECT COUNT(*) FROM jobs WHERE slug = ? AND status = ?",
            (slug, status.value),
        )[0][0]

    def heartbeat(self, worker: str, slugs: tuple[str, ...], threads: int) -> None:
        self._change(
            "INSERT INTO workers (id, seen, slugs, threads) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
            " seen = excluded.seen, slugs = excluded.slugs, threads = excluded.threads",
            (worker, self.now(), json.dumps(list(slugs)), threads),
        )

    def live_workers(self, within: float) -> dict[str, WorkerInfo]:
        rows = self._rows(
            "SELECT id, slugs, threads FROM workers WHERE seen >= ?",
            (self.now() - within,),
        )
        return {row["id"]: WorkerInfo(slugs=tuple(json.loads(row["slugs"])), threads=row["threads"]) for row in rows}

    def record_duration(self, slug: str, seconds: float) -> None:
        self._change(
            "INSERT INTO durations (slug, seconds) VALUES (?, ?) ON CONFLICT(slug) DO UPDATE SET seconds = ? * excluded.seconds + ? * seconds",
            (slug, seconds, DURATION_WEIGHT, 1 - DURATION_WEIGHT),
        )

    def typical_durations(self) -> dict[str, float]:
        return {row["slug"]: row["seconds"] for row in self._rows("SELECT slug, seconds FROM durations")}

    def forget_worker(self, worker: str) -> None:
        self._change("DELETE FROM workers WHERE id = ?", (worker,))

    def storage_problem(self, min_free_bytes: int) -> str | None:
        free = shutil.disk_usage(self.path.parent).free
        if free < min_free_bytes:
            return f"the server's disk has {free / 1e6:.0f} MB free, below the {min_free_bytes / 1e6:.0f} MB it keeps (RETOUCH_MIN_FREE_BYTES)"
        return None

    def purge_expired(self, retention: float) -> int:
        now = self.now()
        placeholders = ", ".join("?" for _ in _TERMINAL)
        rows = self._rows(
            f"SELECT id FROM jobs WHERE status IN ({placeholders}) AND finished_at < ?",
            (*_TERMINAL, now - retention),
        )
        for (job_id,) in rows:
            self.blobs.delete_job(job_id)
            self._change("DELETE FROM jobs WHERE id = ?", (job_id,))
        # Folders without a record: a crash between the two deletes above. A submission writes its
        # inputs before its record, so only folders older than any submission in flight are orphans.
        for job_id in self.blobs.job_ids(older_than=now - max(retention, ORPHAN_GRACE_SECONDS)):
            if self.get(job_id) is None:
                self.blobs.delete_job(job_id)
        self._change("DELETE FROM workers WHERE seen < ?", (now - WORKER_FORGOTTEN_AFTER,))
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._connection.close()


ORPHAN_GRACE_SECONDS = 600.0
WORKER_FORGOTTEN_AFTER = 86_400.0


# ---- queue ----------------------------------------------------------------------------------


class SqliteJobQueue:
    """Rows of Huey's SqliteStorage; an idle worker polls them, woken at once by a datagram when a job is queued."""

    def __init__(
        self,
        path: Path,
        prefix: str,
        slugs: tuple[str, ...],
        events: DatagramEvents,
        timeout: float,
    ) -> None:
        self.events = events
        self._storages = {slug: SqliteStorage(name=queue_name(prefix, slug), filename=str(path), timeout=timeout) for slug in slugs}
        # The slugs' storages share one connection and its lock, as the job store does (see there), and
        # commit without an fsync each (WAL's NORMAL: an entry is lost only with the machine's power,
        # and a lost entry is put back by the sweep).
        first = next(iter(self._storages.values()))
        with self._errors():
            first.conn.execute("PRAGMA synchronous=NORMAL")
        for storage in self._storages.values():
            storage._conn, storage.lock = first.conn, first.lock
        self._turn = itertools.count()

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return sqlite_errors("queue database")

    def enqueue(self, slug: str, job_id: str) -> None:
        with self._errors():
            self._storages[slug].enqueue(job_id.encode())
        self.events.publish_wake(slug)

    def _next(self, slugs: tuple[str, ...]) -> str | None:
        # Each look starts at another slug, so that one busy slug cannot starve the others.
        start = next(self._turn) % len(slugs)
        for slug in slugs[start:] + slugs[:start]:
            with self._errors():
                data = self._storages[slug].dequeue()
            if data is not None:
                return bytes(data).decode()
        return None

    def dequeue(self, slugs: tuple[str, ...], timeout: float) -> str | None:
        job_id = self._next(slugs)
        if job_id is None and self.events.wait_for_wake(timeout):
            job_id = self._next(slugs)
        return job_id

    def pending(self, slug: str) -> int:
        with self._errors():
            return self._storages[slug].queue_size()

    def interrupt(self) -> None:
        self.events.watchers.wake.set()

    def close(self) -> None:
        next(iter(self._storages.values())).close()


# ---- events ----------------------------------------------------------------------------------

_WAKE = "wake"
# Unix socket paths are limited to 108 bytes on Linux (104 on macOS).
_MAX_SOCKET_PATH = 100


def socket_folder(run_path: Path) -> Path:
    """The folder of the sockets: run_path itself, or a short one in the temp dir when its path is too long."""
    if len(str(run_path)) + 30 <= _MAX_SOCKET_PATH:
        return run_path
    digest = hashlib.sha256(str(run_path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"retouch-{os.getuid()}-{digest}"


class DatagramEvents:
    """Events between the processes of one home: each binds a Unix datagram socket in a shared folder,
    and every notice is sent to all of them. A lost datagram costs only latency: workers still poll
    (at `idle_poll`) and waiters re-check the record."""

    def __init__(self, run_path: Path) -> None:
        self.folder = socket_folder(run_path)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.folder.stat().st_uid != os.getuid():
            raise RuntimeError(f"{self.folder} belongs to another user; set RETOUCH_HOME to a folder of your own")
        self.watchers = LocalWatchers()
        self._path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self._path))
        self._closed = False
        self._thread = threading.Thread(target=self._listen, name="retouch-events", daemon=True)
        self._thread.start()

    def publish_wake(self, slug: str) -> None:
        self.watchers.wake.set()
        self._broadcast(f"{_WAKE} {slug}")

    def wake_event_set(self) -> bool:
        return self.watchers.wake.is_set()

    def wait_for_wake(self, timeout: float) -> bool:
        woken = self.watchers.wake.wait(timeout)
        self.watchers.wake.clear()
        return woken

    def publish_changed(self, job_id: str, kind: str) -> None:
        self.watchers.notify(job_id, kind)
        self._broadcast(f"{kind} {job_id}")

    def watch(self, job_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        return self.watchers.watch(job_id, callback)

    async def wait_changed(self, job_id: str, timeout: float, is_done: Callable[[], bool], recheck: float) -> bool:
        return await self.watchers.wait_changed(job_id, timeout, is_done, recheck)

    def _broadcast(self, text: str) -> None:
        message = text.encode()
        for path in self.folder.glob("*.sock"):
            if path == self._path:
                continue
            try:
                self._socket.sendto(message, socket.MSG_DONTWAIT, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)
            except (BlockingIOError, OSError) as exc:
                logger.debug("notice to %s not sent: %s", path, exc)

    def _listen(self) -> None:
        while not self._closed:
            try:
                message = self._socket.recv(512)
            except OSError:
                return
            kind, _, subject = message.decode(errors="replace").partition(" ")
            if kind == _WAKE:
                self.watchers.wake.set()
            elif kind in NOTICES and subject:
                self.watchers.notify(subject, kind)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # The listener is blocked in recv: a datagram to ourselves lets it see the flag and return.
            self._socket.sendto(b"stop", socket.MSG_DONTWAIT, str(self._path))
        except OSError:
            pass
        self._thread.join(timeout=2)
        self._socket.close()
        self._path.unlink(missing_ok=True)
