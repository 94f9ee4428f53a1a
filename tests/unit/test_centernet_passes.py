"""The detector's passes (as is, zoomed out, four tiles) mapped back to the photo and merged, on a network stand-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retouch.detection.calibration import calibrate
from retouch.engines import centernet
from retouch.engines.centernet import INPUT_SIDE, ZOOM_OUTS, CenterNetEngine

PERSON, DOG = 0, 16


class Network:
    """Answers each look with the rows a real network would give for what it sees, in the looked-at image's
    pixels (scale 1 on a photo of up to 512 pixels, else what letterboxing to 512 gives). The photo, of
    ``size`` times (300, 600), holds a person at (100, 50, 200, 250) and a dog at (380, 120, 560, 280) (times
    ``size``). The zoomed-out looks score the person higher; the left tiles end at x = 400 (times ``size``),
    inside the dog, and see it cut there, scoring it higher."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.looks: list[tuple[int, int]] = []

    def object(self, box: tuple[float, ...]) -> list[float]:
        return [value * self.size for value in box]

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        height, width = image.shape[:2]
        self.looks.append((height, width))
        scale = min(1.0, INPUT_SIDE / max(height, width))
        full_height, full_width = 300 * self.size, 600 * self.size
        if (height, width) == (full_height, full_width):
            rows = [[*self.object((100, 50, 200, 250)), 0.30, PERSON], [*self.object((380, 120, 560, 280)), 0.60, DOG]]
        elif int(image[0, 0, 2]) == centernet.PAD_VALUE:  # a zoomed-out canvas: the photo shrunk, in the middle
            photo_ys, photo_xs = np.nonzero(image[..., 2] != centernet.PAD_VALUE)
            left, top = int(photo_xs.min()), int(photo_ys.min())
            small_width, small_height = int(photo_xs.max()) + 1 - left, int(photo_ys.max()) + 1 - top
            x1, y1, x2, y2 = self.object((100, 50, 200, 250))
            fx, fy = small_width / full_width, small_height / full_height
            # The first zoomed-out look scores the person highest, the smaller one a little less.
            score = 0.55 if small_width * ZOOM_OUTS[0] > width - 2 else 0.50
            rows = [[left + x1 * fx, top + y1 * fy, left + x2 * fx, top + y2 * fy, score, PERSON], [1, 1, 5, 5, np.nan, 3]]
        else:  # a tile: the photo's red and green channels say where it was cut from (x / 3 / size, y / 3 / size)
            left, top = 3 * self.size * int(image[0, 0, 0]), 3 * self.size * int(image[0, 0, 1])
            x1, y1, x2, y2 = self.object((380, 120, 560, 280))
            cut = x2 - left > width
            # A cut dog ends 1.5 input pixels before the tile's edge: the network's boxes are not exact.
            right = width - 1.5 / scale if cut else x2 - left
            rows = [[max(x1 - left, 0), max(y1 - top, 0), right, min(y2 - top, height), 0.90 if cut else 0.58, DOG]]
        return (np.array(rows, dtype=np.float64).reshape(-1, 6) * [scale, scale, scale, scale, 1, 1]).astype(np.float32), scale


