"""Admission: refuse at once what could only wait in vain.

A slug that no live worker serves refuses every request (503): it would only wait. A /v1 request,
whose caller waits at most the sync timeout, is refused (429 with Retry-After, pointing at /v2)
when its slug's estimated wait would pass most of that time: the work it would queue is then
never run for a caller who has gone. The estimate takes the slug's jobs waiting and running, the
worker threads that serve it, and the moving average of its recent job times (until one of its
jobs has ended, only as many as there are threads are admitted). Admissions being
decided in this process count as waiting until their job is queued, so that a burst of
simultaneous requests does not all see the same short queue. A request is checked as it arrives
(a refusal costs milliseconds) and again, holding its place, once its images are fetched and
decoded, just before its job is queued (a slow image URL then holds no place in the queue).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

from retouch.config import Settings
from retouch.errors import Busy, NoWorker
from retouch.jobs.backends.base import JobStore
from retouch.jobs.records import Status, WorkerInfo

# A /v1 request is admitted while its estimate stays under this share of the sync timeout: estimates
# are averages, and a job slower than its slug's average should still answer in time.
SYNC_MARGIN = 0.8
# Seconds the workers' heartbeats and the job times are cached for, per process.
_CACHE_SECONDS = 1.0


def estimated_seconds(typical: float, queued: int, running: int, threads: int) -> float:
    """Time to the end of one more job, with `queued` ahead of it and `running` under way on `threads`.

    The jobs running are half done on average; each thread then takes the queue in turn.
    """
    ahead = queued + running
    if ahead < threads:
        return typical
    start = (ahead - threads + 1) / threads * typical - typical / 2
    return max(0.0, start) + typical


class Admission:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._lock = threading.Lock()
        self._reserved: Counter[str] = Counter()
        self._workers: dict[str, WorkerInfo] = {}
        self._durations: dict[str, float] = {}
        self._read_at = -math.inf

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._read_at >= _CACHE_SECONDS:
            self._workers = self.store.live_workers(within=self.settings.lease)
            self._durations = self.store.typical_durations()
            self._read_at = now

    def threads(self, slug: str) -> int:
        """Worker threads that serve `slug` now."""
        with self._lock:
            self._refresh()
            return sum(info.threads for info in self._workers.values() if slug in info.slugs)

    def check(self, slug: str, synchronous: bool) -> None:
        """The same refusals as `reserve`, holding nothing: for the moment a request arrives, before its
        images are fetched, so that a refusal costs milliseconds."""
        self.release(self.reserve(slug, synchronous))

    def reserve(self, slug: str, synchronous: bool) -> str:
        """Admit one request of `slug` or raise NoWorker (503) or Busy (429); `release` it once its job is queued."""
        with self._lock:
            self._refresh()
            threads = sum(info.threads for info in self._workers.values() if slug in info.slugs)
            if threads == 0 and not self.settings.admit_without_workers:
                # A refusal is never made on a cached view: a worker that came up a moment ago
                # (and that /readyz already reports) must be seen.
                self._refresh(force=True)
                threads = sum(info.threads for info in self._workers.values() if slug in info.slugs)
            if threads == 0 and not self.settings.admit_without_workers:
                raise NoWorker(
                    f"no live worker serves {slug}: its requests would only wait; start `retouch worker --models {slug}` "
                    "(or `retouch serve` with --workers 1 or more)"
                )
            typical = self._durations.get(slug)
            if typical is None:
                # Not known a moment ago may be known now (the first job just ended): no cache for that.
                self._durations = self.store.typical_durations()
                typical = self._durations.get(slug)
            if synchronous and threads > 0:
                queued = self.store.count(Status.QUEUED, slug) + self._reserved[slug]
                running = self.store.count(Status.PROCESSING, slug)
                if typical is None:
                    # No job of this slug has ended yet, so nothing says how long the queue would take:
                    # take as many as there are threads, and ask the others back once one has ended.
                    if queued + running >= threads:
                        raise Busy(
                            f"{slug} is busy and the time its jobs take is not known yet ({queued} waiting, {running} running); "
                            f"submit it to /v2/{slug} and poll its status_url, or try again in a moment",
                            retry_after=1,
                        )
                    self._reserved[slug] += 1
                    return slug
                wait = estimated_seconds(typical, queued, running, threads)
                limit = SYNC_MARGIN * self.settings.sync_timeout
                if wait > limit:
                    retry = math.ceil(wait - limit)
                    raise Busy(
                        f"{slug} is busy: this request would take about {wait:.0f} s ({queued} waiting, {running} running, "
                        f"{threads} worker thread(s), about {typical:.1f} s a job), past what /v1 waits "
                        f"({self.settings.sync_timeout:g} s); submit it to /v2/{slug} and poll its status_url, "
                        f"or try again in {retry} s",
                        retry_after=retry,
                    )
            self._reserved[slug] += 1
            return slug

    def release(self, reservation: str) -> None:
        with self._lock:
            self._reserved[reservation] -= 1
            if self._reserved[reservation] <= 0:
                del self._reserved[reservation]
