"""Fit the calibration of CenterNet's raw scores on the fitting part of the labelled photo set.

    .venv/bin/python scripts/fit_calibration.py

The photos are bench/photoset.py's "fit" ones only (the benchmarks judge on the "check" ones);
each is used as it is, mirrored, and in two crops (the boxes follow), to see each object at
several positions and sizes. Detections are the engine's own (its passes merged), after
non-maximum suppression, of the classes a user would ask this photo for: those in it, and those
its label lists as absent (the prompts that must come back empty). A score is what the slugs
threshold once a prompt has named a class, so detections of classes nobody asked for (clutter read
as a kite) do not belong in its fit. They are matched COCO-style: each object once, by its best-scoring detection of
its class with IoU >= 0.5; duplicates count as false; a detection on an ignored object (too
small, hidden, doubtful) counts neither way. Prints the data and the knots to paste into
retouch/detection/calibration_data.py (KNOTS_BEST for the best detection of each asked
class in a photo, KNOTS for the others).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from photoset import available, load

from retouch.config import Settings
from retouch.detection.boxes import iou, non_maximum_suppression
from retouch.detection.calibration import fit_monotone
from retouch.engines.centernet import CenterNetEngine

MIN_RAW = 0.05
# 0.05 wide up to 0.6, where both slugs' thresholds fall (a 0.1 bin there averaged across them); 0.1 above.
BINS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 1.01]
Boxes = list[tuple[str, tuple[int, int, int, int]]]


def variants(image: np.ndarray, truth: Boxes, ignored: Boxes) -> list[tuple[np.ndarray, Boxes, Boxes]]:
    """The photo, mirrored, and two crops (left 70 % and bottom-right 70 %), with their boxes."""
    height, width = image.shape[:2]

    def mirror(boxes: Boxes) -> Boxes:
        return [(label, (width - x2, y1, width - x1, y2)) for label, (x1, y1, x2, y2) in boxes]

    result = [(image, truth, ignored), (np.ascontiguousarray(image[:, ::-1]), mirror(truth), mirror(ignored))]
    for left, top in ((0, 0), (int(width * 0.3), int(height * 0.3))):
        right, bottom = left + int(width * 0.7), top + int(height * 0.7)
        kept, dropped = [], list(ignored)
        for label, (x1, y1, x2, y2) in truth:
            box = (max(x1, left) - left, max(y1, top) - top, min(x2, right) - left, min(y2, bottom) - top)
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            # An object cut to less than half of itself is no longer a fair target either way: ignored.
            whole = (box[2] - box[0]) * (box[3] - box[1]) >= 0.5 * (x2 - x1) * (y2 - y1)
            (kept if whole else dropped).append((label, box))
        shifted = [(label, (x1 - left, y1 - top, x2 - left, y2 - top)) for label, (x1, y1, x2, y2) in dropped]
        result.append((np.ascontiguousarray(image[top:bottom, left:right]), kept, shifted))
    return result


def main() -> None:
    photos, missing = available("fit")
    for line in missing:
        print(f"left out: {line}")
    engine = CenterNetEngine.from_settings(Settings())
    engine.setup("cpu")
    # (raw score, true?) of the best detection of each asked class in each variant, and of the others.
    scores: dict[bool, list[float]] = {True: [], False: []}
    labels: dict[bool, list[bool]] = {True: [], False: []}
    objects = found = 0
    for photo in photos:
        truth = [(box.label, box.box) for box in photo.boxes]
        ignored = [(box.label, box.box) for box in photo.ignore]
        asked = {label for label, _ in truth} | set(photo.absent)
        for image, boxes, ignore in variants(load(photo), truth, ignored):
            detections = non_maximum_suppression([d for d in engine.detect(image) if (d.raw_score or 0) >= MIN_RAW and d.label in asked], 0.5)
            unmatched = list(boxes)
            objects += len(boxes)
            seen_classes: set[str] = set()
            for detection in sorted(detections, key=lambda item: item.raw_score or 0.0, reverse=True):
                best = detection.label not in seen_classes
                seen_classes.add(detection.label)
                match = next((entry for entry in unmatched if entry[0] == detection.label and iou(entry[1], detection.box) >= 0.5), None)
                if match is None and any(label == detection.label and iou(box, detection.box) >= 0.5 for label, box in ignore):
                    continue
                if match is not None:
                    unmatched.remove(match)
                    found += 1
                scores[best].append(detection.raw_score)
                labels[best].append(match is not None)
                if match is not None or detection.raw_score >= 0.3:
                    kind = "best" if best else "other"
                    print(f"{photo.id:<48} {detection.label:<14} {kind:<5} raw {detection.raw_score:.3f} {'TRUE' if match else 'false'}")
    print(f"{len(photos)} photos, {objects} objects in all variants, {found} found at a raw score >= {MIN_RAW}")
    for best, name in ((True, "KNOTS_BEST"), (False, "KNOTS")):
        print(f"{name}: {len(scores[best])} detections, {sum(labels[best])} true")
        print(f"{name} =", fit_monotone(scores[best], labels[best], BINS))


if __name__ == "__main__":
    main()
