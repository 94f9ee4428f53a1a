"""The open-vocabulary engine (OWLv2 + SAM) on tiny random-weight models built here from small configs.

No download: the models are made from configs with a fixed seed and saved with ``save_pretrained``
next to processor files written like the hub repositories' own (a tiny CLIP vocabulary and merges,
``preprocessor_config.json`` for a 64-pixel model). The engine loads them as it loads pulled models
and runs transformers' real pre- and post-processing. Random weights say nothing about what is
found, so where a test needs known boxes, a forward hook replaces OWLv2's output by chosen boxes
and scores in the model's own (padded-square, normalised) coordinates.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import PATCH, QUERIES, SEED, SIDE, build_owlv2, build_sam

from retouch.config import Settings
from retouch.detection.boxes import iou
from retouch.detection.vocabulary import split_phrases as prompt_phrases
from retouch.engines.open_vocabulary import MAX_CANDIDATES, OpenVocabularyEngine
from retouch.errors import InvalidInput, ServiceUnavailable, WeightsMissing
from retouch.weights import WEIGHTS, hub, weight_path

@pytest.fixture(scope="module")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-open-vocabulary")
    build_owlv2(root / "owlv2")
    build_sam(root / "sam")
    return root / "owlv2", root / "sam"


@pytest.fixture(scope="module")
def engine(model_folders: tuple[Path, Path]) -> OpenVocabularyEngine:
    engine = OpenVocabularyEngine(*model_folders)
    engine.setup("cpu")
    return engine


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A wide (not square) image, so that OWLv2's padding to a square matters."""
    rng = np.random.default_rng(SEED)
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    image[10:30, 20:50] = (240, 240, 240)
    return image


class Calls:
    """Counts a module's forward passes and keeps the keyword inputs of each."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.inputs: list[dict[str, object]] = []
        self._handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        self.inputs.append(dict(kwargs))

    @property
    def count(self) -> int:
        return len(self.inputs)

    def remove(self) -> None:
        self._handle.remove()


def _box_centre(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


class FixedDetections:
    """A forward hook that replaces OWLv2's boxes and logits by chosen ones (normalised to the padded square)."""

    def __init__(self, module: torch.nn.Module, planted: list[tuple[tuple[float, float, float, float], int, float]]) -> None:
        self.planted = planted
        self._handle = module.register_forward_hook(self._replace)

    def _replace(self, module: torch.nn.Module, args: tuple[object, ...], output: object) -> object:
        logits = torch.full_like(output.logits, -10.0)
        boxes = torch.tensor([[0.5, 0.5, 0.1, 0.1]] * output.pred_boxes.shape[1])
        for query, (corners, phrase, logit) in enumerate(self.planted):
            boxes[query] = torch.tensor(_box_centre(*corners))
            logits[0, query, phrase] = logit
        output["logits"] = logits
        output["pred_boxes"] = boxes[None].to(output.pred_boxes)
        return output

    def remove(self) -> None:
        self._handle.remove()


def test_prompt_phrases_split_like_the_offline_vocabulary() -> None:
    assert prompt_phrases("White horse and a dog") == ["white horse", "a dog"]
    phrases = prompt_phrases("dog, cat;  red   car & bus or tree with leaves + sky")
    assert phrases == ["dog", "cat", "red car", "bus", "tree", "leaves", "sky"]
    assert prompt_phrases("cat and cat, CAT") == ["cat"]
    assert prompt_phrases(" , and ") == []


def test_mask_and_detections_through_the_real_processing(engine: OpenVocabularyEngine, photo: np.ndarray) -> None:
    result = engine.segment(photo, "the dog, a cat and white horse", 0.0, 0.5)
    assert result.mask.shape == photo.shape[:2]
    assert result.mask.dtype == np.uint8
    assert set(np.unique(result.mask)) <= {0, 255}
    assert 0 < len(result.detections) <= min(QUERIES, MAX_CANDIDATES)
    height, width = photo.shape[:2]
    for detection in result.detections:
        x1, y1, x2, y2 = detection.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert detection.label in {"the dog", "a cat", "white horse"}
        assert 0.0 <= detection.score <= 1.0
    scores = [detection.score for detection in result.detections]
    assert scores == sorted(scores, reverse=True)


def test_rgba_input_and_min_score_one_finds_nothing(engine: OpenVocabularyEngine, photo: np.ndarray) -> None:
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    segmenter_calls = Calls(engine.segmenter)
    try:
        result = engine.segment(rgba, "dog and cat", 1.0, 0.5)
    finally:
        segmenter_calls.remove()
    assert result.detections == []
    assert result.mask.shape == photo.shape[:2] and not result.mask.any()
    assert segmenter_calls.count == 0  # no box, no SAM pass


def test_one_detector_pass_for_all_phrases_and_one_segmenter_pass_for_all_boxes(
    engine: OpenVocabularyEngine, photo: np.ndarray
) -> None:
    detector_calls, segmenter_calls = Calls(engine.detector), Calls(engine.segmenter)
    try:
        result = engine.segment(photo, "dog, cat, horse and the sofa", 0.0, 1.0)
    finally:
        detector_calls.remove()
        segmenter_calls.remove()
    assert detector_calls.count == 1
    input_ids = detector_calls.inputs[0]["input_ids"]
    assert input_ids.shape[0] == 4  # the four phrases, batched as text queries of the one image
    assert detector_calls.inputs[0]["pixel_values"].shape == (1, 3, SIDE, SIDE)
    assert len(result.detections) > 1
    assert segmenter_calls.count == 1
    assert segmenter_calls.inputs[0]["input_boxes"].shape == (1, len(result.detections), 4)


