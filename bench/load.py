"""Load on the job core: many clients against a fast fake engine, embedded and on Redis.

Deployments, each started as an operator would, on this machine:
  embedded  `retouch serve --workers 2` (two worker threads in the API process, SQLite and files)
  redis     `retouch serve --workers 0` and two `retouch worker` processes, on a Redis of its own

Each gets `--clients` concurrent clients (asyncio, one process) posting `--requests` /v1 requests
in all, on an 8x8 PNG; the engine returns it unchanged. Printed per deployment: requests per second,
p50 and p99 of the answer time, errors (anything but 200), lost (accepted minus ended: every id is
read back from /v2/requests/{id}/status at the end), and the overhead: p50 of the answer time minus
p50 of the engine's own time (metrics.inference_time), under load and for a single client at rest.
Goal: 0 errors, 0 lost; overhead at most 15 ms embedded and 10 ms on Redis.

The keyed run then starts each deployment twice, with keys off and with keys on (a key with
credits and a rate, so that every request is authenticated, rate-limited and charged), and sends
single-client requests to the two in alternating rounds: the difference of their p50s is the cost
of the access checks per request. Goal: at most 2 ms.

    .venv/bin/python bench/load.py [--requests 2000] [--clients 32] [--backend both] [--keyed only|skip]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import base64
import io
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from echo import MODELS, SLUG

from retouch.cli import run_server, run_worker
from retouch.config import Settings

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_png() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def drive(base: str, requests: int, clients: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = {"image": tiny_png(), "output_format": "png"}
    answers: list[float] = []
    ids: list[str] = []
    errors: dict[str, int] = {}
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits, headers=headers) as client:

        async def one_client() -> None:
            for _ in remaining:
                started = time.perf_counter()
                try:
                    response = await client.post(f"/v1/{SLUG}", json=body)
                except httpx.HTTPError as error:
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                    continue
                answers.append(time.perf_counter() - started)
                if "x-request-id" in response.headers:
                    ids.append(response.headers["x-request-id"])
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        inference: list[float] = []
        ended = 0
        for request_id in ids:
            status = (await client.get(f"/v2/requests/{request_id}/status")).json()
            if status.get("status") in ("COMPLETED", "FAILED", "CANCELED"):
                ended += 1
            if "inference_time" in status.get("metrics", {}):
                inference.append(status["metrics"]["inference_time"])
    accepted = len(ids) - sum(count for code, count in errors.items() if code.startswith("4") or code == "503")
    return {
        "rps": len(answers) / elapsed,
        "p50": percentile(answers, 0.5),
        "p99": percentile(answers, 0.99),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "lost": accepted - ended,
        "engine_p50": percentile(inference, 0.5) if inference else float("nan"),
    }


@contextlib.contextmanager
def redis_server(folder: str) -> Iterator[str]:
    """A redis-server of the benchmark's own on a free port; its URL."""
    binary = shutil.which("redis-server") or sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL
    )
    time.sleep(0.5)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()


def wait_healthy(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base} did not become ready")


def make_key(settings: Settings) -> str:
    """A key with credits and a rate, in the deployment's store: each request then pays for every check."""
    from retouch.jobs.access import new_key
    from retouch.jobs.backends import open_backend

    backend = open_backend(settings, tuple(MODELS))
    try:
        key, secret = new_key("bench", None, 1e9, "1000000/minute", tuple(MODELS), time.time())
        backend.store.create_key(key)
    finally:
        backend.close()
    return secret


def start(backend: str, home: Path, redis_url: str | None, auth: bool = False) -> tuple[str, list[multiprocessing.Process], dict[str, str]]:
    """The deployment's base URL, its processes, and the headers its requests need."""
    context = multiprocessing.get_context("spawn")
    port = free_port()
    common: dict[str, Any] = {"home": home / "api", "port": port, "log_level": "warning", "max_queued": 100_000, "auth": auth}
    if backend == "embedded":
        processes = [context.Process(target=run_server, args=(Settings(workers=2, **common), MODELS))]
    else:
        fleet = {"queue_url": redis_url, "redis_prefix": f"load{os.getpid()}{'keyed' if auth else ''}"}
        processes = [context.Process(target=run_server, args=(Settings(workers=0, **common, **fleet), MODELS))]
        for index in range(2):
            settings = Settings(home=home / f"worker-{index}", log_level="warning", auth=auth, **fleet)
            processes.append(context.Process(target=run_worker, args=(settings, MODELS, tuple(MODELS), 1, None)))
    headers = {"x-api-key": make_key(Settings(**common, **({} if backend == "embedded" else fleet)))} if auth else {}
    for process in processes:
        process.start()
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base)
    return base, processes, headers


