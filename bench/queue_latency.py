"""How soon an idle worker starts a queued job: retouch's wakeable consumer against Huey's own.

Both run the same trivial job through the same Service on SQLite; the anchor is Huey's stock
Worker, which finds new work by polling with a delay that backs off (x1.15 up to 10 s by default).
Each trial lets the worker sit idle first, then queues one job and reads its metrics.queue_time.
Prints both medians and the ratio retouch / Huey (goal: retouch under 10 ms).

    .venv/bin/python bench/queue_latency.py [--trials 10] [--idle 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from huey.consumer import Consumer

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.jobs.service import Service
from retouch.models.base import Model, ModelInput, ModelResult, image_field


class TrivialInput(ModelInput):
    image: str = image_field("Any image.")


class Trivial(Model):
    slug: ClassVar[str] = "trivial"
    Input: ClassVar[type[ModelInput]] = TrivialInput

    def engine_name(self, settings: Settings) -> str:
        return "none"

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        return _NoEngine()

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        return ModelResult(images=[images["image"]])


class _NoEngine:
    def setup(self, device: str) -> None:
        return None


def measure(stock_huey: bool, trials: int, idle: float) -> list[float]:
    model = Trivial()
    image = np.zeros((8, 8, 3), np.uint8)
    with tempfile.TemporaryDirectory() as home:
        service = Service(Settings(home=Path(home), idle_poll=10), {model.slug: model})
        if stock_huey:
            service.recover()
            consumer = Consumer(service.huey, workers=1, worker_type="thread")
            consumer._set_signal_handlers = lambda: None  # the stock consumer, minus signals (not the main thread's job here)
        else:
            consumer = service.start_workers(1)
        consumer.start()
        times = []
        try:
            for _ in range(trials):
                time.sleep(idle)
                job_id = uuid.uuid4().hex
                service.submit(job_id, model, model.Input(image="stored"), {"image": image})
                asyncio.run(service.wait(job_id, timeout=60))
                times.append(service.get(job_id).metrics["queue_time"])
        finally:
            consumer.stop(graceful=True)
            service.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds the worker idles before each job")
    arguments = parser.parse_args()
    stock = statistics.median(measure(True, arguments.trials, arguments.idle))
    ours = statistics.median(measure(False, arguments.trials, arguments.idle))
    print(f"queue_time of a job queued after {arguments.idle:g} s idle, median of {arguments.trials}")
    print(f"  Huey's stock consumer: {stock * 1000:8.1f} ms")
    print(f"  retouch (woken):       {ours * 1000:8.1f} ms")
    print(f"ratio retouch/huey: {ours / stock:.3f} (goal: retouch under 10 ms)")


if __name__ == "__main__":
    main()
