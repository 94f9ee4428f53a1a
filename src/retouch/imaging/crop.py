"""Work on a crop around the mask instead of the whole photo, then paste the fill back.

An inpainting engine only needs the hole and some context around it. Cropping the mask's
bounding box grown by a margin, and shrinking that crop when its long side exceeds a working
resolution, makes a 12-megapixel photo with a small mask cost what the crop costs. The fill is
enlarged back to the crop's size and only the hole's pixels are taken from it, so everything
outside the mask stays bit-identical to the input. Engine-agnostic: PatchMatch uses it, and so
can any engine that fills a hole in an RGB image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from retouch.errors import InvalidInput
from retouch.imaging.masks import binarize


@dataclass(frozen=True, eq=False)
class CropPlan:
    """Where the crop lies in the full image, at which scale the engine works, and its inputs.

    The box is ``top:bottom`` x ``left:right`` of the full image (end exclusive). ``scale`` is
    the working size over the box's size (1.0 when the box is small enough). ``image`` and
    ``mask`` are what the engine fills: the box resized to ``working_shape``; the working mask
    is 0/255 and conservative, every working pixel that any full-resolution hole pixel touches
    (and one more around them when shrunk) is selected, so that enlarging the fill back covers
    the whole hole with filled pixels.
    """

    top: int
    left: int
    bottom: int
    right: int
    scale: float
    image: np.ndarray
    mask: np.ndarray

    @property
    def box_shape(self) -> tuple[int, int]:
        """(height, width) of the box in the full image."""
        return self.bottom - self.top, self.right - self.left

    @property
    def working_shape(self) -> tuple[int, int]:
        """(height, width) of the working image the engine fills."""
        return self.image.shape[0], self.image.shape[1]


def mask_bounding_box(selected: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the True pixels, end exclusive; the array must have some."""
    rows = np.flatnonzero(selected.any(axis=1))
    columns = np.flatnonzero(selected.any(axis=0))
    return int(rows[0]), int(columns[0]), int(rows[-1]) + 1, int(columns[-1]) + 1


def crop_around_mask(
    image: np.ndarray,
    mask: np.ndarray,
    margin: float = 1.0,
    max_side: int = 1024,
    min_margin: int = 32,
) -> CropPlan:
    """The crop an engine should fill: the mask's box, a margin of context, a capped working size.

    The margin on every side is ``margin`` times the geometric mean of the box's sides (so a
    thin, long mask such as a wire gets context in proportion to its area, not its length),
    at least ``min_margin`` pixels, clipped to the image. When the crop's long side exceeds
    ``max_side`` it is shrunk (INTER_AREA) so that the long side is ``max_side``. The mask is
    binarised at 128 and must select something.
    """
    _check_inputs(image, mask)
    if margin < 0 or min_margin < 0:
        raise ValueError(f"margin {margin} and min_margin {min_margin} must be 0 or more")
    if max_side < 1:
        raise ValueError(f"max_side is {max_side}; it must be at least 1")
    selected = binarize(mask) > 0
    if not selected.any():
        raise InvalidInput("the mask selects nothing: there is no hole to crop around")
    height, width = selected.shape
    top, left, bottom, right = mask_bounding_box(selected)
    hole_size = math.sqrt((bottom - top) * (right - left))
    pad = max(int(min_margin), int(math.ceil(margin * hole_size)))
    top, left = max(0, top - pad), max(0, left - pad)
    bottom, right = min(height, bottom + pad), min(width, right + pad)
    box_height, box_width = bottom - top, right - left
    scale = min(1.0, max_side / max(box_height, box_width))
    box_image = image[top:bottom, left:right]
    box_mask = np.where(selected[top:bottom, left:right], np.uint8(255), np.uint8(0))
    if scale >= 1.0:
        return CropPlan(top, left, bottom, right, 1.0, box_image.copy(), box_mask)
    working_height = max(1, round(box_height * scale))
    working_width = max(1, round(box_width * scale))
    working_image = cv2.resize(box_image, (working_width, working_height), interpolation=cv2.INTER_AREA)
    return CropPlan(top, left, bottom, right, scale, working_image, shrink_mask(selected[top:bottom, left:right], (working_width, working_height)))


def shrink_mask(selected: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The mask (0/255) of an image shrunk to ``size`` (width, height) with INTER_AREA, conservatively.

    INTER_AREA gives a shrunk pixel a share of every full-resolution pixel under it, so "> 0"
    selects each shrunk pixel that a selected pixel touches (its value mixes in what is to be
    removed); one more pixel around them keeps an enlarged fill's interpolation from reaching
    back into the unfilled, unwanted content.
    """
    shrunk = cv2.resize(selected.astype(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA)
    return cv2.dilate(np.where(shrunk > 0, np.uint8(255), np.uint8(0)), np.ones((3, 3), np.uint8))


def paste_back(original: np.ndarray, plan: CropPlan, filled_crop: np.ndarray, mask: np.ndarray, feather: int = 0) -> np.ndarray:
    """A copy of ``original`` whose hole pixels (mask >= 128) come from the filled working crop.

    ``filled_crop`` has the plan's working shape; it is enlarged back to the box (INTER_CUBIC)
    when the plan shrank it. Only pixels the mask selects change. ``feather`` > 0 blends the
    fill into the original over that many pixels inside the hole's edge (the fill's weight goes
    up linearly with the distance from the edge) to hide a seam; the mask a caller grew first
    makes those pixels background, not what was removed.
    """
    _check_inputs(original, mask)
    expected_shape = (*plan.working_shape, *original.shape[2:])
    if filled_crop.dtype != np.uint8 or filled_crop.shape != expected_shape:
        raise ValueError(
            f"filled_crop has shape {filled_crop.shape} and dtype {filled_crop.dtype}; "
            f"the plan expects uint8 {plan.working_shape} with {original.shape[2]} channels"
        )
    if feather < 0:
        raise ValueError(f"feather is {feather}; it must be 0 or more")
    box_height, box_width = plan.box_shape
    if (box_height, box_width) != plan.working_shape:
        filled_box = cv2.resize(filled_crop, (box_width, box_height), interpolation=cv2.INTER_CUBIC)
    else:
        filled_box = filled_crop
    result = original.copy()
    region = result[plan.top : plan.bottom, plan.left : plan.right]
    selected = binarize(mask[plan.top : plan.bottom, plan.left : plan.right]) > 0
    if feather == 0:
        region[selected] = filled_box[selected]
        return result
    # Distance to the nearest unselected pixel: 1 on the hole's edge. Clipped to the box, the
    # hole never reaches a box side that is not also an image side, where no seam can show.
    distance = cv2.distanceTransform(selected.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    weight = np.minimum(distance[selected] / (feather + 1.0), 1.0)[:, None]
    blended = weight * filled_box[selected].astype(np.float32) + (1.0 - weight) * region[selected].astype(np.float32)
    region[selected] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return result


def _check_inputs(image: np.ndarray, mask: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        described = f"shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInput(f"the image has {described}; it must be a uint8 H x W x C array")
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.shape != image.shape[:2]:
        described = f"shape {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise InvalidInput(f"the mask has {described}; it must be 2-D and the image's size {image.shape[:2]}")
