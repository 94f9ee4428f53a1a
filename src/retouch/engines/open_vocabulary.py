"""The open-vocabulary text-to-mask engine: OWLv2 boxes for any words, each refined to a mask by SAM.

One request is two forward passes, whatever the prompt names. The prompt is split into phrases
("white horse and a dog" -> "white horse", "a dog") and OWLv2 scores every box it proposes
against all phrases at once (the phrases are the text queries of one image). Boxes scoring at
least ``min_score`` are kept (the best ``MAX_CANDIDATES`` of them), overlapping boxes of the same
phrase are suppressed, and SAM turns all kept boxes into masks in one pass; the mask is their
union. Colour words need no handling of their own: the open model reads "white horse" as a whole.

Pre- and post-processing are transformers' own (``Owlv2Processor``, ``SamProcessor``), so the
models see what they were trained on. OWLv2 pads the image to a square (bottom and right) before
resizing it, so its normalised boxes are fractions of the padded square's side: they are scaled by
the longer image side (passing the square size as the target keeps this right in transformers
versions that scale by the target's height and width as well as in those that use its maximum),
then clipped to the image. Boxes that lie wholly in the padding are dropped.

torch and transformers (the optional ``full`` extra) are imported when the engine is set up, not
when this module is imported, so that a missing extra is reported as such.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from retouch.config import Settings
from retouch.detection.boxes import Detection, TextMaskResult, non_maximum_suppression
from retouch.detection.vocabulary import split_phrases
from retouch.errors import InvalidInput, ServiceUnavailable, WeightsMissing

logger = logging.getLogger(__name__)

DETECTOR = "owlv2"
SEGMENTER = "sam"
# The most boxes that go on to NMS and SAM, best scores first. OWLv2 proposes one box per image
# patch (3600 at 960 pixels); with a low min_score, all of them would reach the (quadratic,
# pure-Python) NMS and SAM's mask decoder.
MAX_CANDIDATES = 100
# SAM's masks are brought to full image size this many at a time, which bounds the memory of the
# float masks post_process_masks interpolates (each is padded side squared, then image-sized).
MASK_CHUNK = 16
FULL_EXTRA_HINT = "install retouch's `full` extra (torch, transformers, huggingface_hub): pip install 'retouch[full]'"


def _import_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as error:
        raise ServiceUnavailable(
            f"the open-vocabulary engine needs torch and transformers ({error}); {FULL_EXTRA_HINT}"
        ) from error
    return torch


def torch_device(requested: str) -> str:
    """The torch device for a configured one: "cuda" when asked (or "auto") and torch has CUDA, else "cpu"."""
    torch = _import_torch()
    if requested not in ("auto", "cpu", "cuda"):
        raise InvalidInput(f"unknown device {requested!r}; use one of: auto, cpu, cuda")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise ServiceUnavailable(
            "device 'cuda' was requested but this torch build has no usable CUDA device; "
            "install a CUDA build of torch, or set RETOUCH_DEVICE=cpu or auto"
        )
    return "cpu"


class OpenVocabularyEngine:
    """`name` is what metrics.engine reports. ``setup`` loads the models; ``segment`` is thread-safe."""

    name = "owlv2+sam"

    def __init__(self, detector_path: Path, segmenter_path: Path) -> None:
        self.detector_path = Path(detector_path)
        self.segmenter_path = Path(segmenter_path)
        self.device = "cpu"
        self.detector: Any = None
        self.detector_processor: Any = None
        self.segmenter: Any = None
        self.segmenter_processor: Any = None
        self._setup_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenVocabularyEngine:
        """The engine on the pulled hub models; WeightsMissing naming `retouch models pull owlv2 sam` otherwise."""
        from retouch.weights.store import install_problem, weight_path

        problems = [(name, install_problem(name, settings)) for name in (DETECTOR, SEGMENTER)]
        missing = [f"{name} {problem} in {weight_path(name, settings)}" for name, problem in problems if problem is not None]
        if missing:
            raise WeightsMissing(
                f"the open-vocabulary engine {cls.name} cannot start: {'; '.join(missing)}; "
                f"run `retouch models pull {DETECTOR} {SEGMENTER}` (or set RETOUCH_TEXT_MASK_ENGINE=coco)"
            )
        return cls(weight_path(DETECTOR, settings), weight_path(SEGMENTER, settings))

    @property
    def ready(self) -> bool:
        return self.detector is not None and self.segmenter is not None

    def setup(self, device: str) -> None:
        """Load both models and their processors from their folders (never from the network), in eval mode."""
        with self._setup_lock:
            if self.ready:
                return
            torch = _import_torch()
            from transformers import Owlv2ForObjectDetection, Owlv2Processor, SamModel, SamProcessor
            from transformers.utils import logging as transformers_logging

            from retouch.engines.device import available_cpu_cores

            self.device = torch_device(device)
            if self.device == "cpu":
                torch.set_num_threads(available_cpu_cores())
            # Weight-loading progress bars are noise in a server's log.
            transformers_logging.disable_progress_bar()
            for path in (self.detector_path, self.segmenter_path):
                if not path.is_dir():
                    raise WeightsMissing(
                        f"the model folder {path} of the {self.name} engine is missing; "
                        f"run `retouch models pull {DETECTOR} {SEGMENTER}`"
                    )
            try:
                detector_processor = Owlv2Processor.from_pretrained(self.detector_path, local_files_only=True)
                detector = Owlv2ForObjectDetection.from_pretrained(self.detector_path, local_files_only=True)
                segmenter_processor = SamProcessor.from_pretrained(self.segmenter_path, local_files_only=True)
                segmenter = SamModel.from_pretrained(self.segmenter_path, local_files_only=True)
            except (OSError, ValueError) as error:
                raise WeightsMissing(
                    f"the {self.name} engine could not load its models from {self.detector_path} and {self.segmenter_path}: "
                    f"{error}; run `retouch models pull --force {DETECTOR} {SEGMENTER}`"
                ) from error
            self.detector_processor = detector_processor
            self.segmenter_processor = segmenter_processor
            self.detector = detector.to(self.device).eval()
            self.segmenter = segmenter.to(self.device).eval()
            logger.info("open-vocabulary engine on %s (%d threads)", self.device, torch.get_num_threads())

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            shape = getattr(image, "shape", None)
            raise InvalidInput(
                f"the open-vocabulary engine needs an H x W x 3 (or 4) uint8 image array, got {type(image).__name__} {shape}"
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise InvalidInput(f"the image is empty: {image.shape}")
        return np.ascontiguousarray(image[:, :, :3])

    def detect(self, image: np.ndarray, phrases: list[str], min_score: float) -> list[Detection]:
        """OWLv2 boxes (image pixels) scoring at least ``min_score`` for any phrase, best first: one forward pass."""
        torch = _import_torch()
        height, width = image.shape[:2]
        inputs = self.detector_processor(text=[phrases], images=image, return_tensors="pt", truncation=True)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        outputs = self.detector(**inputs)
        side = max(height, width)
        # Scores in float64: in float32 the sigmoid is exactly 1.0 for every logit above ~17, which
        # would tie confident boxes (NMS ranks by score) and let min_score=1.0 keep them.
        outputs["logits"] = outputs.logits.double()
        # threshold=-1: keep every box here, so that a score equal to min_score is kept below (the
        # post-processing's own test is strict).
        result = self.detector_processor.image_processor.post_process_object_detection(
            outputs, threshold=-1.0, target_sizes=[(side, side)]
        )[0]
        scores, labels, boxes = result["scores"], result["labels"], result["boxes"]
        keep = scores >= min_score
        scores, labels, boxes = scores[keep], labels[keep], boxes[keep]
        order = torch.sort(scores, descending=True, stable=True).indices[:MAX_CANDIDATES]
        boxes = boxes[order].float()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        detections = []
        for score, label, box in zip(scores[order].tolist(), labels[order].tolist(), boxes.tolist(), strict=True):
            x1, y1, x2, y2 = box
            if x2 - x1 < 1.0 or y2 - y1 < 1.0:
                continue  # in the padding, or a sliver
            detections.append(Detection(box=(x1, y1, x2, y2), score=score, label=phrases[label], raw_score=score))
        return detections

    def masks(self, image: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """The union (uint8, 255 inside) of SAM's masks for the detections' boxes: one forward pass for all boxes."""
        height, width = image.shape[:2]
        union = np.zeros((height, width), np.uint8)
        if not detections:
            return union
        boxes = [[list(detection.box) for detection in detections]]
        inputs = self.segmenter_processor(images=image, input_boxes=boxes, return_tensors="pt")
        outputs = self.segmenter(
            pixel_values=inputs["pixel_values"].to(self.device),
            input_boxes=inputs["input_boxes"].to(self.device),
            multimask_output=False,
        )
        low_res = outputs.pred_masks  # 1 x boxes x 1 x h x w logits
        selected = None
        for start in range(0, low_res.shape[1], MASK_CHUNK):
            chunk = self.segmenter_processor.post_process_masks(
                [low_res[0, start : start + MASK_CHUNK]], inputs["original_sizes"], inputs["reshaped_input_sizes"]
            )[0]
            covered = chunk.reshape(-1, height, width).any(dim=0)
            selected = covered if selected is None else selected | covered
        assert selected is not None
        union[selected.cpu().numpy()] = 255
        return union

    @property
    def model_files(self) -> tuple[str, ...]:
        """The weights this engine runs (reported as metrics.model): the detector's folder, then the segmenter's."""
        return (self.detector_path.name, self.segmenter_path.name)

    def segment(
        self, image: np.ndarray, prompt: str, min_score: float, iou_threshold: float, on_step: Callable[[float], None] | None = None
    ) -> TextMaskResult:
        """What the prompt's phrases name, scoring at least ``min_score``, after NMS per phrase at ``iou_threshold``.
        ``on_step(fraction)`` is called between the detection and the masks."""
        phrases = split_phrases(prompt)
        if not phrases:
            raise InvalidInput(f"prompt={prompt!r} names nothing to look for; give words, e.g. 'white horse, dog'")
        rgb = self._check_image(image)
        if not self.ready:
            raise ServiceUnavailable(f"the {self.name} engine was not set up; call setup(device) first")
        torch = _import_torch()
        with torch.inference_mode():
            detections = non_maximum_suppression(self.detect(rgb, phrases, min_score), iou_threshold)
            if on_step is not None:
                on_step(0.5)
            mask = self.masks(rgb, detections)
        return TextMaskResult(mask=mask, detections=detections)