def stop(processes: list[multiprocessing.Process]) -> None:
    for process in reversed(processes):
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


def keyed_overhead(backend: str, folder: Path, redis_url: str | None, rounds: int = 6, per_round: int = 100) -> tuple[float, float, int]:
    """p50 of single-client answers with keys off and on (the same deployment twice, alternating rounds), and the errors."""
    plain_base, plain_processes, _ = start(backend, folder / f"{backend}-plain", redis_url)
    keyed_base, keyed_processes, headers = start(backend, folder / f"{backend}-keyed", redis_url, auth=True)
    plain: list[float] = []
    keyed: list[float] = []
    errors = 0
    try:
        asyncio.run(drive(plain_base, 50, 1))
        asyncio.run(drive(keyed_base, 50, 1, headers))
        for _ in range(rounds):
            for base, extra, into in ((plain_base, None, plain), (keyed_base, headers, keyed)):
                result = asyncio.run(drive(base, per_round, 1, extra))
                into.append(result["p50"])
                errors += result["errors"]
    finally:
        stop(keyed_processes)
        stop(plain_processes)
    return sorted(plain)[len(plain) // 2], sorted(keyed)[len(keyed) // 2], errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--backend", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--keyed", choices=["also", "only", "skip"], default="also", help="Run the keyed comparison too, only, or not.")
    arguments = parser.parse_args()
    backends = ["embedded", "redis"] if arguments.backend == "both" else [arguments.backend]
    goals = {"embedded": 0.015, "redis": 0.010}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(folder)) if "redis" in backends else None
        if arguments.keyed != "only":
            print(f"{arguments.requests} /v1 requests from {arguments.clients} concurrent clients, fast fake engine")
            print(f"{'backend':<9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'lost':>5} {'overhead ms':>12} {'at rest ms':>11} {'goal ms':>8}")
        for backend in backends if arguments.keyed != "only" else ():
            base, processes, _ = start(backend, Path(folder) / backend, redis_url)
            try:
                asyncio.run(drive(base, 50, 4))
                loaded = asyncio.run(drive(base, arguments.requests, arguments.clients))
                rest = asyncio.run(drive(base, 200, 1))
            finally:
                stop(processes)
            overhead = (loaded["p50"] - loaded["engine_p50"]) * 1000
            at_rest = (rest["p50"] - rest["engine_p50"]) * 1000
            print(
                f"{backend:<9} {loaded['rps']:7.1f} {loaded['p50'] * 1000:8.1f} {loaded['p99'] * 1000:8.1f} "
                f"{loaded['errors']:7d} {loaded['lost']:5d} {overhead:12.1f} {at_rest:11.1f} {goals[backend] * 1000:8.0f}"
            )
            if loaded["error_kinds"]:
                print(f"          errors: {loaded['error_kinds']}")
            print(f"          ratio overhead at rest / goal: {at_rest / (goals[backend] * 1000):.2f}")
        if arguments.keyed == "skip":
            return
        print("\nkeys on against keys off: one client, alternating rounds; a key with credits and a rate")
        print(f"{'backend':<9} {'off p50 ms':>11} {'on p50 ms':>10} {'checks ms':>10} {'errors':>7} {'goal ms':>8}")
        for backend in backends:
            plain, keyed, errors = keyed_overhead(backend, Path(folder), redis_url)
            checks = (keyed - plain) * 1000
            print(f"{backend:<9} {plain * 1000:11.2f} {keyed * 1000:10.2f} {checks:10.2f} {errors:7d} {2:8d}")
            print(f"          ratio access checks / goal: {checks / 2:.2f}")


if __name__ == "__main__":
    main()
