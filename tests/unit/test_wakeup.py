"""The queue's wake-up: an idle worker starts on a new job when it is queued, not after its back-off."""

from __future__ import annotations

import asyncio
import threading

from retouch.jobs.notify import Notifier
from retouch.jobs.queue import WakeableWorker, build_huey


def test_idle_worker_sleep_ends_when_woken(tmp_path):
    wake = threading.Event()
    worker = WakeableWorker(build_huey(tmp_path / "q.db"), threading.Event(), default_delay=600, max_delay=600, backoff=1.0)
    worker.wake_event = wake
    sleeper = threading.Thread(target=worker.sleep)
    sleeper.start()
    wake.set()
    sleeper.join(timeout=10)
    assert not sleeper.is_alive()
    assert not wake.is_set()


def test_wake_and_done_cross_processes_sharing_a_home(tmp_path):
    """Two notifiers on one home stand for two processes: each hears the other's events."""
    api, worker = Notifier(tmp_path / "run"), Notifier(tmp_path / "run")
    try:
        api.publish_wake()
        assert worker.wake_event.wait(10)

        ended = {"job-1": False}

        async def wait_for_done() -> bool:
            waiting = asyncio.ensure_future(api.wait_done("job-1", timeout=30, is_done=lambda: ended["job-1"], recheck=600))
            await asyncio.sleep(0.05)
            ended["job-1"] = True
            worker.publish_done("job-1")
            return await waiting

        assert asyncio.run(wait_for_done()) is True
    finally:
        api.close()
        worker.close()


def test_long_home_path_still_gets_a_socket(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6) / "run"
    notifier = Notifier(deep)
    try:
        assert len(str(notifier.folder)) < 100
    finally:
        notifier.close()


def test_a_notice_alone_does_not_end_the_wait(tmp_path):
    """The record decides: a 'done' notice for a job still running (stale or forged) is not believed."""
    api, other = Notifier(tmp_path / "run"), Notifier(tmp_path / "run")
    try:

        async def wait_with_false_notice() -> bool:
            waiting = asyncio.ensure_future(api.wait_done("job-2", timeout=0.5, is_done=lambda: False, recheck=600))
            await asyncio.sleep(0.05)
            other.publish_done("job-2")
            return await waiting

        assert asyncio.run(wait_with_false_notice()) is False
    finally:
        api.close()
        other.close()


def test_wait_times_out_without_news(tmp_path):
    notifier = Notifier(tmp_path / "run")
    try:
        assert asyncio.run(notifier.wait_done("nobody", timeout=0.2, is_done=lambda: False, recheck=0.05)) is False
    finally:
        notifier.close()
