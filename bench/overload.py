"""Overload: many more /v1 callers than the workers can serve, embedded and on Redis.

An engine of fixed duration (0.8 s: `fixed` in bench/echo.py, about background-eraser's time on two
cores) behind one worker thread, so the capacity is 1.25 requests a second, at the default sync
timeout of 25 s; `--clients` callers (32) post /v1 for `--seconds` each, as fast as
they are answered, waiting what Retry-After says (at most 5 s) after a 429. Printed per backend:
goodput (200 answers a second) and its ratio to the capacity, the answers by status, p50 of the
refusals' answer time, the 504s (goal: 0), and the jobs run for callers who were refused (every
refused request's id is read back: goal 0, it must name no job).

    .venv/bin/python bench/overload.py [--clients 32] [--seconds 30] [--backend both]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import tempfile
import time
from pathlib import Path

import httpx
from load import free_port, percentile, redis_server, stop, tiny_png

from retouch.cli import run_server, run_worker
from retouch.config import Settings

SLUG = "fixed"
CAPACITY = 1 / 0.8


def start(backend: str, home: Path, redis_url: str | None) -> tuple[str, list]:
    import multiprocessing

    from echo import MODELS

    context = multiprocessing.get_context("spawn")
    port = free_port()
    common = {"home": home / "api", "port": port, "log_level": "warning", "auth": False}
    if backend == "embedded":
        processes = [context.Process(target=run_server, args=(Settings(workers=1, **common), MODELS))]
    else:
        fleet = {"queue_url": redis_url, "redis_prefix": "overload"}
        processes = [
            context.Process(target=run_server, args=(Settings(workers=0, **common, **fleet), MODELS)),
            context.Process(target=run_worker, args=(Settings(home=home / "worker", log_level="warning", auth=False, **fleet), MODELS, (SLUG,), 1, None)),
        ]
    for process in processes:
        process.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not served(base):
        if time.monotonic() > deadline:
            raise RuntimeError("no worker came up")
        time.sleep(0.2)
    return base, processes


def served(base: str) -> bool:
    try:
        models = httpx.get(f"{base}/v1/models", timeout=2).json()["models"]
    except httpx.TransportError:
        return False
    return any(entry["slug"] == SLUG and entry["live_workers"] > 0 for entry in models)


async def drive(base: str, clients: int, seconds: float) -> dict:
    body = {"image": tiny_png(), "output_format": "png"}
    codes: collections.Counter[int] = collections.Counter()
    refusal_times: list[float] = []
    refused_ids: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        end = time.monotonic() + seconds

        async def caller() -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                response = await client.post(f"/v1/{SLUG}", json=body)
                codes[response.status_code] += 1
                if response.status_code in (429, 503):
                    refusal_times.append(time.perf_counter() - started)
                    refused_ids.append(response.headers["x-request-id"])
                    await asyncio.sleep(min(5.0, float(response.headers.get("retry-after", "1"))))

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(clients)))
        elapsed = time.monotonic() - started
        run_anyway = 0
        for request_id in refused_ids:
            if (await client.get(f"/v2/requests/{request_id}/status")).status_code != 404:
                run_anyway += 1
    return {"elapsed": elapsed, "codes": codes, "refusal_p50": percentile(refusal_times, 0.5) if refusal_times else float("nan"), "run_anyway": run_anyway}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--backend", choices=["embedded", "redis", "both"], default="both")
    arguments = parser.parse_args()
    backends = ["embedded", "redis"] if arguments.backend == "both" else [arguments.backend]
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(folder)) if "redis" in backends else None
        print(f"{arguments.clients} callers on /v1 for {arguments.seconds:g} s; capacity {CAPACITY:g} requests/s (one worker thread, 0.8 s a job), sync timeout 25 s")
        for backend in backends:
            base, processes = start(backend, Path(folder) / backend, redis_url)
            try:
                result = asyncio.run(drive(base, arguments.clients, arguments.seconds))
            finally:
                stop(processes)
            codes = result["codes"]
            goodput = codes[200] / result["elapsed"]
            print(f"{backend}:")
            print(f"  answers: {dict(sorted(codes.items()))}")
            print(f"  goodput {goodput:.2f} /s, ratio to capacity {goodput / CAPACITY:.2f}")
            print(f"  refusals: p50 {result['refusal_p50'] * 1000:.1f} ms; 504s: {codes[504]} (goal 0)")
            print(f"  jobs run for refused callers: {result['run_anyway']} (goal 0)")


if __name__ == "__main__":
    main()
