"""The offline text-to-mask engine: COCO CenterNet boxes, each refined to its object's shape by U²-Net.

For each kept box, a crop around it (with a margin) goes through U²-Net, the salient shape inside
the box is pasted back, and the union of the shapes is the mask. A box whose shape U²-Net cannot
find (a small or low-contrast object fills little of its box) keeps its box, so that a detected
object is never dropped from the mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from retouch.detection.boxes import Detection, TextMaskResult, expand_box, non_maximum_suppression
from retouch.detection.calibration import calibrate
from retouch.detection.colours import has_colour
from retouch.detection.vocabulary import parse_prompt
from retouch.engines.centernet import CenterNetEngine
from retouch.engines.u2net import U2NetEngine

# A crop is the box plus this share of its size on each side: U²-Net needs some background around
# the object to tell it apart.
CROP_MARGIN = 0.15
# The shape may reach a little past the box (boxes are tight and sometimes clip a paw or a handle).
SHAPE_MARGIN = 0.04
# Below this share of its box, the refined shape is not trusted and the box itself is used.
MIN_SHAPE_SHARE = 0.12


def _rescored(kept: list[tuple[Detection, np.ndarray]], min_score: float) -> list[tuple[Detection, np.ndarray]]:
    """The detections of the right colour calibrated again, the best of each class by its own map, then thresholded."""
    rescored = []
    seen: set[int] = set()
    for detection, shape in sorted(kept, key=lambda pair: pair[0].raw_score or 0.0, reverse=True):
        score = calibrate(detection.raw_score or 0.0, best=detection.class_id not in seen)
        seen.add(detection.class_id)
        if score >= min_score:
            rescored.append((replace(detection, score=score), shape))
    return sorted(rescored, key=lambda pair: pair[0].score, reverse=True)


class CocoTextMaskEngine:
    """`name` is what metrics.engine reports."""

    name = "centernet+u2net"

    def __init__(self, detector: CenterNetEngine, refiner: U2NetEngine) -> None:
        self.detector = detector
        self.refiner = refiner

    def setup(self, device: str) -> None:
        self.detector.setup(device)
        self.refiner.setup(device)

    def refine(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The object's mask (uint8, 255 inside) at full image size, from the box."""
        height, width = image.shape[:2]
        left, top, right, bottom = expand_box(box, CROP_MARGIN, width, height)
        saliency = self.refiner.predict(image[top:bottom, left:right])
        shape_left, shape_top, shape_right, shape_bottom = expand_box(box, SHAPE_MARGIN, width, height)
        limit = np.zeros_like(saliency)
        limit[shape_top - top : shape_bottom - top, shape_left - left : shape_right - left] = 255
        shape = np.where((saliency >= 128) & (limit > 0), 255, 0).astype(np.uint8)
        box_left, box_top, box_right, box_bottom = (int(round(value)) for value in box)
        box_area = max(1, (box_right - box_left) * (box_bottom - box_top))
        mask = np.zeros((height, width), np.uint8)
        if np.count_nonzero(shape) < MIN_SHAPE_SHARE * box_area:
            mask[box_top:box_bottom, box_left:box_right] = 255
        else:
            mask[top:bottom, left:right] = shape
        return mask

    @property
    def model_files(self) -> tuple[str, ...]:
        """The weight files this engine runs (reported as metrics.model): the detector's, then the refiner's."""
        return (self.detector.model_path.name, *self.refiner.model_files)

    def segment(
        self, image: np.ndarray, prompt: str, min_score: float, iou_threshold: float, on_step: Callable[[float], None] | None = None
    ) -> TextMaskResult:
        """Everything the prompt names, scoring at least `min_score` (calibrated), after NMS at `iou_threshold`.
        ``on_step(fraction)`` is called after the detection and after each box's refinement."""
        queries = parse_prompt(prompt)
        class_ids = {class_id for query in queries for class_id in query.class_ids}
        coloured = any(query.colours for query in queries)
        # With a colour word, the best detection of the named class is the best one of that colour ("white
        # horse" beside a brown horse that scores higher): its own map applies after the colour is judged, so
        # every box that could reach the threshold as the best one is looked at first.
        found = self.detector.detect(image, class_ids, 0.0 if coloured else min_score)
        if coloured:
            found = [detection for detection in found if calibrate(detection.raw_score or 0.0, best=True) >= min_score]
        detections = non_maximum_suppression(found, iou_threshold)
        kept: list[tuple[Detection, np.ndarray]] = []
        if on_step is not None:
            on_step(0.2)
        for index, detection in enumerate(detections):
            shape = self.refine(image, detection.box)
            if on_step is not None:
                on_step(0.2 + 0.8 * (index + 1) / len(detections))
            matching = [query for query in queries if detection.class_id in query.class_ids]
            person = detection.label == "person"
            if not any(all(has_colour(image, shape, colour, person=person) for colour in query.colours) for query in matching):
                continue
            kept.append((detection, shape))
        if coloured:
            kept = _rescored(kept, min_score)
        union = np.zeros(image.shape[:2], np.uint8)
        for _, shape in kept:
            np.maximum(union, shape, out=union)
        return TextMaskResult(mask=union, detections=[detection for detection, _ in kept])
