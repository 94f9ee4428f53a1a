"""The in-process half of every Events backend: who in this process waits for news of which job.

A transport (datagrams, Redis pub/sub) hands each notice it hears to `notify`; callbacks run on
the transport's thread, and asyncio waiters are resolved on their own loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable

import anyio.to_thread


class LocalWatchers:
    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callable[[str], None]]] = defaultdict(list)
        self._lock = threading.Lock()
        self.wake = threading.Event()

    def watch(self, job_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        with self._lock:
            self._callbacks[job_id].append(callback)

        def stop() -> None:
            with self._lock:
                entries = self._callbacks.get(job_id, [])
                if callback in entries:
                    entries.remove(callback)
                if not entries:
                    self._callbacks.pop(job_id, None)

        return stop

    def notify(self, job_id: str, kind: str) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(job_id, ()))
        for callback in callbacks:
            callback(kind)

    async def wait_changed(self, job_id: str, timeout: float, is_done: Callable[[], bool], recheck: float) -> bool:
        """True once `is_done()` says so, False after `timeout`. `is_done` is checked after registering (so an
        end between submit and wait is not missed), on every notice, and every `recheck` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[None] = loop.create_future()

            def resolve(kind: str, future: asyncio.Future[None] = future) -> None:
                try:
                    loop.call_soon_threadsafe(_set_done, future)
                except RuntimeError:
                    # The waiter's event loop has closed: nobody is waiting there any more.
                    pass

            stop = self.watch(job_id, resolve)
            try:
                if await anyio.to_thread.run_sync(is_done):
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    # A notice only says "look again": the record decides (a notice may be stale or forged).
                    await asyncio.wait_for(future, timeout=min(remaining, recheck))
                except TimeoutError:
                    pass
            finally:
                stop()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