def test_deterministic(engine: OpenVocabularyEngine, photo: np.ndarray) -> None:
    first = engine.segment(photo, "white horse, dog", 0.0, 0.5)
    second = engine.segment(photo, "white horse, dog", 0.0, 0.5)
    assert first.detections == second.detections
    assert np.array_equal(first.mask, second.mask)


def test_boxes_account_for_the_padding_to_a_square_and_nms_is_per_phrase(
    engine: OpenVocabularyEngine, photo: np.ndarray
) -> None:
    # photo is 80 wide, 48 high: OWLv2 sees it padded to 80 x 80 (bottom), its boxes are fractions of 80.
    planted = [
        ((0.0, 0.0, 0.5, 0.5), 0, 5.0),  # "dog" at (0, 0, 40, 40)
        ((0.05, 0.05, 0.55, 0.55), 0, 4.0),  # "dog" again at (4, 4, 44, 44): IoU 0.68 with the first
        ((0.05, 0.05, 0.55, 0.55), 1, 3.0),  # the same box for "cat": another phrase, kept
        ((0.4, 0.8, 0.6, 0.9), 1, 6.0),  # wholly in the padding (y 64..72 > 48): dropped
        ((0.65, 0.45, 0.85, 0.65), 0, 2.0),  # across the bottom edge: clipped to y2 = 48
    ]
    fixed = FixedDetections(engine.detector, planted)
    try:
        result = engine.segment(photo, "dog and cat", 0.5, 0.5)
        without_nms = engine.segment(photo, "dog and cat", 0.5, 1.0)
        stricter = engine.segment(photo, "dog and cat", float(torch.sigmoid(torch.tensor(4.5))), 0.5)
    finally:
        fixed.remove()
    found = [(detection.label, tuple(round(value, 3) for value in detection.box)) for detection in result.detections]
    assert found == [
        ("dog", (0.0, 0.0, 40.0, 40.0)),
        ("cat", (4.0, 4.0, 44.0, 44.0)),
        ("dog", (52.0, 36.0, 68.0, 48.0)),
    ]
    expected_scores = torch.sigmoid(torch.tensor([5.0, 3.0, 2.0], dtype=torch.float64)).tolist()
    assert [detection.score for detection in result.detections] == pytest.approx(expected_scores)
    assert iou(result.detections[0].box, (4.0, 4.0, 44.0, 44.0)) > 0.5
    assert len(without_nms.detections) == 4
    assert [detection.label for detection in stricter.detections] == ["dog"]
    assert result.mask.shape == photo.shape[:2]


def test_invalid_prompt_and_image(engine: OpenVocabularyEngine, photo: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="names nothing"):
        engine.segment(photo, " , and ", 0.1, 0.5)
    with pytest.raises(InvalidInput, match="uint8"):
        engine.segment(photo.astype(np.float32), "dog", 0.1, 0.5)


def test_segment_before_setup_is_refused(model_folders: tuple[Path, Path], photo: np.ndarray) -> None:
    with pytest.raises(ServiceUnavailable, match="setup"):
        OpenVocabularyEngine(*model_folders).segment(photo, "dog", 0.1, 0.5)


def test_from_settings_needs_pulled_models(tmp_path: Path, model_folders: tuple[Path, Path]) -> None:
    settings = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights")
    with pytest.raises(WeightsMissing, match=r"retouch models pull owlv2 sam"):
        OpenVocabularyEngine.from_settings(settings)
    for name, source in zip(("owlv2", "sam"), model_folders, strict=True):
        target = weight_path(name, settings)
        target.mkdir(parents=True)
        for filename in WEIGHTS[name].source.files:
            (target / filename).write_bytes((source / filename).read_bytes())
        hub.trust_local(name, settings)
    engine = OpenVocabularyEngine.from_settings(settings)
    assert (engine.detector_path, engine.segmenter_path) == (weight_path("owlv2", settings), weight_path("sam", settings))
    engine.setup("cpu")
    assert engine.segment(np.zeros((40, 30, 3), np.uint8), "dog", 1.0, 0.5).detections == []


def test_setup_refuses_a_folder_without_models(tmp_path: Path) -> None:
    (tmp_path / "owlv2").mkdir()
    (tmp_path / "sam").mkdir()
    with pytest.raises(WeightsMissing, match="could not load"):
        OpenVocabularyEngine(tmp_path / "owlv2", tmp_path / "sam").setup("cpu")


def test_importing_the_engine_does_not_import_torch() -> None:
    code = (
        "import sys, retouch, retouch.engines.open_vocabulary, retouch.weights.hub, retouch.models.text_masks\n"
        "heavy = sorted({'torch', 'transformers', 'huggingface_hub'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert completed.returncode == 0, completed.stderr
