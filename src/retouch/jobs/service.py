"""The job service: submit, read, wait for, cancel and expire requests. The API, the CLI and any
in-process caller use this one class; workers run what it queues (jobs/worker.py).

One path for every request: /v1 submits and waits, /v2 submits and returns, the CLI submits in
process. Embedded (one machine) or on Redis (a fleet), only the backend differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from retouch.config import Settings
from retouch.errors import BackendUnavailable, Conflict, InvalidInput, JobFailed, NotFound, QueueFull, ServiceUnavailable
from retouch.jobs.backends import Backend, open_backend
from retouch.jobs.backends.base import UNCLAIMED_INPUT_TTL
from retouch.imaging.fetch import FetchLimiter
from retouch.jobs.admission import Admission
from retouch.jobs.intake import Prepared, check_images, check_request, encoded_inputs, read_sources, read_sources_async
from retouch.jobs.records import CancelOutcome, JobRecord, Status
from retouch.models.base import Model

logger = logging.getLogger(__name__)


@dataclass
class Output:
    data: bytes
    content_type: str


def params_digest(params: dict[str, Any], blobs: dict[str, bytes]) -> str:
    """A fingerprint of a request (parameters and images), for idempotency checks."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for name in sorted(blobs):
        digest.update(name.encode())
        digest.update(hashlib.sha256(blobs[name]).digest())
    return digest.hexdigest()


