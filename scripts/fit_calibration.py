"""Fit the calibration of CenterNet's raw scores on the labelled photos of calibration_data.py.

    .venv/bin/pip install matplotlib   # for its sample photo grace_hopper.jpg
    .venv/bin/python scripts/fit_calibration.py

Prints every detection with its raw score and label, then the knots to paste into KNOTS.
"""

from __future__ import annotations

import numpy as np
from matplotlib import cbook
from PIL import Image
from skimage import data

from retouch.config import Settings
from retouch.detection.boxes import iou, non_maximum_suppression
from retouch.detection.calibration import fit_monotone
from retouch.detection.calibration_data import GROUND_TRUTH
from retouch.engines.centernet import CenterNetEngine

MIN_RAW = 0.05
BINS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.01]


def photo(name: str) -> np.ndarray:
    if name == "grace_hopper":
        return np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    image = data.stereo_motorcycle()[0] if name == "stereo_motorcycle" else getattr(data, name)()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]


def variants(image: np.ndarray, truth: list) -> list[tuple[np.ndarray, list]]:
    """The photo, mirrored, and two crops (left 70 % and bottom-right 70 %), with their ground truth."""
    height, width = image.shape[:2]
    mirrored = [(label, (width - x2, y1, width - x1, y2)) for label, (x1, y1, x2, y2) in truth]
    result = [(image, truth), (np.ascontiguousarray(image[:, ::-1]), mirrored)]
    for left, top in ((0, 0), (int(width * 0.3), int(height * 0.3))):
        right, bottom = left + int(width * 0.7), top + int(height * 0.7)
        cropped = []
        for label, (x1, y1, x2, y2) in truth:
            box = (max(x1, left) - left, max(y1, top) - top, min(x2, right) - left, min(y2, bottom) - top)
            # An object cut to less than half of itself is no longer a fair target either way: left out.
            if box[2] > box[0] and box[3] > box[1] and (box[2] - box[0]) * (box[3] - box[1]) >= 0.5 * (x2 - x1) * (y2 - y1):
                cropped.append((label, box))
        result.append((np.ascontiguousarray(image[top:bottom, left:right]), cropped))
    return result


def main() -> None:
    engine = CenterNetEngine.from_settings(Settings())
    engine.setup("cpu")
    scores, labels = [], []
    for name, truth in GROUND_TRUTH.items():
        for image, boxes in variants(photo(name), truth):
            # As the slugs see them: after non-maximum suppression; then COCO-style matching, where each
            # object is matched once, by its best-scoring detection, and duplicates count as false.
            detections = non_maximum_suppression([d for d in engine.detect(image) if (d.raw_score or 0) >= MIN_RAW], 0.5)
            unmatched = list(boxes)
            for detection in sorted(detections, key=lambda item: item.score, reverse=True):
                match = next((entry for entry in unmatched if entry[0] == detection.label and iou(entry[1], detection.box) >= 0.5), None)
                true = match is not None
                if match is not None:
                    unmatched.remove(match)
                scores.append(detection.raw_score)
                labels.append(true)
                if true or detection.raw_score >= 0.2:
                    print(f"{name:<18} {detection.label:<14} raw {detection.raw_score:.3f} {'TRUE' if true else 'false'}")
    print(f"{len(scores)} detections, {sum(labels)} true")
    knots = fit_monotone(scores, labels, BINS)
    print("KNOTS =", knots)


if __name__ == "__main__":
    main()
