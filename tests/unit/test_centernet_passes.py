"""The detector's passes (as is, zoomed out, four tiles) mapped back to the photo and merged, on a network stand-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retouch.detection.calibration import calibrate
from retouch.engines import centernet
from retouch.engines.centernet import CenterNetEngine

PERSON, DOG = 0, 16
HEIGHT, WIDTH = 300, 600


class Network:
    """Answers each look with the rows a real network would give for what it sees: the photo holds a person
    at (100, 50, 200, 250) and a dog at (380, 120, 560, 280); the rows are in the looked-at image's pixels
    (scale 1). The zoomed-out look scores the person higher, a tile cuts the dog at its inner edge."""

    def __init__(self) -> None:
        self.looks: list[tuple[int, int]] = []

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        height, width = image.shape[:2]
        self.looks.append((height, width))
        if (height, width) == (HEIGHT, WIDTH):
            rows = [[100, 50, 200, 250, 0.30, PERSON], [380, 120, 560, 280, 0.60, DOG]]
        elif height > HEIGHT:  # zoomed out: the photo sits in the middle of a grey canvas
            top, left = (height - HEIGHT) // 2, (width - WIDTH) // 2
            rows = [[100 + left, 50 + top, 200 + left, 250 + top, 0.55, PERSON], [left + 1, top + 1, left + 5, top + 5, np.nan, 3]]
        else:  # a tile: the photo's red and green channels say where it was cut from (x / 3, y / 3)
            left, top = 3 * int(image[0, 0, 0]), 3 * int(image[0, 0, 1])
            # The dog, in the tile's pixels and cut at its edges: the left tiles end at x = 400, inside the dog.
            x1, y1, x2, y2 = max(380 - left, 0), max(120 - top, 0), min(560 - left, width), min(280 - top, height)
            rows = [[x1, y1, x2, y2, 0.90 if x2 < 560 - left else 0.58, DOG]]
        return np.array(rows, dtype=np.float32).reshape(-1, 6), 1.0


def photo() -> np.ndarray:
    """A photo whose red and green channels tell a tile where it was cut from: x / 3 and y / 3."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[..., 0] = (np.arange(WIDTH) // 3).astype(np.uint8)[np.newaxis, :]
    image[..., 1] = (np.arange(HEIGHT) // 3).astype(np.uint8)[:, np.newaxis]
    return image


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> tuple[CenterNetEngine, Network]:
    network = Network()
    detector = CenterNetEngine(Path("unused.onnx"))
    monkeypatch.setattr(detector, "raw_detections", network)
    return detector, network


def test_every_pass_looks_and_its_boxes_come_back_in_photo_pixels(engine: tuple[CenterNetEngine, Network]) -> None:
    detector, network = engine
    detections = detector.detect(photo())
    assert network.looks[0] == (HEIGHT, WIDTH)
    assert network.looks[1] == (round(HEIGHT * centernet.ZOOM_OUT), round(WIDTH * centernet.ZOOM_OUT))
    assert network.looks[2:] == [(200, 400)] * 4
    by_label = {detection.label: detection for detection in detections}
    assert sorted(detection.label for detection in detections) == ["dog", "person"], "a NaN row is skipped, each object is one detection"
    # The person's best look was the zoomed-out one: its raw score, its box mapped back to the photo.
    person = by_label["person"]
    assert person.raw_score == pytest.approx(0.55) and person.box == pytest.approx((100, 50, 200, 250), abs=1)
    assert person.score == pytest.approx(calibrate(0.55, best=True))
    # The tiles that cut the dog at their inner edge do not count; the right tiles' whole dog merges with the photo's.
    dog = by_label["dog"]
    assert dog.raw_score == pytest.approx(0.60) and dog.box == pytest.approx((380, 120, 560, 280))


def test_only_the_asked_classes_and_scores_come_back(engine: tuple[CenterNetEngine, Network]) -> None:
    detector, _ = engine
    image = photo()
    assert [detection.label for detection in detector.detect(image, class_ids={DOG})] == ["dog"]
    assert [detection.label for detection in detector.detect(image, min_score=calibrate(0.58, best=True))] == ["dog"]
