"""Detections and the box operations the text-to-mask slugs need: IoU, non-maximum suppression, margins."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Detection:
    """A box in image pixels (x1, y1, x2, y2), its calibrated confidence, raw score, class and label."""

    box: tuple[float, float, float, float]
    score: float
    label: str
    class_id: int = -1
    raw_score: float | None = None

    def as_metrics(self) -> dict[str, object]:
        return {"box": [round(value, 1) for value in self.box], "label": self.label, "score": round(self.score, 4)}

    def scaled(self, scale_x: float, scale_y: float) -> Detection:
        x1, y1, x2, y2 = self.box
        return replace(self, box=(x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y))


@dataclass
class TextMaskResult:
    """What a text-to-mask engine returns: the union mask (uint8, 255 = selected) and the kept detections."""

    mask: np.ndarray
    detections: list[Detection]


def iou(first: tuple[float, ...], second: tuple[float, ...]) -> float:
    x1, y1 = max(first[0], second[0]), max(first[1], second[1])
    x2, y2 = min(first[2], second[2]), min(first[3], second[3])
    intersection = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area_first = max(0.0, first[2] - first[0]) * max(0.0, first[3] - first[1])
    area_second = max(0.0, second[2] - second[0]) * max(0.0, second[3] - second[1])
    union = area_first + area_second - intersection
    return intersection / union if union > 0 else 0.0


def non_maximum_suppression(detections: list[Detection], iou_threshold: float) -> list[Detection]:
    """Greedy NMS per label: a box is dropped when it overlaps a higher-scoring box of its label by more than the threshold."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda item: item.score, reverse=True):
        if all(other.label != detection.label or iou(other.box, detection.box) <= iou_threshold for other in kept):
            kept.append(detection)
    return kept


def expand_box(box: tuple[float, ...], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box grown by `margin` of its size on each side, as integer pixels clipped to the image."""
    x1, y1, x2, y2 = box
    grow_x, grow_y = (x2 - x1) * margin, (y2 - y1) * margin
    left = int(np.clip(np.floor(x1 - grow_x), 0, width - 1))
    top = int(np.clip(np.floor(y1 - grow_y), 0, height - 1))
    right = int(np.clip(np.ceil(x2 + grow_x), left + 1, width))
    bottom = int(np.clip(np.ceil(y2 + grow_y), top + 1, height))
    return left, top, right, bottom
