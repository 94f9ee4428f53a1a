"""bg-replace's offline engine: the subject cut out and laid over a background made from `ref_image`.

It generates nothing: `prompt`, `negative_prompt`, `scheduler`, `num_inference_steps`,
`guidance_scale`, `cn_weight` and `ip_adapter_weight` have no effect here (the README says so, and
metrics.engine is "composite"). What it honours:

- `samples` and `seed`: each sample's seed picks how the reference is cover-resized and cropped
  behind the subject (a zoom of 1 to `MAX_ZOOM` and where the crop window lies), so samples differ.
- `strength`: how far the old background gives way (1 replaces it; 0.5 leaves it half showing
  through the new one; 0 keeps the photo).

The steps: the subject's mask (U²-Net, or the photo's own alpha when it is a cut-out) refined to the
photo's edges and its fringe decontaminated (imaging/matting.py); the subject's colours moved a
share of the way toward the new background's, mean and spread per channel in CIELAB (a
perceptual space, so lightness and hue move apart); a soft contact shadow under it; the blend.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from retouch.imaging.matting import Subject, cut_out, lay_over

MAX_ZOOM = 1.3
# How far the subject's colour statistics move toward the background's (0: not at all, 1: all the way).
HARMONY = 0.2
# The spread of a channel changes by at most this factor: a flat background must not flatten the subject.
SPREAD_LIMIT = 1.25
# The contact shadow: its darkness, its height and softness as shares of the subject's height, and the
# share of the subject's lowest rows that makes its footprint.
SHADOW_OPACITY = 0.45
SHADOW_HEIGHT_SHARE = 0.035
SHADOW_BLUR_SHARE = 0.03
FOOTPRINT_SHARE = 0.08


def cover_crop(reference: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """`reference` (RGB) scaled to cover height x width, zoomed by 1 to MAX_ZOOM, and cropped at a random place.

    The window is chosen in the reference's own pixels and only it is resized: a thin reference behind a
    large photo never becomes a huge intermediate."""
    source_height, source_width = reference.shape[:2]
    scale = max(height / source_height, width / source_width) * float(rng.uniform(1.0, MAX_ZOOM))
    window_height, window_width = min(source_height, height / scale), min(source_width, width / scale)
    top = float(rng.uniform(0.0, source_height - window_height))
    left = float(rng.uniform(0.0, source_width - window_width))
    first_row, first_column = int(top), int(left)
    last_row = min(source_height, max(first_row + 1, round(top + window_height)))
    last_column = min(source_width, max(first_column + 1, round(left + window_width)))
    window = np.ascontiguousarray(reference[first_row:last_row, first_column:last_column, :3])
    shrinking = window.shape[0] * window.shape[1] > height * width
    return cv2.resize(window, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2LAB)


def _weighted_statistics(values: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = float(weight.sum())
    if total <= 0.0:
        return values.reshape(-1, 3).mean(axis=0), values.reshape(-1, 3).std(axis=0)
    flat, flat_weight = values.reshape(-1, 3), weight.reshape(-1, 1)
    mean = (flat * flat_weight).sum(axis=0) / total
    spread = np.sqrt(((flat - mean) ** 2 * flat_weight).sum(axis=0) / total)
    return mean, spread


def harmonize(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray, amount: float = HARMONY) -> np.ndarray:
    """The subject's colours (float32 0..1 RGB) moved `amount` of the way toward the background's, in CIELAB."""
    if amount <= 0.0:
        return foreground
    subject_lab = _lab(foreground)
    background_lab = _lab(background)
    # Statistics from a reduced copy: the same numbers to a fraction of a level, at a fraction of the cost.
    step = max(1, int(np.sqrt(alpha.size / 65536.0)))
    subject_mean, subject_spread = _weighted_statistics(subject_lab[::step, ::step], alpha[::step, ::step])
    background_mean, background_spread = _weighted_statistics(background_lab[::step, ::step], 1.0 - alpha[::step, ::step])
    target_mean = subject_mean + amount * (background_mean - subject_mean)
    target_spread = subject_spread + amount * (background_spread - subject_spread)
    gain = np.clip(target_spread / np.maximum(subject_spread, 1e-3), 1.0 / SPREAD_LIMIT, SPREAD_LIMIT).astype(np.float32)
    moved = (subject_lab - subject_mean.astype(np.float32)) * gain + target_mean.astype(np.float32)
    return np.clip(cv2.cvtColor(moved, cv2.COLOR_LAB2RGB), 0.0, 1.0)


def contact_shadow(alpha: np.ndarray) -> np.ndarray:
    """A soft shadow (float32 0..1, 1 = darkest) on the ground under the subject: its footprint, flattened and blurred."""
    height, width = alpha.shape
    solid = alpha >= 0.5
    rows = np.flatnonzero(solid.any(axis=1))
    if rows.size == 0:
        return np.zeros_like(alpha)
    top, bottom = int(rows[0]), int(rows[-1])
    subject_height = bottom - top + 1
    band_top = max(top, bottom - max(1, round(subject_height * FOOTPRINT_SHARE)))
    columns = np.flatnonzero(solid[band_top : bottom + 1].any(axis=0))
    left, right = int(columns[0]), int(columns[-1])
    shadow = np.zeros((height, width), np.float32)
    centre = ((left + right) // 2, bottom)
    axes = (max(1, (right - left) // 2 + 1), max(1, round(subject_height * SHADOW_HEIGHT_SHARE)))
    cv2.ellipse(shadow, centre, axes, 0.0, 0.0, 360.0, 1.0, thickness=-1, lineType=cv2.LINE_AA)
    sigma = max(1.0, subject_height * SHADOW_BLUR_SHARE)
    return cv2.GaussianBlur(shadow, (0, 0), sigma)


def compose(
    image: np.ndarray, mask: np.ndarray, reference: np.ndarray, seeds: tuple[int, ...], strength: float, refine: bool = True
) -> list[np.ndarray]:
    """One RGB uint8 composite per seed of the photo's subject (where `mask` is 255) over the reference."""
    subject = cut_out(image, mask, refine)
    height, width = subject.pixels.shape[:2]
    shade = (1.0 - SHADOW_OPACITY * strength * contact_shadow(subject.alpha))[..., np.newaxis]
    photo = subject.pixels.astype(np.float32) * np.float32(1.0 / 255.0)
    outputs = []
    for seed in seeds:
        background = cover_crop(reference, height, width, np.random.default_rng(seed)).astype(np.float32) * np.float32(1.0 / 255.0)
        if strength < 1.0:
            background = strength * background + (1.0 - strength) * photo
        harmonized = Subject(
            pixels=subject.pixels,
            alpha=subject.alpha,
            foreground=harmonize(subject.foreground, subject.alpha, background, HARMONY * strength),
            solid=np.zeros_like(subject.solid),
        )
        outputs.append(lay_over(harmonized, background * shade))
    return outputs


class CompositeEngine:
    """`name` is what metrics.engine reports. Weight-free itself; its mask comes from the U²-Net it is given."""

    name = "composite"

    def setup(self, device: str) -> None:
        """Nothing to load: the mask engine is set up by the engine cache as a part of its own."""

    def replace(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        reference: np.ndarray,
        seeds: tuple[int, ...],
        strength: float,
        on_step: Callable[[float], None] | None = None,
        refine: bool = True,
    ) -> list[np.ndarray]:
        """One composite per seed; `on_step(1.0)` when they are made. `refine=False` for a cut-out's own alpha."""
        if strength <= 0.0:
            outputs = [np.ascontiguousarray(image[..., :3]).copy() for _ in seeds]
        else:
            outputs = compose(image, mask, reference, seeds, strength, refine)
        if on_step is not None:
            on_step(1.0)
        return outputs
