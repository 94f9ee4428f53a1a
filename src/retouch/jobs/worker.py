"""Workers: threads that take jobs of their slugs off the queue and run them, owning each by a lease.

A worker takes a job by the store's compare-and-set (QUEUED to PROCESSING, owner = this worker,
lease until now + L) and renews the lease every L/3 while it runs. Every later write (progress,
outputs, the end) succeeds only while it still owns the job, so a worker wrongly thought dead
(paused past its lease, cut off from the store) can never overwrite a job another worker took over:
it learns it lost the job at its next renewal or step, and stops without writing anything. Outputs
are stored under the attempt's own names and published by the finishing write alone.

A job past its slug's deadline is FAILED by the worker's watchdog, and the thread stuck in it is
recycled: replaced by a fresh thread in `retouch serve`, or, in a `retouch worker` process, the
process drains and exits so that its supervisor starts a fresh one (a thread cannot be killed).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.errors import BackendUnavailable, Cancelled, InvalidInput, RetouchError
from retouch.imaging.encode import CONTENT_TYPES, choose_format, encode_image
from retouch.jobs.backends import Backend
from retouch.jobs.endings import Endings
from retouch.jobs.intake import load_inputs
from retouch.jobs.metrics import JobMetrics
from retouch.jobs.records import JobRecord, OutputFile, Renewal, Status
from retouch.models.base import Model, RunContext

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Progress is written at most this often (engines may step many times a second).
_PROGRESS_INTERVAL = 0.25
# Exit status of a `retouch worker` process that stops to be replaced (a job hung past its deadline).
EXIT_RECYCLE = 75


def new_worker_id() -> str:
    """Unique per process start: in a container a restarted process often has the same host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OwnershipLost(Exception):
    """This worker no longer owns the job (its lease ran out and another worker took it): write nothing."""


@dataclass
class Running:
    """A job this process is running, as the maintenance thread and the job's context see it."""

    record: JobRecord
    deadline_seconds: float
    started: float = field(default_factory=time.monotonic)
    last_renewed: float = field(default_factory=time.monotonic)
    cancel_requested: bool = False
    # Set by a cancel notice: the record is read at the next step to see whether it is true.
    notice: bool = False
    lost: bool = False
    # Failed by the watchdog: the thread still in it is left to return on its own.
    abandoned: bool = False
    last_progress: float = 0.0
    thread: threading.Thread | None = None

    @property
    def deadline(self) -> float:
        return self.started + self.deadline_seconds


class JobContext(RunContext):
    def __init__(self, pool: WorkerPool, running: Running) -> None:
        self._pool = pool
        self._running = running
        self.deadline = running.deadline

    def progress(self, fraction: float) -> None:
        running = self._running
        now = time.monotonic()
        if now - running.last_progress < _PROGRESS_INTERVAL and fraction < 1.0:
            return
        running.last_progress = now
        job_id = running.record.id
        try:
            if self._pool.backend.store.set_progress(job_id, self._pool.worker_id, max(0.0, min(1.0, float(fraction)))):
                self._pool.backend.events.publish_changed(job_id, "progress")
            else:
                running.lost = True
        except BackendUnavailable:
            # Progress is a courtesy: a store that stalls must not stop the job.
            pass

    def cancelled(self) -> bool:
        running = self._running
        if running.notice:
            running.notice = False
            try:
                record = self._pool.backend.store.get(running.record.id)
            except BackendUnavailable:
                record = None
            if record is not None and (record.status is not Status.PROCESSING or record.worker != self._pool.worker_id):
                running.lost = True
            elif record is not None and record.cancel_requested:
                running.cancel_requested = True
        return running.cancel_requested or running.lost or running.abandoned


