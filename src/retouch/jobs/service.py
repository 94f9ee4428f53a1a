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
from retouch.errors import (
    BackendUnavailable,
    Conflict,
    InvalidInput,
    JobFailed,
    NotEnoughCredits,
    NotFound,
    QueueFull,
    ServiceUnavailable,
    Unauthorized,
)
from retouch.imaging.fetch import FetchLimiter
from retouch.jobs.access import Access
from retouch.jobs.admission import Admission
from retouch.jobs.backends import Backend, open_backend
from retouch.jobs.backends.base import UNCLAIMED_INPUT_TTL
from retouch.jobs.endings import Endings
from retouch.jobs.intake import (
    Prepared,
    check_images,
    check_request,
    encoded_inputs,
    read_sources,
    read_sources_async,
)
from retouch.jobs.records import ApiKey, CancelOutcome, JobRecord, Status
from retouch.models.base import Model, ModelInput

logger = logging.getLogger(__name__)


@dataclass
class Output:
    data: bytes
    content_type: str


@dataclass
class Submission:
    """A request accepted: its job, the credits its key has left (None: unlimited or no key), and whether
    an Idempotency-Key answered an earlier job instead of making a new one."""

    record: JobRecord
    remaining_credits: float | None = None
    replayed: bool = False


@dataclass(frozen=True)
class Caller:
    """Who submits: their API key (None with keys off), their Idempotency-Key, and the webhook to call at the end
    (`webhook_base`: the public base URL the result body's links use)."""

    key: ApiKey | None = None
    idempotency_key: str | None = None
    webhook: str | None = None
    webhook_base: str | None = None


ANONYMOUS = Caller()


def request_digest(raw_params: Any, uploads: dict[str, bytes]) -> str:
    """A fingerprint of a request as sent (parameters and uploaded files): an Idempotency-Key replay must match it."""
    digest = hashlib.sha256(json.dumps(raw_params, sort_keys=True, default=str).encode())
    for name in sorted(uploads):
        digest.update(name.encode())
        digest.update(hashlib.sha256(uploads[name]).digest())
    return digest.hexdigest()


