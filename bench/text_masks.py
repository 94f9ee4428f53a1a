"""Seconds per request of automatic-mask-generator and inpaint-mask-maker on the offline engine
(CenterNet + U²-Net), end to end through the service (in-process HTTP), at 512 and 1024 pixels.

Anchor: the hosted automatic-mask-generator's own published latency, 1.5 s per request, against a
1024-pixel photo with one matching object on this machine's CPU cores. Prints the medians and the
ratio against the anchor (goal: at most 1.0 for 1024 pixels), with the int8 U²-Net refiner (the
default) and the fp32 one interleaved; goal for the slowest case at 1024 pixels with the int8
refiner: at most 0.5 s. With --open, also the open-vocabulary
engine's pre- and post-processing overhead alone, on tiny random-weight models.

Then the quality at the contract's defaults (automatic-mask-generator's threshold 0.2,
inpaint-mask-maker's confidence_thresh 0.5), on the checking part of the labelled photo set
(bench/photoset.py) only: one case per photo and COCO class in it (with its colour word when
every one of them has the same colour, "white horse"), and the absent classes as cases that must
come back empty. Per case, precision and recall of the detections' boxes against the hand-made
ones (IoU >= 0.5; a detection on an ignored object counts neither way). Goals: no case with a
visible object empty; mean precision at least 0.85 and recall at least 0.8. Last, the colour words
apart from the detector: on every hand-boxed object with a labelled colour, whether the colour rules
name that colour on the shape the engine refines from the hand-made box.

    .venv/bin/python bench/text_masks.py [--rounds 5] [--open] [--quality-only]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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
from retouch.detection.colours import COLOUR_NAMES, has_colour
from retouch.engines.centernet import CenterNetEngine
from retouch.engines.coco_text_mask import CocoTextMaskEngine
from retouch.engines.u2net import U2NetEngine

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench/ is not a package: its photo set module is imported from beside this file.
from photoset import Photo, available, load

HOSTED_SECONDS = 1.5
MAX_PIXELS = 16_000_000
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
            network.register_forward_hook(lambda module, args, output, started=started: forward_seconds.append(time.perf_counter() - started["at"]))
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


REFINERS = ("u2net-int8", "u2net")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--open", action="store_true", help="also the open-vocabulary engine's overhead (needs the full extra)")
    parser.add_argument("--quality-only", action="store_true", help="only the precision and recall on the labelled photos")
    parser.add_argument("--split", default="check", choices=("check", "fit"), help="the part of the photo set judged on (check unless tuning)")
    arguments = parser.parse_args()
    if arguments.quality_only:
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(home=home, weights_dir=Settings().weights_path, text_mask_engine="coco", auth=False)
            with TestClient(create_app(settings, workers=1)) as client:
                quality(client, arguments.split)
        colour_judgement(arguments.split)
        return
    with tempfile.TemporaryDirectory() as home, contextlib.ExitStack() as stack:
        clients = {}
        for refiner in REFINERS:
            settings = Settings(
                home=Path(home) / refiner, weights_dir=Settings().weights_path, text_mask_engine="coco", text_mask_refiner=refiner, auth=False
            )
            clients[refiner] = stack.enter_context(TestClient(create_app(settings, workers=1)))
        print(f"text-to-mask, offline engine, {os.cpu_count()} cores, median of {arguments.rounds}; refiners {' and '.join(REFINERS)} interleaved")
        print(
            f"{'slug':<26}{'photo':<12}{'side':>6}"
            + "".join(f"{refiner + ' s':>16}{'inference':>11}" for refiner in REFINERS)
            + f"{'vs hosted 1.5 s':>17}"
        )
        worst_1024 = dict.fromkeys(REFINERS, 0.0)
        for slug in ("automatic-mask-generator", "inpaint-mask-maker"):
            for name, prompt in PHOTOS.items():
                for side in (512, 1024):
                    payload = {"image": encoded(getattr(data, name)(), side), "prompt": prompt, "return_mask": True}
                    totals: dict[str, list[float]] = {refiner: [] for refiner in REFINERS}
                    inferences: dict[str, list[float]] = {refiner: [] for refiner in REFINERS}
                    for client in clients.values():
                        client.post(f"/v1/{slug}", json=payload)
                    for _ in range(arguments.rounds):
                        for refiner, client in clients.items():
                            started = time.perf_counter()
                            response = client.post(f"/v1/{slug}", json={**payload, "base64": True})
                            totals[refiner].append(time.perf_counter() - started)
                            inferences[refiner].append(response.json()["metrics"]["inference_time"])
                    medians = {refiner: statistics.median(values) for refiner, values in totals.items()}
                    if side == 1024:
                        for refiner, median in medians.items():
                            worst_1024[refiner] = max(worst_1024[refiner], median)
                    row = "".join(f"{medians[refiner]:>16.3f}{statistics.median(inferences[refiner]):>11.3f}" for refiner in REFINERS)
                    print(f"{slug:<26}{name:<12}{side:>6}{row}{medians[REFINERS[0]] / HOSTED_SECONDS:>17.2f}")
        for refiner in REFINERS:
            print(f"slowest case at 1024 px with the {refiner} refiner: {worst_1024[refiner]:.3f} s")
        print(f"goal: the slowest case at 1024 px with the int8 refiner at most 0.50 s: {worst_1024['u2net-int8'] / 0.5:.2f} of it")
        print(f"ratio retouch/hosted at 1024 px, slowest case: {worst_1024['u2net-int8'] / HOSTED_SECONDS:.2f} (goal: at most 1.00)")
        quality(clients["u2net-int8"], arguments.split)
        colour_judgement(arguments.split)
    if arguments.open:
        open_engine_overhead(arguments.rounds)


def _iou(first: tuple[int, ...], second: tuple[int, ...]) -> float:
    width = max(0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0, min(first[3], second[3]) - max(first[1], second[1]))
    overlap = width * height
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1]) - overlap
    return overlap / union if union else 0.0


def cases(photo: Photo, scale: float = 1.0) -> list[tuple[str, str, list[tuple[float, ...]], list[tuple[float, ...]]]]:
    """(prompt, class, boxes to find, boxes to ignore) for each class in the photo and each absent one, the
    boxes scaled by ``scale``."""

    def scaled(box: tuple[int, ...]) -> tuple[float, ...]:
        return tuple(value * scale for value in box)

    found = []
    for label in dict.fromkeys(box.label for box in photo.boxes):
        boxes = [box for box in photo.boxes if box.label == label]
        colours = {box.colour for box in boxes}
        prompt = f"{colours.pop()} {label}" if len(colours) == 1 and None not in colours else label
        ignored = [scaled(box.box) for box in photo.ignore if box.label == label]
        found.append((prompt, label, [scaled(box.box) for box in boxes], ignored))
    found.extend((label, label, [], []) for label in photo.absent)
    return found


def score(detections: list[dict], truth: list[tuple[int, ...]], ignored: list[tuple[int, ...]]) -> tuple[float, float]:
    """Precision and recall of the detections' boxes (greedy by score, IoU >= 0.5, each object matched once)."""
    unmatched, true, counted = list(truth), 0, 0
    for detection in sorted(detections, key=lambda item: item["score"], reverse=True):
        box = tuple(detection["box"])
        match = max(unmatched, key=lambda candidate: _iou(candidate, box), default=None)
        if match is not None and _iou(match, box) >= 0.5:
            unmatched.remove(match)
            true += 1
            counted += 1
        elif not any(_iou(other, box) >= 0.5 for other in ignored):
            counted += 1
    precision = true / counted if counted else (1.0 if not truth else 0.0)
    recall = true / len(truth) if truth else (1.0 if counted == 0 else 0.0)
    return precision, recall


