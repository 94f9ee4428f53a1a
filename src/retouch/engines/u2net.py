"""U²-Net salient-object segmentation (rembg's u2net and u2netp models) on onnxruntime.

Pre- and post-processing follow rembg's ``U2netSession`` so that masks match rembg's. The network
is sensitive to how its 320 x 320 input was resampled, so the input is resized as rembg does it,
with Pillow's LANCZOS: with OpenCV's INTER_AREA instead (5 times as fast, 13 ms against 77 ms on a
12-megapixel photo) the masks differed from rembg's by 0.7 to 3.5 grey levels on average, and
rembg's own golden-image check (a perceptual hash of the cut-out) failed on one of its fixtures.
The mask is resized back with OpenCV (INTER_LINEAR, INTER_AREA on an axis that shrinks) before it
is quantised, where rembg quantises first: that costs nothing measurable (tests/integration/
test_u2net_real.py and test_rembg_golden.py hold the bounds).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
from PIL import Image

from retouch.config import Settings
from retouch.engines.device import onnx_session, resolve_device
from retouch.errors import InvalidInput, ServiceUnavailable, WeightsMissing
from retouch.weights.registry import WEIGHTS
from retouch.weights.store import locate

logger = logging.getLogger(__name__)

MODEL_SIDE = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

VARIANTS = tuple(name for name, entry in WEIGHTS.items() if entry.engine == "u2net")


def _interpolation(source: int, target: int, enlarge: int) -> int:
    return cv2.INTER_AREA if target < source else enlarge


def resize(array: np.ndarray, width: int, height: int, enlarge: int) -> np.ndarray:
    """Resize with INTER_AREA on an axis that shrinks and ``enlarge`` on one that grows."""
    source_height, source_width = array.shape[:2]
    if (source_width, source_height) == (width, height):
        return array
    horizontal = _interpolation(source_width, width, enlarge)
    vertical = _interpolation(source_height, height, enlarge)
    if width == source_width:
        return cv2.resize(array, (width, height), interpolation=vertical)
    if height == source_height or horizontal == vertical:
        return cv2.resize(array, (width, height), interpolation=horizontal)
    # OpenCV's INTER_AREA only averages when both axes shrink; with one axis growing it would
    # sample the shrinking one and alias, so each axis gets its own pass.
    narrowed = cv2.resize(array, (width, source_height), interpolation=horizontal)
    return cv2.resize(narrowed, (width, height), interpolation=vertical)


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInput(f"the segmentation needs a uint8 image array, got {kind}; convert the image to 8-bit RGB")
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInput(f"the segmentation needs an H x W x 3 (RGB) or H x W x 4 (RGBA) image, got shape {image.shape}")


def preprocess(image: np.ndarray, side: int = MODEL_SIDE) -> np.ndarray:
    """The network input for an RGB or RGBA uint8 image: float32 1 x 3 x side x side.

    As rembg: resize to side x side (aspect ratio not kept), divide by the largest pixel
    value, ImageNet normalisation. Alpha is ignored.
    """
    check_image(image)
    rgb = np.ascontiguousarray(image[:, :, :3])
    small = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.LANCZOS))
    scaled = small.astype(np.float32) / max(float(small.max()), 1e-6)
    normalised = (scaled - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def postprocess(output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The uint8 saliency mask of ``size`` (height, width) from the network's first output.

    ``output`` is 1 x C x h x w; channel 0 is min-max normalised to 0..1, resized with
    INTER_LINEAR (INTER_AREA on an axis that shrinks) and scaled to 0..255. Resizing happens
    before quantising, so the enlarged mask has no 8-bit steps; values are rounded where
    rembg truncates (half a grey level of its difference).
    """
    if output.ndim != 4 or output.shape[0] < 1 or output.shape[1] < 1:
        raise ValueError(f"U²-Net output must be 1 x C x h x w, got shape {output.shape}")
    height, width = size
    if height < 1 or width < 1:
        raise InvalidInput(f"mask size must be positive, got {size}")
    prediction = output[0, 0].astype(np.float32)
    lowest, highest = float(prediction.min()), float(prediction.max())
    if not highest > lowest:
        # rembg divides by zero here; a flat prediction carries no subject, so nothing is selected.
        return np.zeros((height, width), dtype=np.uint8)
    normalised = (prediction - lowest) / (highest - lowest)
    resized = resize(normalised, width, height, cv2.INTER_LINEAR)
    return np.rint(np.clip(resized, 0.0, 1.0) * 255.0).astype(np.uint8)


