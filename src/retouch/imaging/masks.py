"""Mask operations, in one place so that every model grows, inverts and draws masks the same way.

Masks are uint8 H x W, 255 = selected, 0 = not; soft masks use the values in between. A pixel
counts as selected from 128 up. No function here changes its inputs.
"""

from __future__ import annotations

import cv2
import numpy as np

SELECTED_FROM = 128


def binarize(mask: np.ndarray, threshold: int = SELECTED_FROM) -> np.ndarray:
    """A uint8 0/255 mask: 255 where mask >= threshold.

    Accepts uint8 (0..255), bool (True = selected) or float masks in 0..1, which are compared
    on the same 0..255 scale (value * 255 >= threshold).
    """
    _check_two_dimensional(mask, "mask")
    if mask.dtype == np.bool_:
        selected = mask
    elif mask.dtype == np.uint8:
        selected = mask >= threshold
    elif np.issubdtype(mask.dtype, np.floating):
        selected = mask * 255.0 >= threshold
    else:
        raise ValueError(f"mask has dtype {mask.dtype}; binarize takes uint8 (0..255), bool or float (0..1)")
    return np.where(selected, np.uint8(255), np.uint8(0))


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """mask dilated by `pixels` with an elliptical kernel of size 2 * pixels + 1; 0 gives an unchanged copy.

    Works on soft masks too: each pixel becomes the largest value within the ellipse around it.
    """
    _check_uint8_mask(mask, "mask")
    if pixels < 0:
        raise ValueError(f"pixels is {pixels}; grow_mask takes 0 or more")
    if pixels == 0:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask, kernel)


def invert_mask(mask: np.ndarray) -> np.ndarray:
    """255 - mask: selected becomes unselected, and soft values mirror."""
    _check_uint8_mask(mask, "mask")
    return np.subtract(np.uint8(255), mask)


def draw_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (255, 0, 0),
    opacity: float = 0.5,
) -> np.ndarray:
    """RGB image with the selected pixels blended toward color.

    Each pixel moves toward color by opacity * mask / 255, rounded half up, so soft masks blend
    in proportion and unselected pixels keep their exact values. An alpha channel is dropped.
    """
    _check_image(image)
    _check_uint8_mask(mask, "mask")
    _check_same_size(image, mask)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity is {opacity}; it must be between 0 and 1")
    rgb = image[..., :3].astype(np.float32)
    weight = mask.astype(np.float32) * np.float32(opacity / 255.0)
    target = np.asarray(color, dtype=np.float32)
    blended = rgb + (target - rgb) * weight[..., None]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def draw_boxes(
    image: np.ndarray,
    boxes: list[tuple[float, float, float, float]],
    labels: list[str] | None = None,
    color: tuple[int, int, int] = (0, 255, 0),
    thickness: int | None = None,
) -> np.ndarray:
    """RGB image with a rectangle per box (x1, y1, x2, y2 in pixels) and its label above it.

    thickness None scales the lines with the image (1 pixel up to about 450 pixels on the short
    side). A label that would leave the top of the image goes inside its box. cv2's font has
    ASCII only; other characters show as '?'.
    """
    _check_image(image)
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"{len(labels)} labels for {len(boxes)} boxes; give one label per box or none")
    canvas = np.ascontiguousarray(image[..., :3]).copy()
    height, width = canvas.shape[:2]
    short_side = min(height, width)
    line = thickness if thickness is not None else max(1, round(short_side / 300))
    font_scale = max(0.4, short_side / 1000)
    text_thickness = max(1, round(font_scale * 1.5))
    # Dark text on light box colours and light text on dark ones (Rec. 601 luminance).
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luminance >= 128 else (255, 255, 255)
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        top_left = (round(x1), round(y1))
        cv2.rectangle(canvas, top_left, (round(x2), round(y2)), color, line)
        if labels is None or not labels[index]:
            continue
        (text_width, text_height), baseline = cv2.getTextSize(labels[index], cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_thickness)
        label_height = text_height + baseline + 2 * line
        label_top = top_left[1] - label_height if top_left[1] - label_height >= 0 else top_left[1]
        left = top_left[0]
        cv2.rectangle(canvas, (left, label_top), (left + text_width + 2 * line, label_top + label_height), color, cv2.FILLED)
        cv2.putText(
            canvas,
            labels[index],
            (left + line, label_top + line + text_height),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            text_color,
            text_thickness,
            cv2.LINE_AA,
        )
    return canvas


def is_empty(mask: np.ndarray) -> bool:
    """True when no pixel is selected (none >= 128), the same rule coverage() counts by."""
    return not np.any(_selected(mask))


def coverage(mask: np.ndarray) -> float:
    """The fraction of pixels selected (>= 128), from 0.0 to 1.0; 0.0 for an empty array."""
    selected = _selected(mask)
    if selected.size == 0:
        return 0.0
    return float(np.count_nonzero(selected)) / selected.size


def _selected(mask: np.ndarray) -> np.ndarray:
    if mask.dtype == np.uint8:
        _check_two_dimensional(mask, "mask")
        return mask >= SELECTED_FROM
    return binarize(mask) > 0


def _check_two_dimensional(mask: np.ndarray, name: str) -> None:
    if mask.ndim != 2:
        raise ValueError(f"{name} has shape {mask.shape}; a mask is 2-D (height x width)")


def _check_uint8_mask(mask: np.ndarray, name: str) -> None:
    _check_two_dimensional(mask, name)
    if mask.dtype != np.uint8:
        raise ValueError(f"{name} has dtype {mask.dtype}; masks are uint8 (use binarize for bool or float masks)")


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image has shape {image.shape} and dtype {image.dtype}; images are uint8 H x W x 3 (RGB) or x 4 (RGBA)")


def _check_same_size(image: np.ndarray, mask: np.ndarray) -> None:
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but image is {image.shape[1]}x{image.shape[0]}; they must be the same size"
        )
