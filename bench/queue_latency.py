"""How soon an idle worker starts a queued job: retouch's workers against Huey's own consumer.

retouch, both backends: the job service and a worker pool in one process, a trivial model; each
trial lets the worker sit idle first, then submits one job and reads its metrics.queue_time.
Embedded, the idle worker is woken by a datagram; on Redis it blocks on the queue (BRPOP).
The anchor is Huey's stock consumer on SQLite running a trivial task, which finds new work by
polling with a delay that backs off (x1.15 up to 10 s by default): the time from enqueue to the
task's start. Prints the medians and the ratios retouch / Huey (goal: retouch under 10 ms).

    .venv/bin/python bench/queue_latency.py [--trials 10] [--idle 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from huey import SqliteHuey
from huey.consumer import Consumer

from echo import MODELS, SLUG

from retouch.config import Settings
from retouch.imaging.encode import encode_image, to_base64
from retouch.jobs.service import JobService
from retouch.jobs.worker import WorkerPool


def measure_retouch(settings: Settings, trials: int, idle: float) -> list[float]:
    models = MODELS
    image = to_base64(encode_image(np.zeros((8, 8, 3), np.uint8), "png"))
    service = JobService(settings, models)
    pool = WorkerPool(settings, models, service.backend, (SLUG,), threads=1)
    pool.start(warm_up=False)
    times = []
    try:
        for _ in range(trials):
            time.sleep(idle)
            record = service.submit(SLUG, {"image": image})
            asyncio.run(service.wait(record.id, timeout=60))
            times.append(service.get(record.id).public_metrics()["queue_time"])
    finally:
        pool.stop()
        service.close()
    return times


def measure_huey(folder: Path, trials: int, idle: float) -> list[float]:
    huey = SqliteHuey(name="anchor", filename=str(folder / "huey.db"), results=False)
    started: dict[str, float] = {}
    ran = threading.Event()

    @huey.task()
    def trivial(key: str) -> None:
        started[key] = time.time()
        ran.set()

    consumer = Consumer(huey, workers=1, worker_type="thread")
    consumer._set_signal_handlers = lambda: None  # the stock consumer, minus signals (not the main thread's job here)
    consumer.start()
    times = []
    try:
        for trial in range(trials):
            time.sleep(idle)
            ran.clear()
            queued = time.time()
            trivial(str(trial))
            ran.wait(60)
            times.append(started[str(trial)] - queued)
    finally:
        consumer.stop(graceful=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds the worker idles before each job")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        stock = statistics.median(measure_huey(root, arguments.trials, arguments.idle))
        results = {"embedded": statistics.median(measure_retouch(Settings(home=root / "embedded", idle_poll=10), arguments.trials, arguments.idle))}
        binary = shutil.which("redis-server")
        if binary is not None:
            redis = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(root / "redis.sock"), "--save", "", "--dir", folder], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            try:
                settings = Settings(home=root / "redis", queue_url=f"unix://{root / 'redis.sock'}")
                results["redis"] = statistics.median(measure_retouch(settings, arguments.trials, arguments.idle))
            finally:
                redis.terminate()
                redis.wait()
    print(f"queue_time of a job queued after {arguments.idle:g} s idle, median of {arguments.trials}")
    print(f"  Huey's stock consumer (SQLite): {stock * 1000:8.1f} ms")
    for backend, median in results.items():
        print(f"  retouch, {backend:<8}              {median * 1000:8.1f} ms   ratio retouch/huey: {median / stock:.3f}")
    print("goal: retouch under 10 ms")


if __name__ == "__main__":
    main()
