"""Soak: many real background-eraser requests, and the resident memory of the API and of the worker.

`retouch serve --workers 0` and `retouch worker` (embedded, one home, real U²-Net weights) as
separate processes, so that each one's memory is its own; two clients post /v1 requests with
photos of several sizes (scikit-image's, resized) in turn. The resident memory (VmRSS) of the API
process and of the worker process is read after the first `--early` requests and after all of them.
Goal: less than 10% growth from the early reading to the last.

    .venv/bin/python bench/soak.py [--requests 1000] [--early 100] [--model u2net]
"""

from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image
from skimage import data

from retouch.cli import run_server, run_worker
from retouch.config import Settings
from retouch.models import MODELS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def photos() -> list[str]:
    encoded = []
    for name, side in (("chelsea", 451), ("coffee", 800), ("astronaut", 1024), ("rocket", 640), ("chelsea", 1600)):
        image = Image.fromarray(getattr(data, name)())
        image = image.resize((side, round(side * image.height / image.width)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    return encoded


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--early", type=int, default=100)
    parser.add_argument("--model", default="u2net", choices=["u2net", "u2netp"])
    arguments = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    weights = Settings().weights_path
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        common = {"home": Path(folder), "weights_dir": weights, "log_level": "warning", "background_eraser_model": arguments.model, "auth": False}
        api = context.Process(target=run_server, args=(Settings(port=port, workers=0, **common), MODELS))
        worker = context.Process(target=run_worker, args=(Settings(**common), MODELS, ("background-eraser",), 1, None))
        api.start()
        worker.start()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200 or time.monotonic() > deadline:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        worker_pid = children(worker.pid)[0]
        images = photos()
        counter = iter(range(arguments.requests))
        lock = threading.Lock()
        done = {"count": 0, "errors": 0}
        readings: dict[int, tuple[float, float]] = {}

        def client() -> None:
            with httpx.Client(base_url=base, timeout=120) as session:
                for index in counter:
                    response = session.post("/v1/background-eraser", json={"image": images[index % len(images)], "return_mask": index % 2 == 0})
                    with lock:
                        done["count"] += 1
                        done["errors"] += response.status_code != 200
                        if done["count"] in (arguments.early, arguments.requests):
                            readings[done["count"]] = (resident_mb(api.pid), resident_mb(worker_pid))

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        for process in (worker, api):
            os.kill(process.pid, signal.SIGTERM)
            process.join(timeout=60)
    print(f"{arguments.requests} /v1/background-eraser requests ({arguments.model}) in {elapsed:.0f} s, {done['errors']} errors")
    early_api, early_worker = readings[arguments.early]
    last_api, last_worker = readings[arguments.requests]
    print(f"{'process':<8} {'after ' + str(arguments.early):>12} {'after ' + str(arguments.requests):>12} {'growth':>8}")
    print(f"{'api':<8} {early_api:10.0f} MB {last_api:10.0f} MB {(last_api / early_api - 1) * 100:7.1f}%")
    print(f"{'worker':<8} {early_worker:10.0f} MB {last_worker:10.0f} MB {(last_worker / early_worker - 1) * 100:7.1f}%")
    print("goal: less than 10% growth")


if __name__ == "__main__":
    main()
