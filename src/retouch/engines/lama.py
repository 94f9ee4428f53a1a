"""LaMa (big-lama) inpainting on onnxruntime, for the widely used ONNX exports.

The exports differ, so the layout is read from the model rather than assumed:
- two inputs, an image [1, 3, H, W] (RGB 0..1) and a mask [1, 1, H, W] (1 = hole), or one input
  [1, 4, H, W] holding the image with its hole zeroed and the mask as the fourth channel;
- a fixed input size (512 x 512 exports: the crop is resized to it and the fill back) or a
  dynamic one (the crop is padded, by reflection, to a multiple of `PAD_MULTIPLE`);
- an output [1, 3, H, W] in 0..1 or in 0..255 (told apart at setup, by running a mid-grey probe).
Like PatchMatch, it works on a crop around the mask (imaging/crop.py) and changes only the hole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime

from retouch.config import Settings
from retouch.engines.device import onnx_session
from retouch.errors import InvalidInput, ServiceUnavailable
from retouch.imaging.crop import crop_around_mask, paste_back
from retouch.imaging.masks import binarize

# LaMa downsamples three times (8); the single-input exports need 32.
PAD_MULTIPLE = 8
PAD_MULTIPLE_SINGLE_INPUT = 32
# Context around the hole, and the working resolution LaMa was trained at and generalises from.
CROP_MARGIN = 1.0
MAX_WORKING_SIDE = 1024
SEAM_FEATHER = 3


@dataclass(frozen=True)
class LamaLayout:
    image_input: str
    mask_input: str | None
    output: str
    fixed_size: tuple[int, int] | None

    @property
    def single_input(self) -> bool:
        return self.mask_input is None


def read_layout(session: onnxruntime.InferenceSession) -> LamaLayout:
    """The inputs, output and size of a LaMa export, from its graph. ServiceUnavailable if it is not one."""
    inputs = session.get_inputs()
    outputs = session.get_outputs()

    def channels(shape: list) -> object:
        return shape[1] if len(shape) == 4 else None

    image = next((entry for entry in inputs if channels(entry.shape) in (3, 4)), None)
    mask = next((entry for entry in inputs if channels(entry.shape) == 1), None)
    if image is None or not outputs or (channels(image.shape) == 3 and mask is None):
        described = ", ".join(f"{entry.name} {entry.shape}" for entry in inputs)
        raise ServiceUnavailable(f"the LaMa model has inputs {described}; expected an image [1,3,H,W] and a mask [1,1,H,W], or one [1,4,H,W]")
    height, width = image.shape[2], image.shape[3]
    fixed = (height, width) if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0 else None
    return LamaLayout(
        image_input=image.name,
        mask_input=None if channels(image.shape) == 4 else mask.name,
        output=outputs[0].name,
        fixed_size=fixed,
    )


class LamaEngine:
    name = "lama"

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._session: onnxruntime.InferenceSession | None = None
        self.layout: LamaLayout | None = None
        self._output_scale = 255.0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LamaEngine:
        from retouch.weights.registry import WEIGHTS
        from retouch.weights.store import hub_source, locate

        return cls(locate("lama", settings) / hub_source(WEIGHTS["lama"]).files[0])

    def setup(self, device: str) -> None:
        with self._lock:
            if self._session is not None:
                return
            session = onnx_session(self.model_path, device, "run `retouch models pull --force lama`")
            self.layout = read_layout(session)
            self._session = session
            self._output_scale = self._probe_output_scale()

    def predict(self, image: np.ndarray, mask: np.ndarray, seed: int, on_step: Callable[[float], None] | None = None) -> np.ndarray:
        """Fill the hole (mask >= 128) of an RGB uint8 image; LaMa is deterministic, `seed` is unused.
        One forward pass: ``on_step`` is called once, before it (the last point where a cancel is cheap)."""
        if self._session is None or self.layout is None:
            raise RuntimeError("LamaEngine.setup() must be called before predict()")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or mask.shape != image.shape[:2]:
            raise InvalidInput(f"LaMa needs an RGB uint8 image and a mask of its size, got {image.shape} and {mask.shape}")
        hole = binarize(mask)
        if not hole.any():
            return image.copy()
        plan = crop_around_mask(image, hole, margin=CROP_MARGIN, max_side=MAX_WORKING_SIDE)
        if on_step is not None:
            on_step(0.0)
        filled = self.fill(plan.image, plan.mask)
        return paste_back(image, plan, filled, hole, feather=SEAM_FEATHER)

    def fill(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """The network's fill of a whole (working) image, at its size: resized or padded as the export needs."""
        assert self._session is not None and self.layout is not None
        height, width = image.shape[:2]
        if self.layout.fixed_size is not None:
            fixed_height, fixed_width = self.layout.fixed_size
            network_image = cv2.resize(image, (fixed_width, fixed_height), interpolation=cv2.INTER_AREA)
            network_hole = cv2.resize(hole, (fixed_width, fixed_height), interpolation=cv2.INTER_NEAREST)
            output = self._run(network_image, network_hole)
            return cv2.resize(output, (width, height), interpolation=cv2.INTER_CUBIC)
        multiple = PAD_MULTIPLE_SINGLE_INPUT if self.layout.single_input else PAD_MULTIPLE
        pad_bottom, pad_right = (-height) % multiple, (-width) % multiple
        padded_image = np.pad(image, ((0, pad_bottom), (0, pad_right), (0, 0)), mode="reflect" if min(height, width) > 1 else "edge")
        padded_hole = np.pad(hole, ((0, pad_bottom), (0, pad_right)), mode="constant")
        return self._run(padded_image, padded_hole)[:height, :width]

    def _run(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        assert self._session is not None and self.layout is not None
        pixels = image.astype(np.float32).transpose(2, 0, 1)[np.newaxis] / 255.0
        selected = (hole >= 128).astype(np.float32)[np.newaxis, np.newaxis]
        if self.layout.single_input:
            feeds = {self.layout.image_input: np.concatenate([pixels * (1.0 - selected), selected], axis=1)}
        else:
            feeds = {self.layout.image_input: pixels, self.layout.mask_input: selected}
        (output,) = self._session.run([self.layout.output], feeds)
        result = output[0].transpose(1, 2, 0) * self._output_scale
        return np.clip(np.rint(result), 0, 255).astype(np.uint8)

    def _probe_output_scale(self) -> float:
        """255 for an export whose output is in 0..1, 1 for one already in 0..255: a mid-grey picture with
        a small hole comes back about 0.5 or about 128 outside the hole."""
        assert self.layout is not None
        height, width = self.layout.fixed_size or (64, 64)
        grey = np.full((height, width, 3), 128, np.uint8)
        hole = np.zeros((height, width), np.uint8)
        hole[height // 2 - 2 : height // 2 + 2, width // 2 - 2 : width // 2 + 2] = 255
        self._output_scale = 1.0
        raw = self._run(grey, hole).astype(np.float32)
        return 255.0 if float(np.median(raw)) <= 2.0 else 1.0