def photo(size: int) -> np.ndarray:
    """A photo whose red and green channels tell a tile where it was cut from, and whose blue is never the pad grey."""
    image = np.zeros((300 * size, 600 * size, 3), np.uint8)
    image[..., 0] = (np.arange(600 * size) // (3 * size)).astype(np.uint8)[np.newaxis, :]
    image[..., 1] = (np.arange(300 * size) // (3 * size)).astype(np.uint8)[:, np.newaxis]
    return image


def engine(monkeypatch: pytest.MonkeyPatch, size: int) -> tuple[CenterNetEngine, Network]:
    network = Network(size)
    detector = CenterNetEngine(Path("unused.onnx"))
    monkeypatch.setattr(detector, "raw_detections", network)
    return detector, network


@pytest.mark.parametrize("size", [1, 4])
def test_every_pass_looks_and_its_boxes_come_back_in_photo_pixels(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    detector, network = engine(monkeypatch, size)
    detections = detector.detect(photo(size))
    assert network.looks[0] == (300 * size, 600 * size)
    zoomed = network.looks[1 : 1 + len(ZOOM_OUTS)]
    assert all(max(look) <= INPUT_SIDE for look in zoomed), "a zoomed-out canvas is made at the network's size, not the photo's"
    assert network.looks[1 + len(ZOOM_OUTS) :] == [(200 * size, 400 * size)] * 4
    assert sorted(detection.label for detection in detections) == ["dog", "person"], "a NaN row is skipped, each object is one detection"
    by_label = {detection.label: detection for detection in detections}
    # The person's best look was the first zoomed-out one: its raw score, its box mapped back to the photo.
    person = by_label["person"]
    assert person.raw_score == pytest.approx(0.55)
    assert person.box == pytest.approx(tuple(value * size for value in (100, 50, 200, 250)), abs=2 * size)
    assert person.score == pytest.approx(calibrate(0.55, best=True))
    # The left tiles cut the dog at their inner edge (within TILE_EDGE input pixels, whatever the photo's size): left out.
    dog = by_label["dog"]
    assert dog.raw_score == pytest.approx(0.60) and dog.box == pytest.approx(tuple(value * size for value in (380, 120, 560, 280)))


def test_only_the_asked_classes_and_scores_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    detector, _ = engine(monkeypatch, 1)
    assert [detection.label for detection in detector.detect(photo(1), class_ids={DOG})] == ["dog"]
    assert [detection.label for detection in detector.detect(photo(1), min_score=calibrate(0.58, best=True))] == ["dog"]


def test_two_objects_of_one_pass_are_left_to_the_callers_suppression(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two people side by side, overlapping by more than MERGE_IOU, seen in one pass: both come back."""
    detector = CenterNetEngine(Path("unused.onnx"))
    pair = np.array([[100, 50, 200, 250, 0.7, PERSON], [110, 50, 210, 250, 0.6, PERSON]], np.float32)
    monkeypatch.setattr(detector, "raw_detections", lambda image: (pair if image.shape[:2] == (300, 600) else np.empty((0, 6), np.float32), 1.0))
    assert len(detector.detect(photo(1))) == 2


SHEEP, HORSE, TIE = 18, 17, 27


@pytest.mark.parametrize(
    ("rows", "kept"),
    [
        # Puppies read as sheep by one look: a dog scored confidently on the same box.
        ([[100, 50, 200, 250, 0.83, DOG], [102, 52, 200, 250, 0.54, SHEEP]], ["dog"]),
        # A horse beside a sheep reading that no class is sure of: both stay, for the calibration to judge.
        ([[100, 50, 200, 250, 0.46, SHEEP], [100, 50, 200, 250, 0.43, HORSE]], ["horse", "sheep"]),
        # A dog only a little surer than the sheep reading: not clearly another object's misreading.
        ([[100, 50, 200, 250, 0.62, DOG], [100, 50, 200, 250, 0.58, SHEEP]], ["dog", "sheep"]),
        # A tie fills a close-up portrait's box: a person and a tie are not one exclusive group.
        ([[100, 50, 200, 250, 0.83, PERSON], [110, 60, 200, 250, 0.50, TIE]], ["person", "tie"]),
        # A sheep elsewhere in the photo is not a misread dog.
        ([[100, 50, 200, 250, 0.83, DOG], [400, 50, 500, 250, 0.54, SHEEP]], ["dog", "sheep"]),
    ],
)
def test_a_box_another_animal_scores_surely_is_that_animal_misread(monkeypatch: pytest.MonkeyPatch, rows, kept) -> None:
    detector = CenterNetEngine(Path("unused.onnx"))
    answer = np.array(rows, np.float32)
    monkeypatch.setattr(detector, "raw_detections", lambda image: (answer if image.shape[:2] == (300, 600) else np.empty((0, 6), np.float32), 1.0))
    assert sorted(detection.label for detection in detector.detect(photo(1))) == kept
    # Asking for the sheep alone changes nothing: the dog's box still tells.
    asked = {int(row[5]) for row in rows if int(row[5]) != DOG}
    assert sorted(detection.label for detection in detector.detect(photo(1), class_ids=asked)) == [label for label in kept if label != "dog"]
