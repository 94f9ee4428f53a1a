"""Wake-ups between the processes that share one home: "a job is queued" and "job X has ended".

Huey's consumer on SQLite finds new work by polling with a delay that backs off to seconds, and a
/v1 request would otherwise poll the job record. Instead every process binds a Unix datagram
socket in a shared folder and each event is sent to all of them: an idle worker wakes as soon as
a job is queued, and a waiting /v1 request learns that its job ended without a sleep loop. A lost
datagram costs only latency: workers still poll (at `idle_poll`) and waiters re-check the record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import tempfile
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

_WAKE = b"wake"
_DONE = b"done "
# Unix socket paths are limited to 108 bytes on Linux (104 on macOS).
_MAX_SOCKET_PATH = 100


def socket_folder(run_path: Path) -> Path:
    """The folder of the sockets: run_path itself, or a short one in the temp dir when its path is too long."""
    if len(str(run_path)) + 30 <= _MAX_SOCKET_PATH:
        return run_path
    digest = hashlib.sha256(str(run_path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"retouch-{os.getuid()}-{digest}"


class Notifier:
    """One per process. `wake_event` is set when work is queued; `wait_done` resolves when a job ends."""

    def __init__(self, run_path: Path) -> None:
        self.folder = socket_folder(run_path)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.folder.stat().st_uid != os.getuid():
            raise RuntimeError(f"{self.folder} belongs to another user; set RETOUCH_HOME to a folder of your own")
        self.wake_event = threading.Event()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self._path))
        self._closed = False
        self._thread = threading.Thread(target=self._listen, name="retouch-notify", daemon=True)
        self._thread.start()

    def publish_wake(self) -> None:
        self.wake_event.set()
        self._broadcast(_WAKE)

    def publish_done(self, job_id: str) -> None:
        self._resolve(job_id)
        self._broadcast(_DONE + job_id.encode())

    async def wait_done(self, job_id: str, timeout: float, is_done: Callable[[], bool], recheck: float = 1.0) -> bool:
        """True once the job has ended, False after `timeout`. `is_done` reads the record: it is checked after
        registering (so an end between submit and wait is not missed) and every `recheck` seconds as a safety net."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[None] = loop.create_future()
            with self._lock:
                self._waiters[job_id].append((loop, future))
            try:
                if is_done():
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    # A notice only says "look again": the record decides (a notice may be stale or forged).
                    await asyncio.wait_for(future, timeout=min(remaining, recheck))
                except TimeoutError:
                    pass
                continue
            finally:
                with self._lock:
                    entries = self._waiters.get(job_id, [])
                    if (loop, future) in entries:
                        entries.remove((loop, future))
                    if not entries:
                        self._waiters.pop(job_id, None)

    def _resolve(self, job_id: str) -> None:
        with self._lock:
            entries = list(self._waiters.get(job_id, []))
        for loop, future in entries:
            try:
                loop.call_soon_threadsafe(_set_done, future)
            except RuntimeError:
                # The waiter's event loop has closed: nobody is waiting there any more.
                continue

    def _broadcast(self, message: bytes) -> None:
        for path in self.folder.glob("*.sock"):
            if path == self._path:
                continue
            try:
                self._socket.sendto(message, socket.MSG_DONTWAIT, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                path.unlink(missing_ok=True)
            except (BlockingIOError, OSError) as exc:
                logger.debug("notification to %s not sent: %s", path, exc)

    def _listen(self) -> None:
        while not self._closed:
            try:
                message = self._socket.recv(256)
            except OSError:
                return
            if message == _WAKE:
                self.wake_event.set()
            elif message.startswith(_DONE):
                self._resolve(message[len(_DONE) :].decode(errors="replace"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            # The listener is blocked in recv: a datagram to ourselves lets it see the flag and return.
            self._socket.sendto(b"stop", socket.MSG_DONTWAIT, str(self._path))
        except OSError:
            pass
        self._thread.join(timeout=2)
        self._socket.close()
        self._path.unlink(missing_ok=True)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