class JobService:
    def __init__(self, settings: Settings, models: dict[str, Model], backend: Backend | None = None) -> None:
        unknown = sorted(set(settings.deadlines) - set(models))
        if unknown:
            raise InvalidInput(f"RETOUCH_DEADLINES names {', '.join(unknown)}, which this server does not have; it has: {', '.join(models)}")
        self.settings = settings
        self.models = models
        self.slugs = tuple(models)
        self.backend = backend or open_backend(settings, self.slugs)
        self.store = self.backend.store
        self.blobs = self.backend.blobs
        self.events = self.backend.events
        self.queue = self.backend.queue
        self.admission = Admission(settings, self.store)
        self.fetch_limiter = FetchLimiter(settings.fetch_concurrency, settings.fetch_concurrency_per_host)

    def model(self, slug: str) -> Model:
        model = self.models.get(slug)
        if model is None:
            raise NotFound(f"unknown model '{slug}'; this server has: {', '.join(self.models)}")
        return model

    # ---- submitting ----

    def submit(self, slug: str, raw_params: Any, uploads: dict[str, bytes] | None = None, *, request_id: str | None = None) -> JobRecord:
        """Check, fetch and decode (every refusal here, before a job exists), then store and queue. Blocking;
        for callers without an event loop (the command line). NoWorker (503) when no live worker serves
        the slug; QueueFull (429) past `max_queued`; ServiceUnavailable (503) when the backend cannot take it."""
        model = self.model(slug)
        inputs = check_request(model, raw_params, uploads or {}, self.settings)
        self.admission.check(slug, synchronous=False)
        prepared = check_images(model, inputs, read_sources(model, inputs, uploads or {}, self.settings), self.settings)
        return self._admit_and_enqueue(prepared, request_id, synchronous=False)

    async def submit_async(
        self, slug: str, raw_params: Any, uploads: dict[str, bytes] | None = None, *, request_id: str | None = None, synchronous: bool = False
    ) -> JobRecord:
        """submit for the server: the same checks in the same order, with the refusals that cost nothing
        first (parameters, weights, admission), URLs fetched without holding a thread, decoding and
        storing in threads. `synchronous`: the caller waits at most the sync timeout (/v1), so a request
        that would wait longer is refused now (Busy, 429)."""
        model = self.model(slug)
        uploads = uploads or {}
        inputs = await anyio.to_thread.run_sync(check_request, model, raw_params, uploads, self.settings)
        await anyio.to_thread.run_sync(self.admission.check, slug, synchronous)
        sources = await read_sources_async(model, inputs, uploads, self.settings, self.fetch_limiter)
        prepared = await anyio.to_thread.run_sync(check_images, model, inputs, sources, self.settings)
        return await anyio.to_thread.run_sync(self._admit_and_enqueue, prepared, request_id, synchronous)

    def _admit_and_enqueue(self, prepared: Prepared, request_id: str | None, synchronous: bool) -> JobRecord:
        reservation = self.admission.reserve(prepared.model.slug, synchronous)
        try:
            return self.enqueue(prepared, request_id=request_id)
        finally:
            self.admission.release(reservation)

    def enqueue(self, prepared: Prepared, *, request_id: str | None = None) -> JobRecord:
        job_id = request_id or uuid.uuid4().hex
        slug = prepared.model.slug
        queued = self.store.count(Status.QUEUED)
        if queued >= self.settings.max_queued:
            raise QueueFull(f"the queue is full ({queued} requests waiting); try again in a few seconds")
        blobs = encoded_inputs(prepared)
        params = prepared.stored_params()
        record = JobRecord(
            id=job_id,
            slug=slug,
            status=Status.QUEUED,
            params=params,
            params_digest=params_digest(params, blobs),
            base64=prepared.inputs.base64,
            inputs=sorted(blobs),
        )
        try:
            for name, data in blobs.items():
                # Claimed by the record (their expiry removed) as it is created; until then they expire.
                self.blobs.put(job_id, name, data, ttl=UNCLAIMED_INPUT_TTL)
            self.store.create(record)
        except BackendUnavailable:
            self._discard(job_id)
            raise
        try:
            self.queue.enqueue(slug, job_id)
        except Exception as exc:
            logger.exception("request %s could not be queued", job_id)
            try:
                self.store.fail_queued(job_id, "the queue could not take this request; submit it again")
            except BackendUnavailable:
                # Still QUEUED: the sweep queues it again once the backend answers, so it is not lost; the
                # caller must not submit it again, but poll it.
                raise ServiceUnavailable(
                    "the queue could not take this request now; it is recorded and will run once the server recovers: "
                    "poll its status_url rather than submitting it again",
                    {"request_id": job_id},
                ) from None
            raise ServiceUnavailable(f"the queue could not take this request ({type(exc).__name__}); try again in a moment") from None
        return record

    def _discard(self, job_id: str) -> None:
        try:
            self.blobs.delete_job(job_id)
        except BackendUnavailable:
            # Unclaimed inputs expire on their own (Redis), or go with the periodic clean-up (files).
            pass

    # ---- reading ----

    def get(self, job_id: str) -> JobRecord:
        """The record, or NotFound (404) for an unknown or expired id."""
        record = self.store.get(job_id)
        if record is None or record.expired(self.settings.retention, self.store.now()):
            raise NotFound(f"no request with id '{job_id}' (unknown, or its results expired after {self.settings.retention:g} s)")
        return record

    async def wait(self, job_id: str, timeout: float) -> bool:
        """True once the job has ended (or gone), False after `timeout`. A backend that stalls meanwhile
        only delays the answer: the wait goes on until `timeout`."""

        def ended() -> bool:
            try:
                record = self.store.get(job_id)
            except BackendUnavailable:
                return False
            return record is None or record.status.is_terminal()

        return await self.events.wait_changed(job_id, timeout, ended, recheck=self.settings.idle_poll)

    def output(self, record: JobRecord, index: int) -> Output:
        if record.status in (Status.FAILED, Status.CANCELED):
            raise JobFailed(record.error or "the request failed")
        if record.status is not Status.COMPLETED:
            raise NotFound(f"request '{record.id}' has no output yet: it is {record.status.value}")
        if not 0 <= index < len(record.outputs):
            raise NotFound(f"request '{record.id}' has {len(record.outputs)} output(s): index {index} does not exist")
        entry = record.outputs[index]
        data = self.blobs.get(record.id, entry.name)
        if data is None:
            raise NotFound(f"the output of request '{record.id}' has expired")
        return Output(data=data, content_type=entry.content_type)

    def outputs(self, record: JobRecord) -> list[Output]:
        return [self.output(record, index) for index in range(len(record.outputs))]

    # ---- cancelling ----

    def cancel(self, job_id: str) -> JobRecord:
        """A QUEUED request ends CANCELED at once; a PROCESSING one is flagged and ends at its engine's next
        step; one that has ended is a Conflict (409)."""
        self.get(job_id)
        outcome = self.store.cancel(job_id)
        if outcome is CancelOutcome.NOT_FOUND:
            raise NotFound(f"no request with id '{job_id}'")
        record = self.get(job_id)
        if outcome is CancelOutcome.ENDED:
            raise Conflict(f"request '{job_id}' has already ended ({record.status.value}); there is nothing to cancel")
        self.events.publish_changed(job_id, "ended" if outcome is CancelOutcome.CANCELED else "cancel")
        return record

    # ---- the state of the system ----

    def live_workers(self) -> dict[str, int]:
        """For each slug, how many live workers serve it."""
        counts = dict.fromkeys(self.slugs, 0)
        for info in self.store.live_workers(within=self.settings.lease).values():
            for slug in info.slugs:
                if slug in counts:
                    counts[slug] += 1
        return counts

    def readiness_problems(self) -> list[str]:
        """Why this deployment cannot serve requests now; empty when it can."""
        try:
            self.store.ping()
            live = self.live_workers()
        except BackendUnavailable as error:
            return [error.message]
        try:
            storage = self.store.storage_problem(int(self.settings.min_free_bytes))
        except BackendUnavailable as error:
            storage = error.message
        problems = [storage] if storage else []
        unserved = [
            model.slug
            for model in self.models.values()
            if model.built and live[model.slug] == 0 and model.weights_installed(self.settings)
        ]
        if unserved:
            problems.append(
                f"no live worker serves {', '.join(unserved)}: start `retouch worker` (or `retouch worker --models "
                f"{','.join(unserved)}`), or `retouch serve` with --workers 1 or more"
            )
        return problems

    def close(self) -> None:
        self.backend.close()