class U2NetEngine:
    """U²-Net salient-object segmentation on onnxruntime. ISNet (retouch.engines.isnet) is the same
    engine with its own input preparation, mask output and resize back."""

    name = "u2net"
    label = "U²-Net"
    variants: tuple[str, ...] = VARIANTS
    default_side = MODEL_SIDE

    def __init__(self, model_path: Path, variant: str = "u2net") -> None:
        """Remember the model file; nothing is loaded until :meth:`setup`."""
        if variant not in self.variants:
            raise InvalidInput(f"unknown {self.label} variant {variant!r}; use one of: {', '.join(self.variants)}")
        self.model_path = Path(model_path)
        self.variant = variant
        self.device: str | None = None
        self.providers: list[str] = []
        self.input_name = ""
        self.input_side = self.default_side
        self.output_name = ""
        self._session: onnxruntime.InferenceSession | None = None
        self._setup_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, variant: str | None = None) -> U2NetEngine:
        """An engine on the installed weights of ``variant`` (default: settings.background_eraser_model).

        Raises WeightsMissing, naming the install command, when the weights are not installed.
        """
        chosen = variant or settings.background_eraser_model
        if chosen not in cls.variants:
            raise InvalidInput(f"unknown {cls.label} variant {chosen!r}; use one of: {', '.join(cls.variants)}")
        return cls(locate(chosen, settings), chosen)

    @property
    def ready(self) -> bool:
        """Whether :meth:`setup` has built the session."""
        return self._session is not None

    def mask_output(self, session: onnxruntime.InferenceSession) -> str:
        """The name of the output that holds the mask: U²-Net's first (its fused map)."""
        return session.get_outputs()[0].name

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The network input for an RGB or RGBA uint8 image."""
        return preprocess(image, self.input_side)

    def finish(self, output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The uint8 mask of ``size`` (height, width) from the network's mask output."""
        return postprocess(output, size)

    def setup(self, device: str) -> None:
        """Build the onnxruntime session on ``device`` ("auto", "cpu" or "cuda"); later calls do nothing."""
        with self._setup_lock:
            if self._session is not None:
                return
            resolved = resolve_device(device)
            if not self.model_path.is_file():
                raise WeightsMissing(f"the {self.label} weights file {self.model_path} does not exist; run `retouch models install {self.variant}`")
            session = onnx_session(self.model_path, resolved, f"delete the file and run `retouch models install {self.variant}`")
            model_input = session.get_inputs()[0]
            shape = model_input.shape
            if len(shape) != 4 or shape[1] not in (3, "3"):
                raise ServiceUnavailable(
                    f"{self.model_path} takes input {model_input.name} of shape {shape}, not 1 x 3 x H x W; it is not a {self.label} model"
                )
            self.input_side = shape[2] if isinstance(shape[2], int) else self.default_side
            self.input_name = model_input.name
            self.output_name = self.mask_output(session)
            self.providers = session.get_providers()
            if resolved == "cuda" and "CUDAExecutionProvider" not in self.providers:
                # onnxruntime lists CUDA whenever its shim ships, then falls back to CPU if the libraries are missing.
                logger.warning("CUDA was requested for %s but the session runs on %s", self.model_path.name, self.providers)
            self.device = resolved
            self._session = session

    @property
    def model_files(self) -> tuple[str, ...]:
        """The weight files this engine runs (reported as metrics.model)."""
        return (self.model_path.name,)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The mask (uint8 H x W, 0..255) of an RGB or RGBA uint8 image, at the image's size.

        Safe to call from several threads at once: the session's run is thread-safe and no
        per-call state is kept on the engine.
        """
        session = self._session
        if session is None:
            raise RuntimeError(f"{type(self).__name__}.predict was called before setup(); call setup(device) once first")
        check_image(image)
        (output,) = session.run([self.output_name], {self.input_name: self.prepare(image)})
        return self.finish(output, (image.shape[0], image.shape[1]))
