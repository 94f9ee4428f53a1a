"""The offline COCO detector: a MobileNetV3 CenterNet (from @vladmandic/human), converted to ONNX at install.

Its graph ends in the top 100 centre peaks, as rows x1, y1, x2, y2 (in 512-pixel units), score,
class; non-maximum suppression is left to the caller.

The library it comes from stretches the photo to 512 x 512; here it is letterboxed instead (scaled
to fit, aspect ratio kept, padded with grey), because a stretched subject is misread: on
scikit-image's chelsea the cat scores 0.20 as a cat and 0.48 as a dog when stretched, 0.50 as a
cat and 0.19 as a dog when letterboxed; coffee's cup goes from 0.46 to 0.56, and
stereo_motorcycle's motorcycle from 0.48 to 0.72.

One look at 512 pixels misses two kinds of object: one that fills the frame (a close-up of an apple
or a bowl scores 0.1 where it would score 0.35 to 0.5 at half the size) and a small one (a bird at 4 %
of the photo scores nothing, and 0.6 on a two-thirds crop). So :meth:`CenterNetEngine.detect` looks
several times: the photo as it is, zoomed out twice (on grey, so that the photo takes 1 / 1.7 and
1 / 2.5 of each side of the input: `ZOOM_OUTS`), and in four overlapping tiles of two thirds of each side.
Boxes of one class from different passes that overlap by `MERGE_IOU` are one object, with the box and
raw score of its best pass (two boxes of one pass are left to the caller's non-maximum suppression,
at the request's own `iou_thresh`); a tile's box that touches the tile's inner edge is left out (a cut
object). A box that a class of the same exclusive group (two animals, two vehicles, two foods, two
pieces of tableware) scores confidently and clearly higher is that class's object misread, and left
out. The score calibration (retouch.detection.calibration) is fitted on the merged detections.
Seven passes of about 27 ms each on two cores (0.24 s in all on a 1024-pixel photo).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

from retouch.config import Settings
from retouch.detection.boxes import Detection, iou
from retouch.detection.calibration import calibrate
from retouch.detection.vocabulary import COCO_CLASSES, EXCLUSIVE_GROUP
from retouch.engines.device import onnx_session
from retouch.weights.store import locate

logger = logging.getLogger(__name__)

INPUT_SIDE = 512
DETECTIONS_OUTPUT = "tower_0/detections"
# The grey of the letterbox padding: neutral, and what such detectors are usually trained with.
PAD_VALUE = 114
# The zoomed-out passes: the photo takes 1 / zoom of each side of the input. A second, smaller look
# finds what fills the frame and the first still misreads (on the fitting photos' calibration and the
# checking photos: a close-up puppy 0.41 -> 0.70, potted plants 0.30 -> 0.38 and 0.25 -> 0.37).
ZOOM_OUTS = (1.7, 2.5)
TILE_SHARE = 2 / 3
MERGE_IOU = 0.5
# A box of one class is a misreading when a class of its exclusive group scores at least RIVAL_FLOOR (as the
# best detection of its class, a real object four times in five) and RIVAL_MARGIN more on the same box.
RIVAL_FLOOR = 0.6
RIVAL_MARGIN = 0.1
# A tile's box this close (in the network's input pixels) to an inner edge of its tile is a cut object.
TILE_EDGE = 2.0


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

    def _rows(self, image: np.ndarray, left: float = 0.0, top: float = 0.0, enlarge: float = 1.0) -> tuple[np.ndarray, float]:
        """The network's rows for ``image``, boxes in the pixels of the photo it was cut from at (left, top) and
        shrunk ``enlarge`` times from; and the photo's pixels per input pixel."""
        rows, scale = self.raw_detections(image)
        rows = rows[np.isfinite(rows).all(axis=1)].astype(np.float64)
        rows[:, 0:4] *= enlarge / scale
        rows[:, [0, 2]] += left
        rows[:, [1, 3]] += top
        return rows, enlarge / scale

    def _pass_rows(self, image: np.ndarray) -> list[np.ndarray]:
        """Each pass's rows (x1, y1, x2, y2, raw score, class) in image pixels, not yet merged."""
        height, width = image.shape[:2]
        passes = [self._rows(image)[0]]
        for zoom_out in ZOOM_OUTS:
            # Zoomed out: the photo shrunk to 1 / zoom_out of the input first (never a canvas of the full photo's size).
            shrink = min(1.0, INPUT_SIDE / (zoom_out * max(height, width)))
            small_width, small_height = max(1, round(width * shrink)), max(1, round(height * shrink))
            small = cv2.resize(np.ascontiguousarray(image[..., :3]), (small_width, small_height), interpolation=cv2.INTER_AREA)
            canvas_height, canvas_width = round(small_height * zoom_out), round(small_width * zoom_out)
            top, left = (canvas_height - small_height) // 2, (canvas_width - small_width) // 2
            canvas = np.full((canvas_height, canvas_width, 3), PAD_VALUE, np.uint8)
            canvas[top : top + small_height, left : left + small_width] = small
            zoomed, _ = self._rows(canvas, enlarge=width / small_width)
            zoomed[:, [0, 2]] -= left * width / small_width
            zoomed[:, [1, 3]] -= top * height / small_height
            passes.append(zoomed)
        tile_height, tile_width = max(1, round(height * TILE_SHARE)), max(1, round(width * TILE_SHARE))
        for top in (0, height - tile_height):
            for left in (0, width - tile_width):
                rows, per_input_pixel = self._rows(np.ascontiguousarray(image[top : top + tile_height, left : left + tile_width]), left, top)
                edge = TILE_EDGE * per_input_pixel
                cut = np.zeros(len(rows), bool)
                # Only the edges inside the photo cut objects; the photo's own edges are where they end.
                if left > 0:
                    cut |= rows[:, 0] <= left + edge
                if left + tile_width < width:
                    cut |= rows[:, 2] >= left + tile_width - edge
                if top > 0:
                    cut |= rows[:, 1] <= top + edge
                if top + tile_height < height:
                    cut |= rows[:, 3] >= top + tile_height - edge
                passes.append(rows[~cut])
        return passes

    @staticmethod
    def _misread(rows: np.ndarray, rivals: np.ndarray) -> np.ndarray:
        """Which rows are another reading of an object that a class of the same exclusive group (two animals,
        two vehicles) scores confidently on the same box: three puppies that one pass reads as sheep at 0.54
        and every pass as dogs at up to 0.83."""
        misread = np.zeros(len(rows), bool)
        for index, (x1, y1, x2, y2, raw_score, class_value, _) in enumerate(rows):
            group = EXCLUSIVE_GROUP.get(int(class_value))
            if group is None:
                continue
            for rx1, ry1, rx2, ry2, rival_score, rival_class, _ in rivals:
                if (
                    int(rival_class) != int(class_value)
                    and EXCLUSIVE_GROUP[int(rival_class)] == group
                    and rival_score >= raw_score + RIVAL_MARGIN
                    and iou((x1, y1, x2, y2), (rx1, ry1, rx2, ry2)) >= MERGE_IOU
                ):
                    misread[index] = True
                    break
        return misread

    def detect(self, image: np.ndarray, class_ids: set[int] | None = None, min_score: float = 0.0) -> list[Detection]:
        """Detections in image pixels with calibrated scores, of the given classes, scoring at least `min_score`:
        the passes' boxes merged (see the module's notes)."""
        height, width = image.shape[:2]
        passes = self._pass_rows(image)
        rows = np.concatenate([np.column_stack([rows, np.full(len(rows), number)]) for number, rows in enumerate(passes)])
        rows = rows[(rows[:, 5] >= 0) & (rows[:, 5] < len(COCO_CLASSES))]
        rows[:, [0, 2]] = np.clip(rows[:, [0, 2]], 0, width)
        rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, height)
        rows = rows[((rows[:, 2] - rows[:, 0]) >= 1) & ((rows[:, 3] - rows[:, 1]) >= 1)]
        classes = rows[:, 5].astype(np.int64)
        # Any class's confident boxes, to tell a misreading of the same object (see _misread).
        rivals = rows[(rows[:, 4] >= RIVAL_FLOOR) & np.isin(classes, list(EXCLUSIVE_GROUP))]
        if class_ids is not None:
            rows = rows[np.isin(classes, list(class_ids))]
        rows = rows[~self._misread(rows, rivals)]
        found: list[Detection] = []
        looks: list[set[int]] = []
        for x1, y1, x2, y2, raw_score, class_value, number in rows[np.argsort(-rows[:, 4], kind="stable")]:
            class_id, look = int(class_value), int(number)
            box = (float(x1), float(y1), float(x2), float(y2))
            # Another pass's sight of an object already found; two objects of one pass are left to the caller's NMS.
            same = next(
                (
                    index
                    for index, kept in enumerate(found)
                    if kept.class_id == class_id and look not in looks[index] and iou(kept.box, box) >= MERGE_IOU
                ),
                None,
            )
            if same is not None:
                looks[same].add(look)
                continue
            # Sorted by raw score: the first of its class is the best one (calibrated by its own map).
            best = all(kept.class_id != class_id for kept in found)
            score = calibrate(float(raw_score), best=best)
            found.append(Detection(box=box, score=score, label=COCO_CLASSES[class_id], class_id=class_id, raw_score=float(raw_score)))
            looks.append({look})
        return [detection for detection in found if detection.score >= min_score]
