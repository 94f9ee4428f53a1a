"""The job system: submit, run, wait, read and expire requests. The API and every worker use this one class.

One path for every request: /v1 submits and waits, /v2 submits and returns. Whether the workers are
threads of the API process or separate `retouch worker` processes, only the settings differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from huey import crontab

from retouch.config import Settings
from retouch.errors import JobFailed, NotFound, QueueFull, RetouchError, ServiceUnavailable
from retouch.imaging.decode import decode_sources
from retouch.imaging.encode import CONTENT_TYPES, choose_format, encode_image
from retouch.jobs.blobs import BlobStore
from retouch.jobs.engine_cache import EngineCache
from retouch.jobs.notify import Notifier
from retouch.jobs.queue import RetouchConsumer, build_huey
from retouch.jobs.records import JobRecord, JobStore, OutputFile, Status
from retouch.models.base import Model, ModelInput

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
# A worker whose heartbeat is older than this is taken for dead and its running job is queued again.
WORKER_DEAD_AFTER_SECONDS = 30.0
ORPHAN_GRACE_SECONDS = 600.0


@dataclass
class Output:
    data: bytes
    content_type: str


def _input_blob(field: str) -> str:
    return f"input-{field}"


def params_digest(params: dict[str, Any], sources: dict[str, bytes]) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for name in sorted(sources):
        digest.update(name.encode())
        digest.update(hashlib.sha256(sources[name]).digest())
    return digest.hexdigest()


class Service:
    def __init__(self, settings: Settings, models: dict[str, Model]) -> None:
        settings.prepare_folders()
        self.settings = settings
        self.models = models
        self.records = JobStore(settings.home / "jobs.db")
        self.blobs = BlobStore(settings.jobs_path)
        self.notifier = Notifier(settings.run_path)
        self.engines = EngineCache(settings)
        self.huey = build_huey(settings.home / "queue.db")
        # Unique per process start: in a container a restarted process often has the same host and pid.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._run_task = self.huey.task(name="retouch.run_job")(self.execute)
        self.huey.periodic_task(crontab(), name="retouch.cleanup")(self.housekeeping)
        self._consumer: RetouchConsumer | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ---- submitting and reading (the API side) ----

    def submit(self, job_id: str, model: Model, params: ModelInput, sources: dict[str, bytes]) -> JobRecord:
        """Store the job's encoded inputs, record it and queue it. QueueFull (429) past `max_queued`;
        ServiceUnavailable (503) when the queue cannot take it (the record then says FAILED)."""
        queued = self.records.count(Status.QUEUED)
        if queued >= self.settings.max_queued:
            raise QueueFull(f"the queue is full ({queued} requests waiting); try again in a few seconds")
        stored_params = params.model_dump(exclude=set(model.all_image_fields()))
        record = JobRecord(
            id=job_id,
            slug=model.slug,
            status=Status.QUEUED,
            created_at=time.time(),
            params=stored_params,
            params_digest=params_digest(stored_params, sources),
            base64=params.base64,
        )
        for field, data in sources.items():
            self.blobs.put(job_id, _input_blob(field), data)
        self.records.create(record)
        try:
            self._run_task(job_id)
        except Exception as exc:
            logger.exception("request %s could not be queued", job_id)
            self._fail(record, "the queue could not take this request; try again")
            raise ServiceUnavailable(f"the queue could not take this request ({type(exc).__name__}); try again in a moment") from None
        self.notifier.publish_wake()
        return record

    def get(self, job_id: str) -> JobRecord:
        """The record, or NotFound (404) for an unknown or expired id."""
        record = self.records.get(job_id)
        if record is None or record.expired(self.settings.retention):
            raise NotFound(f"no request with id '{job_id}' (unknown, or its results expired after {self.settings.retention:g} s)")
        return record

    async def wait(self, job_id: str, timeout: float) -> bool:
        def ended() -> bool:
            record = self.records.get(job_id)
            return record is None or record.status.is_terminal()

        return await self.notifier.wait_done(job_id, timeout, ended, recheck=self.settings.idle_poll)

    def output(self, record: JobRecord, index: int) -> Output:
        if record.status is Status.FAILED:
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

    # ---- running (the worker side) ----

    def execute(self, job_id: str) -> None:
        """Run one job. Every outcome ends in COMPLETED or FAILED, and waiters are told."""
        record = self.records.get(job_id)
        if record is None or record.status is not Status.QUEUED:
            return
        started = time.time()
        if not self.records.transition(job_id, Status.QUEUED, Status.PROCESSING, started_at=started, worker=self.worker_id):
            return
        record.status, record.started_at, record.worker = Status.PROCESSING, started, self.worker_id
        try:
            self._run(record)
        except RetouchError as exc:
            self._fail(record, exc.message)
        except Exception:
            logger.exception("request %s (%s) failed with an internal error", job_id, record.slug)
            self._fail(record, f"internal error while running this request (request id {job_id}); the server log has the details")
        finally:
            for field in self.models[record.slug].all_image_fields() if record.slug in self.models else ():
                self.blobs.remove(job_id, _input_blob(field))
            self.notifier.publish_done(job_id)

    def _run(self, record: JobRecord) -> None:
        model = self.models.get(record.slug)
        if model is None:
            raise RetouchError(f"this worker does not know the model '{record.slug}'")
        placeholders = {field: "stored" for field in model.all_image_fields()}
        params = model.Input.model_validate({**record.params, **placeholders})
        sources: dict[str, bytes] = {}
        for field in model.all_image_fields():
            data = self.blobs.get(record.id, _input_blob(field))
            if data is None:
                raise RetouchError(f"the input '{field}' of this request was lost before it ran")
            sources[field] = data
        images = decode_sources(
            sources, image_fields=model.image_fields, mask_fields=model.mask_fields, max_pixels=self.settings.max_image_pixels
        )
        engine = self.engines.get(model)
        compute_started = time.perf_counter()
        result = model.run(params, images, engine)
        inference_time = time.perf_counter() - compute_started
        if not result.images:
            raise RetouchError(f"the {record.slug} engine returned no image")
        outputs = []
        for index, array in enumerate(result.images):
            fmt = choose_format(array, params.output_format)
            name = f"output-{index}.{fmt}"
            self.blobs.put(record.id, name, encode_image(array, fmt))
            outputs.append(OutputFile(name=name, content_type=CONTENT_TYPES[fmt]))
        finished = time.time()
        record.outputs = outputs
        record.engine = model.engine_name(self.settings)
        record.metrics = {
            "inference_time": round(inference_time, 4),
            "queue_time": round(record.started_at - record.created_at, 4),
            "total_time": round(finished - record.created_at, 4),
            "engine": record.engine,
            **result.metrics,
        }
        record.status, record.finished_at = Status.COMPLETED, finished
        self.records.save(record)

    def _fail(self, record: JobRecord, message: str) -> None:
        finished = time.time()
        record.status, record.finished_at, record.error = Status.FAILED, finished, message
        record.metrics = {
            "queue_time": round((record.started_at or finished) - record.created_at, 4),
            "total_time": round(finished - record.created_at, 4),
        }
        self.records.save(record)

    # ---- housekeeping ----

    def cleanup_expired(self) -> int:
        """Delete finished requests older than the retention time, with their images. Returns how many."""
        ids = self.records.finished_before(time.time() - self.settings.retention)
        for job_id in ids:
            self.blobs.delete_job(job_id)
            self.records.delete(job_id)
        # Folders without a record: a crash between the two deletes above. A submission writes its
        # inputs before its record, so only folders older than any submission in flight are orphans.
        orphan_age = max(self.settings.retention, ORPHAN_GRACE_SECONDS)
        for job_id in self.blobs.job_ids(older_than=time.time() - orphan_age):
            if self.records.get(job_id) is None:
                self.blobs.delete_job(job_id)
        return len(ids)

    def housekeeping(self) -> None:
        """The periodic task: expire old results, queue again what a dead worker left."""
        self.cleanup_expired()
        self.requeue_abandoned()

    def requeue_abandoned(self) -> int:
        """Queue again the jobs left PROCESSING by a worker whose heartbeat has stopped."""
        alive = self.records.workers_seen_since(time.time() - WORKER_DEAD_AFTER_SECONDS)
        requeued = 0
        for record in self.records.with_status(Status.PROCESSING):
            if record.worker in alive or record.worker == self.worker_id:
                continue
            if self.records.transition(record.id, Status.PROCESSING, Status.QUEUED, started_at=None, worker=None):
                self._run_task(record.id)
                requeued += 1
        if requeued:
            logger.warning("queued again %d request(s) left unfinished by a stopped worker", requeued)
            self.notifier.publish_wake()
        return requeued

    def recover(self) -> int:
        """At start: queue again every QUEUED job (a crash may have lost its queue entry; a job runs once
        whatever its entries, as `execute` moves it out of QUEUED atomically), and abandoned ones."""
        queued = self.records.with_status(Status.QUEUED)
        for record in queued:
            self._run_task(record.id)
        if queued:
            self.notifier.publish_wake()
        return len(queued) + self.requeue_abandoned()

    def workers_alive(self) -> bool:
        if self._consumer is not None:
            return True
        return len(self.records.workers_seen_since(time.time() - 3 * HEARTBEAT_SECONDS)) > 0

    def queue_reachable(self) -> bool:
        try:
            self.huey.pending_count()
            self.records.count(Status.QUEUED)
        except Exception:  # noqa: BLE001 - any failure to read the queue means not ready
            logger.exception("queue unreachable")
            return False
        return True

    def warm_up(self) -> None:
        """Load the engines whose weights are installed, so that the first request does not pay for it."""
        for model in self.models.values():
            if model.built and model.weights_installed(self.settings):
                try:
                    self.engines.get(model)
                except Exception:  # noqa: BLE001 - a failed warm-up is retried, and reported, by the first job
                    logger.exception("warm-up of %s failed", model.slug)

    # ---- lifecycle ----

    def start_workers(self, count: int, embedded: bool = True) -> RetouchConsumer | None:
        self.recover()
        if count <= 0:
            return None
        self._consumer = RetouchConsumer(
            self.huey, workers=count, wake_event=self.notifier.wake_event, idle_poll=self.settings.idle_poll, embedded=embedded
        )
        self._heartbeat = threading.Thread(target=self._beat, name="retouch-heartbeat", daemon=True)
        self._heartbeat.start()
        threading.Thread(target=self.warm_up, name="retouch-warm-up", daemon=True).start()
        return self._consumer

    def _beat(self) -> None:
        while not self._heartbeat_stop.is_set():
            try:
                self.records.heartbeat(self.worker_id, time.time())
            except Exception:  # noqa: BLE001 - a missed beat must not end the heartbeat for good
                logger.exception("heartbeat not recorded")
            self._heartbeat_stop.wait(HEARTBEAT_SECONDS)

    def close(self) -> None:
        self._heartbeat_stop.set()
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        self.records.forget_worker(self.worker_id)
        self.notifier.close()
        self.huey.storage.close()
        self.records.close()
