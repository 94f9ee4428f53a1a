"""Job records: what a request is, where it stands, and where its outputs are. Stored in SQLite."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class Status(str, Enum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    def is_terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELED)


@dataclass
class OutputFile:
    """One stored output image: its blob name and content type."""

    name: str
    content_type: str


@dataclass
class JobRecord:
    id: str
    slug: str
    status: Status
    created_at: float
    params: dict[str, Any]
    params_digest: str
    base64: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    engine: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    outputs: list[OutputFile] = field(default_factory=list)

    def expired(self, retention: float, now: float | None = None) -> bool:
        """Finished longer ago than the retention time. Unfinished jobs never expire: an accepted request is kept."""
        if self.finished_at is None:
            return False
        return (now if now is not None else time.time()) - self.finished_at > retention


_COLUMNS = (
    "id",
    "slug",
    "status",
    "created_at",
    "params",
    "params_digest",
    "base64",
    "started_at",
    "finished_at",
    "worker",
    "engine",
    "metrics",
    "error",
    "outputs",
)

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    seen REAL NOT NULL
);
"""


def _to_row(record: JobRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.slug,
        record.status.value,
        record.created_at,
        json.dumps(record.params),
        record.params_digest,
        int(record.base64),
        record.started_at,
        record.finished_at,
        record.worker,
        record.engine,
        json.dumps(record.metrics),
        record.error,
        json.dumps([output.__dict__ for output in record.outputs]),
    )


def _from_row(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        slug=row["slug"],
        status=Status(row["status"]),
        created_at=row["created_at"],
        params=json.loads(row["params"]),
        params_digest=row["params_digest"],
        base64=bool(row["base64"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker=row["worker"],
        engine=row["engine"],
        metrics=json.loads(row["metrics"]),
        error=row["error"],
        outputs=[OutputFile(**output) for output in json.loads(row["outputs"])],
    )


class JobStore:
    """Job records in one SQLite file, shared by the API and the workers of one machine (WAL mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        with self._connect() as connection:
            connection.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    def create(self, record: JobRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._connect().execute(f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", _to_row(record))

    def get(self, job_id: str) -> JobRecord | None:
        row = self._connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _from_row(row) if row is not None else None

    def save(self, record: JobRecord) -> None:
        assignments = ", ".join(f"{column} = ?" for column in _COLUMNS[1:])
        row = _to_row(record)
        self._connect().execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*row[1:], row[0]))

    def transition(self, job_id: str, expected: Status, new: Status, **changes: Any) -> bool:
        """Move a job from `expected` to `new` atomically; False when another process moved it first."""
        columns = ["status", *changes]
        values = [new.value, *(json.dumps(v) if k in ("metrics",) else v for k, v in changes.items())]
        assignments = ", ".join(f"{column} = ?" for column in columns)
        cursor = self._connect().execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND status = ?", (*values, job_id, expected.value)
        )
        return cursor.rowcount == 1

    def count(self, status: Status) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,)).fetchone()[0]

    def with_status(self, status: Status) -> list[JobRecord]:
        rows = self._connect().execute("SELECT * FROM jobs WHERE status = ? ORDER BY created_at", (status.value,))
        return [_from_row(row) for row in rows]

    def finished_before(self, moment: float) -> list[str]:
        rows = self._connect().execute("SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (moment,))
        return [row["id"] for row in rows]

    def delete(self, job_id: str) -> None:
        self._connect().execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def heartbeat(self, worker_id: str, moment: float) -> None:
        self._connect().execute(
            "INSERT INTO workers (id, seen) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET seen = excluded.seen", (worker_id, moment)
        )

    def forget_worker(self, worker_id: str) -> None:
        self._connect().execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers_seen_since(self, moment: float) -> set[str]:
        """Ids of the workers whose last heartbeat is at or after `moment`."""
        rows = self._connect().execute("SELECT id FROM workers WHERE seen >= ?", (moment,))
        return {row["id"] for row in rows}

    def close(self) -> None:
        """Close every thread's connection; a thread that uses the store afterwards opens a new one."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()
