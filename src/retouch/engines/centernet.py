"""The offline COCO detector: a MobileNetV3 CenterNet (from @vladmandic/human), converted to ONNX at install.

Its graph ends in the top 100 centre peaks, as rows x1, y1, x2, y2 (in 512-pixel units), score,
class; non-maximum suppression is left to the caller.

The library it comes from stretches the photo to 512 x 512; here it is letterboxed instead (scaled
to fit, aspect ratio kept, padded with grey), because a stretched subject is misread: on
scikit-image's chelsea the cat scores 0.20 as a cat and 0.48 as a dog when stretched, 0.50 as a
cat and 0.19 as a dog when letterboxed; coffee's cup goes from 0.46 to 0.56, and
stereo_motorcycle's motorcycle from 0.48 to 0.72.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

from retouch.config import Settings
from retouch.detection.boxes import Detection
from retouch.detection.calibration import calibrate
from retouch.detection.vocabulary import COCO_CLASSES
from retouch.engines.device import onnx_session
from retouch.weights.store import locate

logger = logging.getLogger(__name__)

INPUT_SIDE = 512
DETECTIONS_OUTPUT = "tower_0/detections"
# The grey of the letterbox padding: neutral, and what such detectors are usually trained with.
PAD_VALUE = 114


class CenterNetEngine:
    name = "centernet"

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._session: onnxruntime.InferenceSession | None = None
        self._input_name = ""
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> CenterNetEngine:
        return cls(locate("centernet", settings))

    def setup(self, device: str) -> None:
        with self._lock:
            if self._session is not None:
                return
            self._session = onnx_session(self.model_path, device, "run `retouch models install --force centernet`")
            self._input_name = self._session.get_inputs()[0].name

    def raw_detections(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The network's 100 rows (x1, y1, x2, y2, score, class) for an RGB(A) uint8 image, boxes in the
        letterboxed 512 x 512 input's pixels, and the scale from image pixels to those."""
        if self._session is None:
            raise RuntimeError("CenterNetEngine.setup() must be called before detect()")
        height, width = image.shape[:2]
        scale = INPUT_SIDE / max(height, width)
        fitted_width, fitted_height = max(1, round(width * scale)), max(1, round(height * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        fitted = cv2.resize(np.ascontiguousarray(image[..., :3]), (fitted_width, fitted_height), interpolation=interpolation)
        batch = np.full((1, INPUT_SIDE, INPUT_SIDE, 3), PAD_VALUE, np.float32)
        batch[0, :fitted_height, :fitted_width] = fitted
        (rows,) = self._session.run([DETECTIONS_OUTPUT], {self._input_name: batch})
        return rows[0], scale

    def detect(self, image: np.ndarray, class_ids: set[int] | None = None, min_score: float = 0.0) -> list[Detection]:
        """Detections in image pixels with calibrated scores, of the given classes, scoring at least `min_score`."""
        height, width = image.shape[:2]
        rows, scale = self.raw_detections(image)
        found = []
        for x1, y1, x2, y2, raw_score, class_value in rows:
            if not np.isfinite(class_value):
                continue
            class_id = int(class_value)
            if class_id < 0 or class_id >= len(COCO_CLASSES) or (class_ids is not None and class_id not in class_ids):
                continue
            score = calibrate(float(raw_score))
            if score < min_score:
                continue
            box = (
                float(np.clip(x1 / scale, 0, width)),
                float(np.clip(y1 / scale, 0, height)),
                float(np.clip(x2 / scale, 0, width)),
                float(np.clip(y2 / scale, 0, height)),
            )
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            found.append(Detection(box=box, score=score, label=COCO_CLASSES[class_id], class_id=class_id, raw_score=float(raw_score)))
        return found
