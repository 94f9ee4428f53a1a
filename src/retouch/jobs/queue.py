"""The queue: Huey on SQLite, and a consumer whose idle workers wake when a job is queued."""

from __future__ import annotations

import threading
from pathlib import Path

from huey import SqliteHuey
from huey.consumer import Consumer, Worker


def build_huey(path: Path) -> SqliteHuey:
    """Huey keeps only the queue: results, errors and outputs live in the job records."""
    return SqliteHuey(name="retouch", filename=str(path), results=False, store_none=False, utc=True)


class WakeableWorker(Worker):
    """A Huey worker whose idle sleep ends as soon as `wake_event` is set, instead of backing off to seconds."""

    wake_event: threading.Event

    def sleep(self) -> None:
        if self.delay > self.max_delay:
            self.delay = self.max_delay
        if self.wake_event.wait(self.delay):
            self.wake_event.clear()
            self.delay = self.default_delay
            return
        self.delay *= self.backoff


class RetouchConsumer(Consumer):
    """Huey's thread consumer, with wakeable workers, that can run inside another program's process.

    `embedded=True` (inside `retouch serve`) installs no signal handlers: uvicorn owns them.
    """

    def __init__(self, huey: SqliteHuey, workers: int, wake_event: threading.Event, idle_poll: float, embedded: bool) -> None:
        self._wake_event = wake_event
        self._embedded = embedded
        super().__init__(
            huey,
            workers=workers,
            periodic=True,
            initial_delay=min(0.1, idle_poll),
            backoff=1.5,
            max_delay=idle_poll,
            worker_type="thread",
            check_worker_health=True,
        )

    def _create_worker(self) -> Worker:
        worker = WakeableWorker(
            huey=self.huey,
            stop_flag=self.stop_flag,
            default_delay=self.default_delay,
            max_delay=self.max_delay,
            backoff=self.backoff,
            max_tasks=self.max_tasks,
        )
        worker.wake_event = self._wake_event
        return worker

    def _set_signal_handlers(self) -> None:
        if not self._embedded:
            super()._set_signal_handlers()

    def stop(self, graceful: bool = False) -> None:
        self.stop_flag.set()
        self._wake_event.set()
        super().stop(graceful=graceful)
