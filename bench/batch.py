"""`retouch run background-eraser` on a folder of 50 photos with --jobs 2, against a plain Python loop that calls
the U²-Net engine directly in one process on the same files (decode, predict, encode the PNG mask, write it).

Prints images per second for both and the ratio CLI / loop (goal: at least 0.9). The CLI's figure includes
its start (the process, the engine's load), as a user's run does.

    .venv/bin/python bench/batch.py [--images 50]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data

from retouch.config import Settings
from retouch.engines.u2net import U2NetEngine


def write_photos(folder: Path, count: int) -> list[Path]:
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    paths = []
    for index in range(count):
        photo = sources[index % len(sources)]
        # Each file its own: shifted a little, so that no two are the same bytes.
        shifted = np.roll(photo, index, axis=1)
        path = folder / f"photo-{index:03d}.jpg"
        Image.fromarray(shifted).save(path, quality=92)
        paths.append(path)
    return paths


def plain_loop(paths: list[Path], out: Path) -> float:
    engine = U2NetEngine.from_settings(Settings(), variant="u2net")
    started = time.perf_counter()
    engine.setup("cpu")
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = engine.predict(image)
        buffer = io.BytesIO()
        Image.fromarray(mask).save(buffer, format="PNG")
        (out / f"{path.stem}.png").write_bytes(buffer.getvalue())
    return len(paths) / (time.perf_counter() - started)


def command_line(folder: Path, out: Path, count: int, jobs: int) -> float:
    retouch = Path(sys.executable).with_name("retouch")
    started = time.perf_counter()
    subprocess.run(
        [str(retouch), "run", "background-eraser", "--image", str(folder), "-o", str(out), "--jobs", str(jobs), "--no-progress"],
        check=True,
        capture_output=True,
        env={"RETOUCH_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    elapsed = time.perf_counter() - started
    assert len(list(out.iterdir())) == count
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    arguments = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "photos"
        folder.mkdir()
        paths = write_photos(folder, arguments.images)
        loop_out, cli_out = Path(root) / "loop", Path(root) / "cli"
        loop_out.mkdir()
        loop = plain_loop(paths, loop_out)
        cli = command_line(folder, cli_out, arguments.images, arguments.jobs)
    print(f"plain loop over the engine: {loop:.2f} images/s")
    print(f"retouch run --jobs {arguments.jobs} on the folder: {cli:.2f} images/s")
    print(f"ratio CLI / loop: {cli / loop:.2f} (goal: at least 0.9)")


if __name__ == "__main__":
    main()
