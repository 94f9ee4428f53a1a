"""The embedded backend's wake-ups: an idle worker starts on a job when it is queued, and a waiter learns
that its job ended, across processes that share a home (two DatagramEvents stand for two processes)."""

from __future__ import annotations

import asyncio
import threading
import time

from retouch.jobs.backends.embedded import DatagramEvents, SqliteJobQueue


def test_an_idle_worker_is_woken_by_a_job_queued_in_another_process(tmp_path):
    api_events, worker_events = DatagramEvents(tmp_path / "run"), DatagramEvents(tmp_path / "run")
    api_queue = SqliteJobQueue(tmp_path / "queue.db", "retouch", ("slug-a", "slug-b"), api_events, timeout=5)
    worker_queue = SqliteJobQueue(tmp_path / "queue.db", "retouch", ("slug-a", "slug-b"), worker_events, timeout=5)
    try:
        got: list[str | None] = []
        waiting = threading.Thread(target=lambda: got.append(worker_queue.dequeue(("slug-a", "slug-b"), timeout=600)))
        started = time.monotonic()
        waiting.start()
        time.sleep(0.2)
        api_queue.enqueue("slug-b", "job-1")
        waiting.join(timeout=10)
        assert got == ["job-1"]
        assert time.monotonic() - started < 5
    finally:
        for part in (api_queue, worker_queue, api_events, worker_events):
            part.close()


def test_each_slug_has_its_own_queue(tmp_path):
    events = DatagramEvents(tmp_path / "run")
    queue = SqliteJobQueue(tmp_path / "queue.db", "retouch", ("slug-a", "slug-b"), events, timeout=5)
    try:
        queue.enqueue("slug-a", "job-a")
        assert queue.pending("slug-a") == 1 and queue.pending("slug-b") == 0
        assert queue.dequeue(("slug-b",), timeout=0.05) is None
        assert queue.dequeue(("slug-a", "slug-b"), timeout=0.05) == "job-a"
    finally:
        queue.close()
        events.close()


def test_an_ended_notice_crosses_processes_sharing_a_home(tmp_path):
    api, worker = DatagramEvents(tmp_path / "run"), DatagramEvents(tmp_path / "run")
    try:
        ended = {"job-1": False}

        async def wait_for_end() -> bool:
            waiting = asyncio.ensure_future(api.wait_changed("job-1", timeout=30, is_done=lambda: ended["job-1"], recheck=600))
            await asyncio.sleep(0.05)
            ended["job-1"] = True
            worker.publish_changed("job-1", "ended")
            return await waiting

        started = time.monotonic()
        assert asyncio.run(wait_for_end()) is True
        assert time.monotonic() - started < 10
    finally:
        api.close()
        worker.close()


def test_watchers_hear_the_kind_of_notice(tmp_path):
    sender, listener = DatagramEvents(tmp_path / "run"), DatagramEvents(tmp_path / "run")
    heard: list[str] = []
    arrived = threading.Event()

    def hear(kind: str) -> None:
        heard.append(kind)
        arrived.set()

    stop = listener.watch("job-3", hear)
    try:
        sender.publish_changed("job-3", "cancel")
        assert arrived.wait(10)
        assert heard == ["cancel"]
        stop()
        arrived.clear()
        sender.publish_changed("job-3", "ended")
        assert not arrived.wait(0.3)
    finally:
        sender.close()
        listener.close()


def test_long_home_path_still_gets_a_socket(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6) / "run"
    events = DatagramEvents(deep)
    try:
        assert len(str(events.folder)) < 100
    finally:
        events.close()


def test_a_notice_alone_does_not_end_the_wait(tmp_path):
    """The record decides: an 'ended' notice for a job still running (stale or forged) is not believed."""
    api, other = DatagramEvents(tmp_path / "run"), DatagramEvents(tmp_path / "run")
    try:

        async def wait_with_false_notice() -> bool:
            waiting = asyncio.ensure_future(api.wait_changed("job-2", timeout=0.5, is_done=lambda: False, recheck=600))
            await asyncio.sleep(0.05)
            other.publish_changed("job-2", "ended")
            return await waiting

        assert asyncio.run(wait_with_false_notice()) is False
    finally:
        api.close()
        other.close()


def test_wait_times_out_without_news(tmp_path):
    events = DatagramEvents(tmp_path / "run")
    try:
        assert asyncio.run(events.wait_changed("nobody", timeout=0.2, is_done=lambda: False, recheck=0.05)) is False
    finally:
        events.close()
