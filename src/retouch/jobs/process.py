"""`retouch worker` as a process: a supervisor that keeps one worker process running.

The supervisor holds no job and loads no engine. Its child runs the worker threads; when the child
dies (a crash in an engine, the out-of-memory killer, or its own exit after a job hung past its
deadline) the supervisor starts a new one, backing off when the child keeps dying young. The jobs
the dead child held run again once their lease runs out, up to RETOUCH_MAX_ATTEMPTS times.

Signals: SIGTERM or SIGINT drains (no new job is taken, the running ones end, then both exit 0);
a second one stops at once (the running jobs run again elsewhere after their lease). The child is
in a process group of its own, so a terminal's Ctrl-C reaches it only through the supervisor, and
it is killed with the supervisor if the supervisor is killed (Linux's parent-death signal).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from retouch.config import Settings
from retouch.logs import configure_logging
from retouch.models.base import Model

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_QUICK_DEATH_SECONDS = 10.0
_MAX_BACKOFF_SECONDS = 30.0


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            logger.warning("could not ask to die with the supervisor; a killed supervisor may leave this worker running")
    if os.getppid() != parent:
        # The supervisor died before the request above was in place.
        os._exit(1)


def worker_main(settings: Settings, models: dict[str, Model], slugs: tuple[str, ...], threads: int, metrics_port: int | None, parent: int) -> None:
    """The child: worker threads, a sweep, optionally a metrics port; drains on SIGTERM or SIGINT."""
    from retouch.jobs.metrics import JobMetrics
    from retouch.jobs.service import JobService
    from retouch.jobs.sweep import Sweeper
    from retouch.jobs.worker import EXIT_RECYCLE, WorkerPool

    os.setpgrp()
    _die_with_parent(parent)
    configure_logging(settings)
    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, frame: Any) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(1)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    registry = CollectorRegistry()
    metrics = JobMetrics(registry)
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)
    service = JobService(settings, models)
    sweeper = Sweeper(settings, service.backend, service.slugs, metrics)
    pool = WorkerPool(settings, models, service.backend, slugs, threads, metrics=metrics, on_hung="exit")
    pool.start()
    sweeper.start()
    logger.info("worker %s serving %s with %d thread(s)", pool.worker_id, ", ".join(slugs), threads)
    while not stop.is_set() and not pool.recycle_requested.is_set():
        stop.wait(0.5)
    if stop.is_set():
        logger.info("draining: finishing %d running request(s), taking no new ones", len(pool.running_ids()))
    pool.stop()
    sweeper.stop()
    service.close()
    if pool.recycle_requested.is_set():
        sys.exit(EXIT_RECYCLE)


def supervise(settings: Settings, models: dict[str, Model], slugs: tuple[str, ...], threads: int, metrics_port: int | None) -> int:
    """Run worker processes one after another until told to stop; the exit status of the last one."""
    context = multiprocessing.get_context("spawn")
    state: dict[str, Any] = {"stopping": False, "child": None, "signals": 0}

    def on_signal(signum: int, frame: Any) -> None:
        state["signals"] += 1
        state["stopping"] = True
        child = state["child"]
        if child is not None and child.pid is not None and child.is_alive():
            os.kill(child.pid, signal.SIGKILL if state["signals"] > 1 else signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backoff = 1.0
    while True:
        child = context.Process(
            target=worker_main, args=(settings, models, slugs, threads, metrics_port, os.getpid()), name="retouch-worker", daemon=False
        )
        started = time.monotonic()
        child.start()
        state["child"] = child
        child.join()
        code = child.exitcode if child.exitcode is not None else 1
        if state["stopping"] or code == 0:
            return 0 if code == 0 else code
        lived = time.monotonic() - started
        backoff = min(_MAX_BACKOFF_SECONDS, backoff * 2) if lived < _QUICK_DEATH_SECONDS else 1.0
        from retouch.jobs.worker import EXIT_RECYCLE

        delay = 0.0 if code == EXIT_RECYCLE else backoff
        logger.warning("worker process %s ended with status %s after %.1f s; starting a new one in %.0f s", child.pid, code, lived, delay)
        deadline = time.monotonic() + delay
        while not state["stopping"] and time.monotonic() < deadline:
            time.sleep(0.1)
        if state["stopping"]:
            return 0
