"""Seconds per request of automatic-mask-generator and inpaint-mask-maker on the offline engine
(CenterNet + U²-Net), end to end through the service (in-process HTTP), at 512 and 1024 pixels.

Anchor: the hosted automatic-mask-generator's own published latency, 1.5 s per request, against a
1024-pixel photo with one matching object on this machine's CPU cores. Prints the medians and the
ratio against the anchor (goal: at most 1.0 for 1024 pixels). With --open, also the open-vocabulary
engine's pre- and post-processing overhead alone, on tiny random-weight models.

    .venv/bin/python bench/text_masks.py [--rounds 5] [--open]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from retouch.api.app import create_app
from retouch.config import Settings

HOSTED_SECONDS = 1.5
PHOTOS = {"astronaut": "person", "coffee": "cup", "chelsea": "cat"}


def encoded(image: np.ndarray, side: int) -> str:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    resized = Image.fromarray(image).resize((round(width * scale), round(height * scale)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG", quality=95)
    return base64.b64encode(buffer.getvalue()).decode()


def open_engine_overhead(rounds: int) -> None:
    """The open-vocabulary engine's own work around the two networks: segment() minus their forward passes,
    on the tiny random-weight OWLv2 and SAM the tests build (the real networks' time is not measured here)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_models import build_owlv2, build_sam

    from retouch.engines.open_vocabulary import OpenVocabularyEngine

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build_owlv2(root / "owlv2")
        build_sam(root / "sam")
        engine = OpenVocabularyEngine(root / "owlv2", root / "sam")
        engine.setup("cpu")
        forward_seconds: list[float] = []
        for network in (engine.detector, engine.segmenter):
            started: dict[str, float] = {}
            network.register_forward_pre_hook(lambda module, args, started=started: started.__setitem__("at", time.perf_counter()))
            network.register_forward_hook(
                lambda module, args, output, started=started: forward_seconds.append(time.perf_counter() - started["at"])
            )
        generator = np.random.default_rng(0)
        print("open-vocabulary engine (OWLv2 + SAM), pre- and post-processing alone, tiny models")
        print(f"{'image':<12}{'segment ms':>12}{'forwards ms':>13}{'overhead ms':>13}{'vs hosted 1.5 s':>17}")
        for side in (512, 1024):
            image = generator.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)
            engine.segment(image, "dog, cat and white horse", 0.0, 0.5)
            totals, overheads = [], []
            for _ in range(rounds):
                forward_seconds.clear()
                started_at = time.perf_counter()
                engine.segment(image, "dog, cat and white horse", 0.0, 0.5)
                total = time.perf_counter() - started_at
                totals.append(total)
                overheads.append(total - sum(forward_seconds))
            overhead = statistics.median(overheads)
            print(
                f"{side}x{side * 3 // 4:<7}{statistics.median(totals) * 1000:>12.1f}"
                f"{(statistics.median(totals) - overhead) * 1000:>13.1f}{overhead * 1000:>13.1f}{overhead / HOSTED_SECONDS:>17.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--open", action="store_true", help="also the open-vocabulary engine's overhead (needs the full extra)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=home, weights_dir=Settings().weights_path, text_mask_engine="coco", auth=False)
        with TestClient(create_app(settings, workers=1)) as client:
            print(f"text-to-mask, offline engine, {os.cpu_count()} cores, median of {arguments.rounds}")
            print(f"{'slug':<26}{'photo':<12}{'side':>6}{'seconds':>10}{'inference':>11}{'vs hosted 1.5 s':>17}")
            worst_1024 = 0.0
            for slug in ("automatic-mask-generator", "inpaint-mask-maker"):
                for name, prompt in PHOTOS.items():
                    for side in (512, 1024):
                        payload = {"image": encoded(getattr(data, name)(), side), "prompt": prompt, "return_mask": True}
                        client.post(f"/v1/{slug}", json=payload)
                        totals, inferences = [], []
                        for _ in range(arguments.rounds):
                            started = time.perf_counter()
                            response = client.post(f"/v1/{slug}", json={**payload, "base64": True})
                            totals.append(time.perf_counter() - started)
                            inferences.append(response.json()["metrics"]["inference_time"])
                        median = statistics.median(totals)
                        if side == 1024:
                            worst_1024 = max(worst_1024, median)
                        print(
                            f"{slug:<26}{name:<12}{side:>6}{median:>10.3f}{statistics.median(inferences):>11.3f}"
                            f"{median / HOSTED_SECONDS:>17.2f}"
                        )
            print(f"ratio retouch/hosted at 1024 px, slowest case: {worst_1024 / HOSTED_SECONDS:.2f} (goal: at most 1.00)")
    if arguments.open:
        open_engine_overhead(arguments.rounds)


if __name__ == "__main__":
    main()
