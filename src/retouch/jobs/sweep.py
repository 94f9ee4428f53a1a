"""The sweep: run on every process (API replicas and workers), often, and idempotent.

- A PROCESSING job whose lease ran out (its worker died, hung without renewing, or was paused) goes
  back to QUEUED and on the queue, or ends FAILED once it has been tried `max_attempts` times.
- A QUEUED job whose queue entry may be lost (its process died between recording and queueing
  it, or a worker popped the entry and died before taking it) is put on the queue again once it
  has waited a grace time; only when the queue holds fewer entries than the slug has QUEUED jobs,
  so that a long backlog is not doubled. An extra entry is harmless: a job runs once per take.
- Jobs that ended longer ago than the retention time are deleted with their images (Redis expires
  them by itself).

Every third of a lease, so a job left by a dead worker runs again within about 1.3 leases.
"""

from __future__ import annotations

import logging
import random
import threading

from retouch.config import Settings
from retouch.errors import BackendUnavailable
from retouch.jobs.backends import Backend
from retouch.jobs.endings import Endings
from retouch.jobs.metrics import JobMetrics
from retouch.jobs.records import LeaseOutcome, Status

logger = logging.getLogger(__name__)


class Sweeper:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        slugs: tuple[str, ...],
        metrics: JobMetrics | None = None,
        endings: Endings | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.endings = endings or Endings(settings, backend)
        self.slugs = slugs
        self.metrics = metrics
        self.interval = settings.lease / 3
        # An entry younger than this may still be on its way (recorded, not yet pushed).
        self.queued_grace = max(2 * settings.lease, 10.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> dict[str, int]:
        """One pass; returns what it did (requeued, failed, re-pushed, purged)."""
        store, queue, events = (
            self.backend.store,
            self.backend.queue,
            self.backend.events,
        )
        done = {"requeued": 0, "failed": 0, "repushed": 0, "purged": 0}
        for slug in self.slugs:
            for job_id in store.expired_leases(slug):
                outcome = store.expire_lease(job_id, self.settings.max_attempts)
                if outcome is LeaseOutcome.REQUEUED:
                    queue.enqueue(slug, job_id)
                    done["requeued"] += 1
                    if self.metrics is not None:
                        self.metrics.requeued.labels(slug).inc()
                    logger.warning(
                        "request %s (%s) queued again: its worker stopped renewing its lease",
                        job_id,
                        slug,
                    )
                elif outcome is LeaseOutcome.FAILED:
                    events.publish_changed(job_id, "ended")
                    self.endings.ended(job_id)
                    done["failed"] += 1
                    logger.warning(
                        "request %s (%s) FAILED: tried %d times",
                        job_id,
                        slug,
                        self.settings.max_attempts,
                    )
            stale = store.stale_queued(slug, self.queued_grace)
            if stale and queue.pending(slug) < store.count(Status.QUEUED, slug):
                for job_id in stale:
                    if store.mark_enqueued(job_id):
                        queue.enqueue(slug, job_id)
                        done["repushed"] += 1
        done["purged"] = store.purge_expired(self.settings.retention)
        return done

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retouch-sweep", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # Processes started together should not sweep in step.
        self._stop.wait(random.uniform(0, self.interval))
        while not self._stop.is_set():
            try:
                self.sweep()
            except BackendUnavailable as error:
                logger.warning("sweep skipped: %s", error.message)
            except Exception:
                logger.exception("sweep failed")
            self._stop.wait(self.interval * random.uniform(0.8, 1.2))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.endings.close()
