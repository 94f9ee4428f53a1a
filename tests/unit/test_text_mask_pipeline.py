"""The offline text-to-mask pipeline on synthetic pictures, with a fake detector and a fake refiner:
filtering, NMS, refinement to shapes, colour attributes, and the box fallback."""

from __future__ import annotations

import numpy as np

from dataclasses import replace

from retouch.detection.boxes import Detection
from retouch.detection.calibration import calibrate
from retouch.detection.vocabulary import COCO_CLASSES
from retouch.engines.coco_text_mask import CocoTextMaskEngine

HORSE = COCO_CLASSES.index("horse")
DOG = COCO_CLASSES.index("dog")
BACKGROUND = (60, 140, 60)


def picture() -> tuple[np.ndarray, dict[str, tuple[int, int, int, int]]]:
    """Green field, a white 'horse' (ellipse) on the left, a brown one on the right, a grey dog."""
    image = np.zeros((120, 240, 3), np.uint8)
    image[:] = BACKGROUND
    rows, cols = np.mgrid[0:120, 0:240]
    white = ((cols - 50) / 30) ** 2 + ((rows - 60) / 20) ** 2 <= 1
    brown = ((cols - 130) / 30) ** 2 + ((rows - 60) / 20) ** 2 <= 1
    image[white] = (240, 240, 235)
    image[brown] = (110, 70, 35)
    image[90:110, 200:230] = (128, 128, 128)
    boxes = {"white": (20, 40, 80, 80), "brown": (100, 40, 160, 80), "dog": (200, 90, 230, 110)}
    return image, boxes


class FakeDetector:
    def __init__(self, detections: list[Detection]) -> None:
        self.detections = detections

    def setup(self, device: str) -> None:
        return None

    def detect(self, image: np.ndarray, class_ids: set[int] | None = None, min_score: float = 0.0) -> list[Detection]:
        return [d for d in self.detections if (class_ids is None or d.class_id in class_ids) and d.score >= min_score]


class CalibratesAsCenterNet(FakeDetector):
    """Scores its raw scores as CenterNetEngine does: the best of each class by its own map."""

    def detect(self, image: np.ndarray, class_ids: set[int] | None = None, min_score: float = 0.0) -> list[Detection]:
        found, seen = [], set()
        for candidate in sorted(self.detections, key=lambda item: item.raw_score, reverse=True):
            if class_ids is not None and candidate.class_id not in class_ids:
                continue
            score = calibrate(candidate.raw_score, best=candidate.class_id not in seen)
            seen.add(candidate.class_id)
            if score >= min_score:
                found.append(replace(candidate, score=score))
        return found


class DifferentFromBackground:
    """Stands for U²-Net: salient = not the field's green."""

    def setup(self, device: str) -> None:
        return None

    def predict(self, crop: np.ndarray) -> np.ndarray:
        different = np.abs(crop[..., :3].astype(int) - BACKGROUND).sum(axis=-1) > 30
        return np.where(different, 255, 0).astype(np.uint8)


class FindsNothing(DifferentFromBackground):
    def predict(self, crop: np.ndarray) -> np.ndarray:
        return np.zeros(crop.shape[:2], np.uint8)


def detection(box, label="horse", class_id=HORSE, score=0.8, raw_score=0.8) -> Detection:
    return Detection(box=tuple(float(v) for v in box), score=score, label=label, class_id=class_id, raw_score=raw_score)


def engine(detections, refiner=None) -> CocoTextMaskEngine:
    return CocoTextMaskEngine(FakeDetector(detections), refiner or DifferentFromBackground())


def test_boxes_are_refined_to_the_objects_shapes():
    image, boxes = picture()
    result = engine([detection(boxes["white"]), detection(boxes["brown"])]).segment(image, "horses", 0.2, 0.5)
    assert len(result.detections) == 2
    horse_pixels = np.abs(image.astype(int) - BACKGROUND).sum(-1) > 30
    horse_pixels[:, 190:] = False
    assert np.array_equal(result.mask == 255, horse_pixels)


def test_colour_attribute_keeps_only_the_white_horse():
    image, boxes = picture()
    result = engine([detection(boxes["white"]), detection(boxes["brown"])]).segment(image, "white horse", 0.2, 0.5)
    assert [d.box for d in result.detections] == [tuple(float(v) for v in boxes["white"])]
    assert result.mask[60, 50] == 255 and result.mask[60, 130] == 0
    brown_only = engine([detection(boxes["white"]), detection(boxes["brown"])]).segment(image, "brown horse", 0.2, 0.5)
    assert brown_only.mask[60, 130] == 255 and brown_only.mask[60, 50] == 0


def test_the_best_horse_of_the_colour_asked_is_calibrated_as_the_best_one():
    """A white horse beside a brown one that scores higher: for "white horse" the white one is the best of
    what was asked for, so the best detection's map calibrates it and it passes inpaint-mask-maker's 0.5."""
    image, boxes = picture()
    white, brown = detection(boxes["white"], raw_score=0.50), detection(boxes["brown"], raw_score=0.60)
    assert calibrate(0.50) < 0.5 <= calibrate(0.50, best=True), "the case must need the best detection's map"
    result = CocoTextMaskEngine(CalibratesAsCenterNet([white, brown]), DifferentFromBackground()).segment(image, "white horse", 0.5, 0.2)
    assert [d.box for d in result.detections] == [white.box]
    assert result.detections[0].score == calibrate(0.50, best=True)
    assert result.mask[60, 50] == 255 and result.mask[60, 130] == 0
    # Without the colour, the brown horse is the best one and the white one stays below 0.5.
    plain = CocoTextMaskEngine(CalibratesAsCenterNet([white, brown]), DifferentFromBackground()).segment(image, "horse", 0.5, 0.2)
    assert [d.box for d in plain.detections] == [brown.box]


def test_only_the_named_classes_and_confident_enough_boxes():
    image, boxes = picture()
    detections = [detection(boxes["white"], score=0.3), detection(boxes["dog"], "dog", DOG, 0.9)]
    assert [d.label for d in engine(detections).segment(image, "dog", 0.2, 0.5).detections] == ["dog"]
    assert [d.label for d in engine(detections).segment(image, "horse and dog", 0.5, 0.5).detections] == ["dog"]
    assert engine(detections).segment(image, "cat", 0.2, 0.5).mask.max() == 0


def test_overlapping_duplicates_are_suppressed():
    image, boxes = picture()
    x1, y1, x2, y2 = boxes["white"]
    duplicate = detection((x1 + 2, y1 + 1, x2 + 2, y2 + 1), score=0.7)
    result = engine([detection(boxes["white"]), duplicate]).segment(image, "horse", 0.2, 0.5)
    assert len(result.detections) == 1 and result.detections[0].score == 0.8


def test_a_box_whose_shape_is_not_found_keeps_the_box():
    image, boxes = picture()
    result = engine([detection(boxes["brown"])], FindsNothing()).segment(image, "horse", 0.2, 0.5)
    x1, y1, x2, y2 = boxes["brown"]
    assert np.all(result.mask[y1:y2, x1:x2] == 255)
    assert result.mask.sum() == 255 * (x2 - x1) * (y2 - y1)