class JobService:
    def __init__(
        self,
        settings: Settings,
        models: dict[str, Model],
        backend: Backend | None = None,
    ) -> None:
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
        self.access = Access(settings, self.store)
        self.endings = Endings(settings, self.backend)
        self.fetch_limiter = FetchLimiter(settings.fetch_concurrency, settings.fetch_concurrency_per_host)

    def model(self, slug: str) -> Model:
        model = self.models.get(slug)
        if model is None:
            raise NotFound(f"unknown model '{slug}'; this server has: {', '.join(self.models)}")
        return model

    # ---- submitting ----

    def submit(
        self,
        slug: str,
        raw_params: Any,
        uploads: dict[str, bytes] | None = None,
        *,
        request_id: str | None = None,
    ) -> JobRecord:
        """Check, fetch and decode (every refusal here, before a job exists), then store and queue. Blocking;
        for callers without an event loop (the command line), which run with the operator's rights: no key.
        NoWorker (503) when no live worker serves the slug; QueueFull (429) past `max_queued`;
        ServiceUnavailable (503) when the backend cannot take it."""
        model = self.model(slug)
        uploads = uploads or {}
        inputs = check_request(model, raw_params, uploads, self.settings)
        self.admission.check(slug, synchronous=False)
        prepared = check_images(
            model,
            inputs,
            read_sources(model, inputs, uploads, self.settings),
            self.settings,
        )
        return self._admit_and_enqueue(prepared, request_id, False, ANONYMOUS, request_digest(raw_params, uploads)).record

    async def submit_async(
        self,
        slug: str,
        raw_params: Any,
        uploads: dict[str, bytes] | None = None,
        *,
        request_id: str | None = None,
        synchronous: bool = False,
        caller: Caller = ANONYMOUS,
    ) -> Submission:
        """submit for the server: the same checks in the same order, with the refusals that cost nothing
        first (an Idempotency-Key replay, parameters, weights, credits, admission), URLs fetched without
        holding a thread, decoding and storing in threads. `synchronous`: the caller waits at most the
        sync timeout (/v1), so a request that would wait longer is refused now (Busy, 429). The key's
        identity, models and rate are checked before (Access); its credits are charged here, once."""
        model = self.model(slug)
        uploads = uploads or {}
        digest = request_digest(raw_params, uploads)
        if caller.idempotency_key is not None:
            replay = await anyio.to_thread.run_sync(self._replay, caller, digest)
            if replay is not None:
                return replay
        inputs = await anyio.to_thread.run_sync(check_request, model, raw_params, uploads, self.settings)
        self.access.check_credits(caller.key, self.price(model, inputs))
        if caller.webhook is not None:
            from retouch.jobs.webhooks import check_webhook_url

            await anyio.to_thread.run_sync(check_webhook_url, caller.webhook, self.settings)
        await anyio.to_thread.run_sync(self.admission.check, slug, synchronous)
        sources = await read_sources_async(model, inputs, uploads, self.settings, self.fetch_limiter)
        prepared = await anyio.to_thread.run_sync(check_images, model, inputs, sources, self.settings)
        return await anyio.to_thread.run_sync(self._admit_and_enqueue, prepared, request_id, synchronous, caller, digest)

    def price(self, model: Model, inputs: ModelInput) -> float:
        return self.settings.price_of(model.slug) * model.price_units(inputs)

    def _replay(self, caller: Caller, digest: str, job_id: str | None = None) -> Submission | None:
        """The earlier job an Idempotency-Key names (not charged again); Conflict (409) if it was another request."""
        assert caller.idempotency_key is not None
        owner = caller.key.id if caller.key is not None else None
        if job_id is not None:
            record = self.store.get(job_id)
        else:
            record = self.store.find_idempotent(owner, caller.idempotency_key, self.settings.retention)
        if record is None or record.expired(self.settings.retention, self.store.now()):
            return None
        if record.params_digest != digest:
            raise Conflict(
                f"the Idempotency-Key {caller.idempotency_key!r} was used for a different request (request id {record.id}); "
                "send a new Idempotency-Key for a new request"
            )
        credits = caller.key.credits if caller.key is not None else None
        return Submission(record=record, remaining_credits=credits, replayed=True)

    def _admit_and_enqueue(
        self,
        prepared: Prepared,
        request_id: str | None,
        synchronous: bool,
        caller: Caller,
        digest: str,
    ) -> Submission:
        reservation = self.admission.reserve(prepared.model.slug, synchronous)
        try:
            return self.enqueue(prepared, request_id=request_id, caller=caller, digest=digest)
        finally:
            self.admission.release(reservation)

    def enqueue(
        self,
        prepared: Prepared,
        *,
        request_id: str | None = None,
        caller: Caller = ANONYMOUS,
        digest: str = "",
    ) -> Submission:
        job_id = request_id or uuid.uuid4().hex
        slug = prepared.model.slug
        queued = self.store.count(Status.QUEUED)
        if queued >= self.settings.max_queued:
            raise QueueFull(f"the queue is full ({queued} requests waiting); try again in a few seconds")
        blobs = encoded_inputs(prepared)
        record = JobRecord(
            id=job_id,
            slug=slug,
            status=Status.QUEUED,
            params=prepared.stored_params(),
            params_digest=digest,
            base64=prepared.inputs.base64,
            inputs=sorted(blobs),
            owner_key=caller.key.id if caller.key is not None else None,
            charge=self.price(prepared.model, prepared.inputs) if caller.key is not None else 0.0,
            idempotency_key=caller.idempotency_key,
            webhook=json.dumps({"url": caller.webhook, "base": caller.webhook_base}) if caller.webhook is not None else None,
        )
        try:
            for name, data in blobs.items():
                # Claimed by the record (their expiry removed) as it is created; until then they expire.
                self.blobs.put(job_id, name, data, ttl=UNCLAIMED_INPUT_TTL)
            admitted = self.store.admit(record, self.settings.retention)
        except (BackendUnavailable, NotEnoughCredits, Unauthorized):
            self._discard(job_id)
            raise
        if admitted.record is None:
            # Another request with the same Idempotency-Key was admitted first.
            self._discard(job_id)
            replay = self._replay(caller, digest, admitted.replay_of)
            if replay is None:
                raise ServiceUnavailable("the request this Idempotency-Key names has just expired; send it again")
            return replay
        try:
            self.queue.enqueue(slug, job_id)
        except Exception as exc:
            logger.exception("request %s could not be queued", job_id)
            try:
                if self.store.fail_queued(job_id, "the queue could not take this request; submit it again"):
                    self.endings.ended(job_id)
            except BackendUnavailable:
                # Still QUEUED: the sweep queues it again once the backend answers, so it is not lost; the
                # caller must not submit it again, but poll it.
                raise ServiceUnavailable(
                    "the queue could not take this request now; it is recorded and will run once the server recovers: "
                    "poll its status_url rather than submitting it again",
                    {"request_id": job_id},
                ) from None
            raise ServiceUnavailable(f"the queue could not take this request ({type(exc).__name__}); try again in a moment") from None
        return Submission(record=record, remaining_credits=admitted.remaining_credits)

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
        if outcome is CancelOutcome.CANCELED:
            self.endings.ended(job_id)
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
        unserved = [model.slug for model in self.models.values() if model.built and live[model.slug] == 0 and model.weights_installed(self.settings)]
        if unserved:
            problems.append(
                f"no live worker serves {', '.join(unserved)}: start `retouch worker` (or `retouch worker --models "
                f"{','.join(unserved)}`), or `retouch serve` with --workers 1 or more"
            )
        return problems

    def close(self) -> None:
        self.endings.close()
        self.backend.close()