def colour_judgement(split: str) -> None:
    """How often the colour rules name a hand-boxed object's labelled colour, judged on its refined shape as
    the engine refines a box: the colour words' own share of the misses, apart from the detector's."""
    settings = Settings()
    engine = CocoTextMaskEngine(CenterNetEngine.from_settings(settings), U2NetEngine.from_settings(settings, settings.text_mask_refiner))
    engine.setup("cpu")
    judged = right = accepted = 0
    misses = []
    for photo in available(split)[0]:
        image = load(photo)
        for box in photo.boxes:
            if box.colour is None:
                continue
            shape = engine.refine(image, box.box)
            names = [name for name in COLOUR_NAMES if has_colour(image, shape, name, person=box.label == "person")]
            judged += 1
            right += box.colour in names
            accepted += len(names)
            if box.colour not in names:
                misses.append(f"{photo.id} {box.label} {box.colour}: judged {', '.join(names) or 'none'}")
    per_object = accepted / max(1, judged)
    print(f"\ncolour words on the {split} part: {right} of {judged} labelled objects judged so; {per_object:.1f} names accepted per object")
    for line in misses:
        print(f"  missed: {line}")


def quality(client: TestClient, split: str = "check") -> None:
    present, missing = available(split)
    for line in missing:
        print(f"left out: {line}")
    print(f"\nquality at the contract's defaults, {len(present)} photos of the {split} part")
    defaults = {"automatic-mask-generator": {}, "inpaint-mask-maker": {}}
    rows: dict[str, list[tuple[str, str, bool, float, float, int]]] = {slug: [] for slug in defaults}
    for photo in present:
        image = load(photo)
        # The service takes at most 16.7 megapixels (RETOUCH_MAX_PIXELS); a larger wallpaper goes in reduced, its boxes with it.
        scale = min(1.0, (MAX_PIXELS / (photo.width * photo.height)) ** 0.5)
        if scale < 1.0:
            image = np.asarray(Image.fromarray(image).resize((int(photo.width * scale), int(photo.height * scale)), Image.Resampling.LANCZOS))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded_photo = base64.b64encode(buffer.getvalue()).decode()
        for prompt, _, truth, ignored in cases(photo, scale):
            for slug, extra in defaults.items():
                response = client.post(f"/v1/{slug}", json={"image": encoded_photo, "prompt": prompt, "base64": True, **extra})
                if response.status_code != 200:
                    raise SystemExit(f"{photo.id} {prompt!r} on {slug}: {response.status_code} {response.text}")
                detections = response.json()["metrics"]["detections"]
                precision, recall = score(detections, truth, ignored)
                rows[slug].append((photo.id, prompt, bool(truth), precision, recall, len(detections)))
    for slug, results in rows.items():
        print(f"\n{slug}")
        print(f"{'photo':<48}{'prompt':<24}{'objects':>8}{'found':>7}{'precision':>11}{'recall':>8}")
        for photo_id, prompt, visible, precision, recall, count in results:
            flag = "  EMPTY" if visible and count == 0 else ""
            print(f"{photo_id:<48}{prompt:<24}{'yes' if visible else 'no':>8}{count:>7}{precision:>11.2f}{recall:>8.2f}{flag}")
        visible = [row for row in results if row[2]]
        absent = [row for row in results if not row[2]]
        empty = sum(1 for row in visible if row[5] == 0)
        mean_precision = statistics.mean(row[3] for row in visible) if visible else float("nan")
        mean_recall = statistics.mean(row[4] for row in visible) if visible else float("nan")
        kept_empty = sum(1 for row in absent if row[5] == 0)
        print(
            f"{slug}: {len(visible)} cases with objects, {empty} empty (goal 0); mean precision {mean_precision:.2f} (goal 0.85), "
            f"recall {mean_recall:.2f} (goal 0.80); absent objects left empty {kept_empty} of {len(absent)}"
        )


if __name__ == "__main__":
    main()