class WorkerPool:
    """`threads` job threads serving `slugs`, and one maintenance thread (leases, heartbeat, deadlines)."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, Model],
        backend: Backend,
        slugs: tuple[str, ...],
        threads: int,
        engines: EngineCache | None = None,
        metrics: JobMetrics | None = None,
        on_hung: Literal["replace", "exit"] = "replace",
        endings: Endings | None = None,
    ) -> None:
        unknown = [slug for slug in slugs if slug not in models]
        if unknown:
            raise ValueError(f"unknown slug(s) {', '.join(unknown)}; known: {', '.join(models)}")
        self.settings = settings
        self.models = models
        self.backend = backend
        self.slugs = slugs
        self.thread_count = threads
        self.engines = engines or EngineCache(settings)
        self.metrics = metrics
        self.on_hung = on_hung
        self.endings = endings or Endings(settings, backend)
        self.worker_id = new_worker_id()
        self.recycle_requested = threading.Event()
        self._stopping = threading.Event()
        self._running: dict[str, Running] = {}
        self._running_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._retired: set[threading.Thread] = set()
        self._maintenance: threading.Thread | None = None
        self._warming: threading.Thread | None = None
        self._tick = max(0.05, min(1.0, settings.lease / 6))

    # ---- lifecycle ----

    def start(self, warm_up: bool = True) -> None:
        self._beat()
        for _ in range(self.thread_count):
            self._start_thread()
        self._maintenance = threading.Thread(target=self._maintain, name="retouch-worker-maintenance", daemon=True)
        self._maintenance.start()
        if warm_up:
            self._warming = threading.Thread(target=self.warm_up, name="retouch-warm-up", daemon=True)
            self._warming.start()

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"retouch-worker-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Drain: take no new job, let the running ones end. True if every job thread returned in time."""
        self._stopping.set()
        self.backend.queue.interrupt()
        deadline = None if timeout is None else time.monotonic() + timeout
        drained = True
        for thread in list(self._threads):
            # Joined in short steps: a thread the watchdog retires meanwhile is no longer waited for.
            while thread.is_alive() and thread not in self._retired:
                if deadline is not None and time.monotonic() >= deadline:
                    drained = False
                    break
                thread.join(0.2)
        if self._maintenance is not None:
            self._maintenance.join(timeout=5)
        if self._warming is not None:
            # An engine half loaded (a compile, a session being made) when the process exits aborts it
            # from native code: let the one being loaded finish, within the drain's time; warm_up starts no other.
            self._warming.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if self._warming.is_alive():
                logger.warning("worker %s stopped while an engine was still loading", self.worker_id)
                drained = False
        try:
            self.backend.store.forget_worker(self.worker_id)
        except BackendUnavailable:
            pass
        self.endings.close()
        return drained

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def running_ids(self) -> list[str]:
        with self._running_lock:
            return list(self._running)

    def warm_up(self) -> None:
        """Load the engines whose weights are installed, so that the first request does not pay for it."""
        for slug in self.slugs:
            if self._stopping.is_set():
                return
            model = self.models[slug]
            if model.built and model.weights_installed(self.settings):
                try:
                    self.engines.get(model)
                except Exception:
                    logger.exception("warm-up of %s failed", slug)

    # ---- the job threads ----

    def _serve(self) -> None:
        me = threading.current_thread()
        while not self._stopping.is_set() and me not in self._retired:
            try:
                job_id = self.backend.queue.dequeue(self.slugs, timeout=self.settings.idle_poll)
            except BackendUnavailable as error:
                logger.warning("queue unreachable: %s", error.message)
                self._stopping.wait(1.0)
                continue
            except Exception:
                logger.exception("dequeue failed")
                self._stopping.wait(1.0)
                continue
            if job_id is None:
                continue
            try:
                self.run_job(job_id)
            except Exception:
                logger.exception("request %s: the worker failed outside the job", job_id)

    def run_job(self, job_id: str) -> Status | None:
        """Take and run one job; its end status, or None if it was not ours to run (or we lost it)."""
        try:
            record = self.backend.store.take(job_id, self.worker_id, self.settings.lease)
        except BackendUnavailable as error:
            # The entry is gone and the job still QUEUED: the sweep puts it back on the queue.
            logger.warning("request %s not taken: %s", job_id, error.message)
            return None
        if record is None:
            return None
        if self.metrics is not None:
            self.metrics.attempts.labels(record.slug).inc()
        # A cancel asked for while a dead worker held it is honoured at this attempt's first step.
        running = Running(
            record=record,
            deadline_seconds=self.settings.deadline_of(record.slug),
            thread=threading.current_thread(),
            cancel_requested=record.cancel_requested,
        )

        def on_notice(kind: str) -> None:
            if kind == "cancel":
                running.notice = True

        stop_watching = self.backend.events.watch(job_id, on_notice)
        with self._running_lock:
            self._running[job_id] = running
        started = time.perf_counter()
        engine_name = "none"
        status: Status | None = None
        try:
            model = self.models.get(record.slug)
            if model is not None:
                engine_name = model.engine_name(self.settings)
            status = self._execute(model, running)
        finally:
            stop_watching()
            with self._running_lock:
                self._running.pop(job_id, None)
        if status is None:
            if self.metrics is not None:
                self.metrics.lost.labels(record.slug).inc()
            logger.warning(
                "request %s (%s): this worker no longer owns it; it wrote nothing",
                job_id,
                record.slug,
            )
            return None
        elapsed = time.perf_counter() - started
        if status is not Status.CANCELED:
            # Before the notice: a caller woken by it may submit again at once, and be admitted on it.
            try:
                self.backend.store.record_duration(record.slug, elapsed)
            except BackendUnavailable:
                pass
        self.backend.events.publish_changed(job_id, "ended")
        self.endings.ended(job_id)
        if self.metrics is not None:
            self.metrics.duration.labels(record.slug, engine_name, status.value).observe(elapsed)
        logger.info(
            "request %s %s %s in %.3f s (attempt %d, %s)",
            job_id,
            record.slug,
            status.value,
            elapsed,
            record.attempts,
            engine_name,
        )
        return status

    def _execute(self, model: Model | None, running: Running) -> Status | None:
        record = running.record
        context = JobContext(self, running)
        try:
            if model is None:
                raise RetouchError(f"this worker does not know the model '{record.slug}'")
            params = model.Input.model_construct(**record.params)
            stored = {name: self._patiently(running, lambda name=name: self.backend.blobs.get(record.id, name)) for name in record.inputs}
            images = load_inputs(model, stored, self.settings)
            context.step(0.0)
            with self.engines.use(model) as engine:
                compute_started = time.perf_counter()
                result = model.run(params, images, engine, context)
                inference_time = time.perf_counter() - compute_started
            if not result.images:
                raise RetouchError(f"the {record.slug} engine returned no image")
            encoded = []
            for index, array in enumerate(result.images):
                fmt = choose_format(array, getattr(params, "output_format", None))
                encoded.append(
                    (
                        f"output-a{record.attempts}-{index}.{fmt}",
                        encode_image(array, fmt),
                        CONTENT_TYPES[fmt],
                    )
                )
            self._confirm(running)
            # Unpublished until the finishing write: a loser's files expire unseen.
            for name, data, _ in encoded:
                self._patiently(
                    running,
                    lambda name=name, data=data: self.backend.blobs.put(
                        record.id,
                        name,
                        data,
                        ttl=self.settings.lease + self.settings.retention,
                    ),
                )
            outputs = [OutputFile(name=name, content_type=content_type) for name, _, content_type in encoded]
            metrics = {
                "inference_time": round(inference_time, 4),
                "engine": model.engine_name(self.settings),
                "attempts": record.attempts,
                **result.metrics,
            }
            return self._end(
                running,
                Status.COMPLETED,
                lambda: self.backend.store.finish(record.id, self.worker_id, outputs, metrics["engine"], metrics),
            )
        except (Cancelled, OwnershipLost):
            if running.lost or running.abandoned:
                return None
            return self._end(
                running,
                Status.CANCELED,
                lambda: self.backend.store.cancel_at_step(record.id, self.worker_id),
            )
        except BackendUnavailable as error:
            # Not the request's fault: it is left to the sweep, which runs it again once its lease ends.
            logger.warning(
                "request %s (%s) left unfinished: %s",
                record.id,
                record.slug,
                error.message,
            )
            running.lost = True
            return None
        except RetouchError as error:
            message = error.message
            # The caller's fault (a 400-class cause: what they sent) keeps the charge; the server's is refunded.
            refund = not isinstance(error, InvalidInput)
        except Exception:
            logger.exception("request %s (%s) failed with an internal error", record.id, record.slug)
            message = f"internal error while running this request (request id {record.id}); the server log has the details"
            refund = True
        return self._end(
            running,
            Status.FAILED,
            lambda: self.backend.store.fail(
                record.id,
                self.worker_id,
                message,
                {"attempts": record.attempts},
                refund=refund,
            ),
        )

    def _patiently(self, running: Running, call: Callable[[], T]) -> T:
        """A store call, tried again while the store does not answer and the lease may still be ours:
        a stall shorter than the lease costs time, not the attempt. OwnershipLost once it is longer."""
        delay = 0.1
        while True:
            if running.lost or running.abandoned:
                raise OwnershipLost()
            try:
                return call()
            except BackendUnavailable as error:
                if time.monotonic() - running.last_renewed > self.settings.lease:
                    logger.warning(
                        "request %s: the store did not answer for a whole lease (%s); the sweep runs it again",
                        running.record.id,
                        error.message,
                    )
                    running.lost = True
                    raise OwnershipLost() from None
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def _confirm(self, running: Running) -> None:
        """Before writing any output: renew, and stop if the job was taken over or cancelled meanwhile."""
        if running.lost or running.abandoned:
            raise OwnershipLost()
        renewal = self._patiently(
            running,
            lambda: self.backend.store.renew(running.record.id, self.worker_id, self.settings.lease),
        )
        running.last_renewed = time.monotonic()
        if renewal is Renewal.LOST:
            running.lost = True
            raise OwnershipLost()
        if renewal is Renewal.CANCEL_REQUESTED:
            raise Cancelled()

    def _renew(self, running: Running) -> Renewal | None:
        """Renew the lease; None when the store did not answer (the lease may still be ours)."""
        try:
            renewal = self.backend.store.renew(running.record.id, self.worker_id, self.settings.lease)
        except BackendUnavailable:
            if time.monotonic() - running.last_renewed > self.settings.lease:
                running.lost = True
                return Renewal.LOST
            return None
        running.last_renewed = time.monotonic()
        if renewal is Renewal.LOST:
            running.lost = True
        elif renewal is Renewal.CANCEL_REQUESTED:
            running.cancel_requested = True
        return renewal

    def _end(self, running: Running, status: Status, write: Callable[[], bool]) -> Status | None:
        """The write that ends the job (patiently). None if the job was no longer ours."""
        try:
            return status if self._patiently(running, write) else None
        except OwnershipLost:
            return None

    # ---- maintenance: leases, heartbeat, deadlines ----

    def _beat(self) -> None:
        try:
            self.backend.store.heartbeat(self.worker_id, self.slugs, self.thread_count)
        except BackendUnavailable as error:
            logger.warning("heartbeat not recorded: %s", error.message)

    def _maintain(self) -> None:
        renew_every = self.settings.lease / 3
        last_beat = time.monotonic()
        while True:
            with self._running_lock:
                running = [job for job in self._running.values() if not job.abandoned]
            if self._stopping.is_set() and not running:
                return
            now = time.monotonic()
            if now - last_beat >= renew_every:
                self._beat()
                last_beat = now
            for job in running:
                if now > job.deadline:
                    self._hung(job)
                elif now - job.last_renewed >= renew_every:
                    self._renew(job)
            if self._stopping.is_set():
                time.sleep(self._tick)
            else:
                self._stopping.wait(self._tick)

    def _hung(self, running: Running) -> None:
        record = running.record
        message = (
            f"the request did not finish within the deadline of {running.deadline_seconds:g} s for {record.slug} "
            "(RETOUCH_DEADLINE, RETOUCH_DEADLINES); its worker was restarted"
        )
        try:
            ended = self.backend.store.fail(record.id, self.worker_id, message, {"attempts": record.attempts})
        except BackendUnavailable as error:
            logger.warning(
                "request %s is past its deadline but could not be failed yet: %s",
                record.id,
                error.message,
            )
            return
        running.abandoned = True
        if ended:
            self.backend.events.publish_changed(record.id, "ended")
            self.endings.ended(record.id)
        logger.error(
            "request %s (%s) FAILED past its deadline of %g s; recycling its worker",
            record.id,
            record.slug,
            running.deadline_seconds,
        )
        if running.thread is not None:
            # Left to return on its own (a thread cannot be killed); it then serves no more jobs.
            self._retired.add(running.thread)
        if self.on_hung == "exit":
            self.recycle_requested.set()
            self._stopping.set()
        else:
            self._start_thread()
