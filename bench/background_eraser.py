"""retouch's /v1/background-eraser over HTTP against rembg's own `remove()` with u2net.onnx, same images.

Both make the RGBA cut-out from JPEG bytes and return PNG bytes. retouch runs as two real
`retouch serve` processes (one worker each): one with its default model, the int8 U²-Net made at
install, one with the fp32 u2net.onnx that rembg runs too. rembg runs in this process with its model
folder pointed at the installed file, so nothing downloads. Calls are interleaved, warm-up excluded.
Prints the medians and the ratios retouch / rembg (goal for the int8 default: at most 0.5). Then each
installed segmentation model alone, on a 1024 x 1024 photo, in this process: seconds per mask
against fp32 U²-Net's, so that a user can choose (ISNet is installed on request:
`retouch models install isnet`).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/background_eraser.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data

from retouch.config import Settings
from retouch.models.background_eraser import segmentation_engine
from retouch.weights.store import is_installed, locate

# The segmentation models timed alone, when installed, in this order.
ENGINE_MODELS = ("u2net", "u2net-int8", "u2netp", "isnet")
# The retouch servers, by the RETOUCH_BACKGROUND_ERASER_MODEL each runs.
SERVED_MODELS = ("u2net-int8", "u2net")


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def photos() -> dict[str, bytes]:
    astronaut = data.astronaut()
    large = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.Resampling.LANCZOS))
    return {
        "chelsea 451x300": jpeg(data.chelsea()),
        "coffee 600x400": jpeg(data.coffee()),
        "astronaut 512x512": jpeg(astronaut),
        "astronaut 1536x1536": jpeg(large),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(weights_dir: Path, home: Path, model: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    environment = {
        **os.environ,
        "RETOUCH_HOME": str(home),
        "RETOUCH_WEIGHTS_DIR": str(weights_dir),
        "RETOUCH_LOG_LEVEL": "warning",
        "RETOUCH_BACKGROUND_ERASER_MODEL": model,
    }
    process = subprocess.Popen([sys.executable, "-m", "retouch.cli", "serve", "--port", str(port), "--workers", "1", "--no-auth"], env=environment)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("retouch serve did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per image and side")
    arguments = parser.parse_args()

    settings = Settings()
    model_file = locate("u2net", settings)
    os.environ["U2NET_HOME"] = str(model_file.parent)
    from rembg import new_session, remove

    session = new_session("u2net")
    images = photos()
    sides = ("rembg", *(f"retouch {model}" for model in SERVED_MODELS))
    servers = []
    client = httpx.Client(timeout=120)
    with tempfile.TemporaryDirectory() as home:
        try:
            bases = {}
            for model in SERVED_MODELS:
                server, bases[f"retouch {model}"] = start_server(model_file.parent, Path(home) / model, model)
                servers.append(server)

            def call(side: str, payload: bytes) -> bytes:
                if side == "rembg":
                    return remove(payload, session=session)
                response = client.post(
                    f"{bases[side]}/v1/background-eraser",
                    files={"image": ("photo.jpg", payload, "image/jpeg")},
                    data={"return_mask": "false"},
                )
                response.raise_for_status()
                return response.content

            for payload in images.values():
                for side in sides:
                    call(side, payload)

            timings: dict[str, dict[str, list[float]]] = {name: {side: [] for side in sides} for name in images}
            for _ in range(arguments.rounds):
                for name, payload in images.items():
                    for side in sides:
                        started = time.perf_counter()
                        call(side, payload)
                        timings[name][side].append(time.perf_counter() - started)
        finally:
            client.close()
            for server in servers:
                server.send_signal(signal.SIGINT)
                server.wait(timeout=30)

    print(f"background-eraser, RGBA cut-out, {arguments.rounds} rounds, {os.cpu_count()} cores; rembg remove() on u2net.onnx is the anchor")
    print(f"{'image':<22}" + "".join(f"{side + ' s':>22}" for side in sides) + "".join(f"{'ratio ' + side[8:]:>18}" for side in sides[1:]))
    totals: dict[str, float] = dict.fromkeys(sides, 0.0)
    for name, by_side in timings.items():
        medians = {side: statistics.median(values) for side, values in by_side.items()}
        for side, median in medians.items():
            totals[side] += median
        row = "".join(f"{medians[side]:>22.3f}" for side in sides) + "".join(f"{medians[side] / medians['rembg']:>18.2f}" for side in sides[1:])
        print(f"{name:<22}{row}")
    row = "".join(f"{totals[side]:>22.3f}" for side in sides) + "".join(f"{totals[side] / totals['rembg']:>18.2f}" for side in sides[1:])
    print(f"{'all (sum of medians)':<22}{row}")
    for side in sides[1:]:
        goal = " (goal: at most 0.50)" if side == "retouch u2net-int8" else ""
        print(f"ratio {side}/rembg: {totals[side] / totals['rembg']:.2f}{goal}")
    engine_seconds(settings, arguments.rounds)


def engine_seconds(settings: Settings, rounds: int) -> None:
    """Median seconds of each installed model's `predict` on one 1024 x 1024 photo, calls interleaved."""
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((1024, 1024), Image.Resampling.LANCZOS))
    engines = {}
    for name in ENGINE_MODELS:
        if is_installed(name, settings):
            engines[name] = segmentation_engine(settings, name)
            engines[name].setup("cpu")
            engines[name].predict(photo)
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.predict(photo)
            seconds[name].append(time.perf_counter() - started)
    print(f"\nmodels alone, one 1024 x 1024 photo, {rounds} rounds (median seconds per mask):")
    anchor = statistics.median(seconds["u2net"]) if "u2net" in seconds else None
    for name, values in seconds.items():
        median = statistics.median(values)
        against = f"  ({median / anchor:.2f} x u2net)" if anchor else ""
        print(f"  {name:<12}{median:>8.3f}{against}")


if __name__ == "__main__":
    main()
