"""What a job is: its status, its record, and the answers of the store's conditional writes.

Every timestamp on a record comes from the job store's own clock (Redis's TIME in fleet mode), so
that hosts whose clocks disagree still agree on leases, queue times and retention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    def is_terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELED)


class Renewal(str, Enum):
    """What renewing a lease says: still ours, ours but cancelled by the caller, or no longer ours."""

    OWNED = "OWNED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    LOST = "LOST"


class CancelOutcome(str, Enum):
    CANCELED = "CANCELED"  # it was QUEUED: it ended at once
    REQUESTED = "REQUESTED"  # it is PROCESSING: it ends at its engine's next step
    ENDED = "ENDED"  # it had already ended: nothing to cancel
    NOT_FOUND = "NOT_FOUND"


class LeaseOutcome(str, Enum):
    REQUEUED = "REQUEUED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker's heartbeat says: the slugs it serves and how many jobs it runs at once."""

    slugs: tuple[str, ...]
    threads: int


# Weight of the newest job in a slug's moving average of job times.
DURATION_WEIGHT = 0.2


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
    params: dict[str, Any]
    params_digest: str
    created_at: float = 0.0
    base64: bool = False
    #: Blob names of the decoded inputs; deleted by the write that ends the job.
    inputs: list[str] = field(default_factory=list)
    attempts: int = 0
    worker: str | None = None
    lease_until: float | None = None
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    progress: float | None = None
    cancel_requested: bool = False
    engine: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    outputs: list[OutputFile] = field(default_factory=list)
    #: The id of the API key that submitted the request (None with keys off), and the credits it paid.
    owner_key: str | None = None
    charge: float = 0.0
    idempotency_key: str | None = None
    #: JSON: {"url": where to deliver, "base": the public base URL the result links use}.
    webhook: str | None = None

    def expired(self, retention: float, now: float) -> bool:
        """Ended longer ago than the retention time. Unfinished jobs never expire: an accepted request is kept."""
        return self.finished_at is not None and now - self.finished_at > retention

    def timings(self) -> dict[str, float]:
        """queue_time and total_time, from the record's own timestamps (one clock: the store's)."""
        timings: dict[str, float] = {}
        if self.started_at is not None:
            timings["queue_time"] = round(max(0.0, self.started_at - self.created_at), 4)
        if self.finished_at is not None:
            timings["total_time"] = round(max(0.0, self.finished_at - self.created_at), 4)
            timings.setdefault("queue_time", timings["total_time"])
        return timings

    def public_metrics(self) -> dict[str, Any]:
        """The metrics a client sees: the worker's (inference_time, engine, seed...) and the timings."""
        return {**self.metrics, **self.timings()}


TRIED_TOO_OFTEN = "this request was tried {attempts} times and its worker stopped each time (last on {worker}); it is not tried again"

# The fields stored as JSON text (the others are plain strings or numbers).
_JSON_FIELDS = ("params", "inputs", "metrics", "outputs")
_OPTIONAL_TEXT = (
    "worker",
    "engine",
    "error",
    "owner_key",
    "idempotency_key",
    "webhook",
)
FIELDS = tuple(JobRecord.__dataclass_fields__)


def record_to_fields(record: JobRecord) -> dict[str, Any]:
    """The record as flat values: text, numbers or None (JSON text for the structured ones)."""
    values: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(record, name)
        if name == "outputs":
            value = json.dumps([output.__dict__ for output in value])
        elif name in _JSON_FIELDS:
            value = json.dumps(value)
        elif name == "status":
            value = value.value
        elif isinstance(value, bool):
            value = int(value)
        values[name] = value
    return values


def record_from_fields(values: dict[str, Any]) -> JobRecord:
    """The inverse of record_to_fields; missing or empty optional values read as None (Redis has no null)."""

    def optional_float(name: str) -> float | None:
        value = values.get(name)
        return None if value is None or value == "" else float(value)

    def optional_text(name: str) -> str | None:
        value = values.get(name)
        return None if value is None or value == "" else str(value)

    return JobRecord(
        id=str(values["id"]),
        slug=str(values["slug"]),
        status=Status(values["status"]),
        params=json.loads(values["params"]),
        params_digest=str(values.get("params_digest") or ""),
        created_at=float(values.get("created_at") or 0.0),
        base64=bool(int(values.get("base64") or 0)),
        inputs=json.loads(values.get("inputs") or "[]"),
        attempts=int(values.get("attempts") or 0),
        lease_until=optional_float("lease_until"),
        enqueued_at=optional_float("enqueued_at"),
        started_at=optional_float("started_at"),
        finished_at=optional_float("finished_at"),
        progress=optional_float("progress"),
        charge=float(values.get("charge") or 0.0),
        cancel_requested=bool(int(values.get("cancel_requested") or 0)),
        metrics=json.loads(values.get("metrics") or "{}"),
        outputs=[OutputFile(**output) for output in json.loads(values.get("outputs") or "[]")],
        **{name: optional_text(name) for name in _OPTIONAL_TEXT},
    )


@dataclass
class ApiKey:
    """An API key as stored: never its secret, only the secret's SHA-256."""

    id: str
    name: str
    secret_hash: str
    #: The slugs it may use; None: all of them.
    models: tuple[str, ...] | None
    #: Credits left; None: unlimited.
    credits: float | None
    #: Its rate limit in the `limits` notation ("60/minute"); None: no limit.
    rate: str | None
    created_at: float
    last_used: float | None
    #: The secret its webhook deliveries are signed with (the receiver is given it once, at creation).
    webhook_secret: str

    def may_use(self, slug: str) -> bool:
        return self.models is None or slug in self.models


def key_to_fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "secret_hash": key.secret_hash,
        "models": None if key.models is None else ",".join(key.models),
        "credits": key.credits,
        "rate": key.rate,
        "created_at": key.created_at,
        "last_used": key.last_used,
        "webhook_secret": key.webhook_secret,
    }


def key_from_fields(values: dict[str, Any]) -> ApiKey:
    def optional(name: str) -> Any:
        value = values.get(name)
        return None if value is None or value == "" else value

    models = optional("models")
    credits = optional("credits")
    last_used = optional("last_used")
    return ApiKey(
        id=str(values["id"]),
        name=str(values["name"]),
        secret_hash=str(values["secret_hash"]),
        models=None if models is None else tuple(slug for slug in str(models).split(",") if slug),
        credits=None if credits is None else float(credits),
        rate=optional("rate"),
        created_at=float(values.get("created_at") or 0.0),
        last_used=None if last_used is None else float(last_used),
        webhook_secret=str(values.get("webhook_secret") or ""),
    )


@dataclass
class Admitted:
    """What admitting a new job answered: the job stored (and charged), or the job an Idempotency-Key already names."""

    record: JobRecord | None
    remaining_credits: float | None = None
    replay_of: str | None = None
