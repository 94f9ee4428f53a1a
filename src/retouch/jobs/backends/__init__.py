"""Choose the job system's backend from the settings: embedded under RETOUCH_HOME, or Redis for a fleet."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from retouch.config import Settings
from retouch.jobs.backends.base import BlobStore, Events, JobQueue, JobStore


@dataclass
class Backend:
    kind: str
    store: JobStore
    blobs: BlobStore
    events: Events
    queue: JobQueue

    def close(self) -> None:
        for part in (self.queue, self.events, self.blobs, self.store):
            with contextlib.suppress(Exception):
                part.close()


def open_backend(settings: Settings, slugs: tuple[str, ...]) -> Backend:
    """The store, blobs, events and queue that `settings` name, for jobs of `slugs`."""
    if settings.queue_url is None:
        from retouch.jobs.backends.embedded import DatagramEvents, FileBlobStore, SqliteJobQueue, SqliteJobStore

        settings.prepare_folders()
        files = FileBlobStore(settings.jobs_path)
        events = DatagramEvents(settings.run_path)
        store = SqliteJobStore(settings.home / "jobs.db", files, timeout=settings.store_timeout)
        queue = SqliteJobQueue(settings.home / "queue.db", settings.redis_prefix, slugs, events, timeout=settings.store_timeout)
        return Backend(kind="embedded", store=store, blobs=files, events=events, queue=queue)

    from retouch.jobs.backends.redis import RedisBlobStore, RedisEvents, RedisJobQueue, RedisJobStore, connection_pool

    pool = connection_pool(settings.queue_url, settings.store_timeout)
    prefix = settings.redis_prefix
    return Backend(
        kind="redis",
        store=RedisJobStore(pool, prefix, slugs, settings.retention),
        blobs=RedisBlobStore(pool, prefix),
        events=RedisEvents(pool, prefix),
        queue=RedisJobQueue(pool, prefix, slugs, settings.store_timeout),
    )
