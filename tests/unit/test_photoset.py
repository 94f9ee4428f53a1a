"""The labelled photo set's files (bench/photos/*.json): well-formed, split by scene, and, for the photos
the test dependencies ship, the very files the labels were made on."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from photoset import all_photos, load, photos

from retouch.detection.colours import COLOUR_NAMES
from retouch.detection.vocabulary import COCO_CLASSES

TEXTURES = {"grass", "foliage", "gravel", "water", "sand", "fabric", "sky with clouds", "sky", "wood", "stone", "fur", "snow"}


def test_every_label_is_well_formed() -> None:
    every = all_photos()
    assert len({photo.id for photo in every}) == len(every)
    for photo in every:
        assert photo.split in ("fit", "check") and len(photo.sha256) == 64 and photo.licence
        assert photo.origin["kind"] in ("pypi", "pypi-sdist", "debian", "npm") and photo.origin["path"]
        for box in (*photo.boxes, *photo.ignore, *(texture for texture in photo.textures)):
            x1, y1, x2, y2 = box.box
            assert 0 <= x1 < x2 <= photo.width and 0 <= y1 < y2 <= photo.height, f"{photo.id}: {box} is not inside the photo"
        for box in photo.boxes:
            assert box.label in COCO_CLASSES and (box.colour is None or box.colour in COLOUR_NAMES), f"{photo.id}: {box}"
        assert not set(photo.absent) & {box.label for box in (*photo.boxes, *photo.ignore)}, f"{photo.id}: an absent class is boxed"
        assert all(label in COCO_CLASSES for label in photo.absent)
        assert all(texture.kind in TEXTURES or texture.kind.startswith("other: ") for texture in photo.textures)


def test_the_set_is_as_large_as_asked_and_split_by_scene() -> None:
    every = all_photos()
    scenes = {photo.scene for photo in every}
    assert len(scenes) >= 30 and sum(len(photo.boxes) for photo in every) >= 100
    split_of: dict[str, set[str]] = {}
    for photo in every:
        split_of.setdefault(photo.scene, set()).add(photo.split)
    assert all(len(splits) == 1 for splits in split_of.values()), "a scene's photos are all on one side"
    counts = Counter(photo.split for photo in every)
    assert min(counts.values()) >= 0.35 * len(every)
    assert {photo.id for photo in photos("fit")}.isdisjoint(photo.id for photo in photos("check"))


@pytest.mark.parametrize("package", ["scikit-image", "scikit-learn", "matplotlib"])
def test_the_photos_of_the_test_dependencies_are_the_labelled_files(package: str) -> None:
    shipped = [photo for photo in all_photos() if photo.origin["kind"] == "pypi" and photo.origin["package"] == package]
    assert shipped
    for photo in shipped:
        image = load(photo)  # checks the sha256 and the size the label was made on
        assert image.shape == (photo.height, photo.width, 3)
