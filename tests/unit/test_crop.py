"""The crop-around-the-mask strategy: where the box lies, how far it shrinks, what paste_back may change."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retouch.errors import InvalidInput
from retouch.imaging.crop import crop_around_mask, mask_bounding_box, paste_back


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def rectangle_mask(height: int, width: int, top: int, left: int, bottom: int, right: int, value: int = 255) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top:bottom, left:right] = value
    return mask


def test_the_box_is_the_masks_box_grown_by_the_margin_times_the_holes_size() -> None:
    # A 40 x 90 hole: its size is sqrt(40 * 90) = 60, so margin 0.5 adds 30 pixels a side.
    mask = rectangle_mask(400, 600, 150, 250, 190, 340)

    plan = crop_around_mask(noise(400, 600), mask, margin=0.5, max_side=2000, min_margin=8)

    assert (plan.top, plan.left, plan.bottom, plan.right) == (120, 220, 220, 370)
    assert plan.scale == 1.0
    assert plan.box_shape == plan.working_shape == (100, 150)


def test_a_small_hole_gets_at_least_min_margin_pixels_of_context() -> None:
    mask = rectangle_mask(200, 200, 100, 100, 104, 104)

    plan = crop_around_mask(noise(200, 200), mask, margin=1.0, max_side=1000, min_margin=32)

    assert (plan.top, plan.left, plan.bottom, plan.right) == (68, 68, 136, 136)


def test_the_box_is_clipped_to_the_image() -> None:
    mask = rectangle_mask(120, 160, 0, 140, 20, 160)

    plan = crop_around_mask(noise(120, 160), mask, margin=1.0, max_side=1000, min_margin=10)

    assert (plan.top, plan.left, plan.bottom, plan.right) == (0, 120, 40, 160)
    selected = mask >= 128
    assert np.array_equal(plan.mask > 0, selected[plan.top : plan.bottom, plan.left : plan.right])


def test_the_box_contains_the_mask_and_the_margin_around_it() -> None:
    mask = np.zeros((300, 300), dtype=np.uint8)
    cv2.circle(mask, (140, 170), 25, 255, -1)
    mask[60, 200] = 200

    plan = crop_around_mask(noise(300, 300), mask, margin=0.25, max_side=1000, min_margin=12)

    top, left, bottom, right = mask_bounding_box(mask >= 128)
    pad = max(12, int(np.ceil(0.25 * np.sqrt((bottom - top) * (right - left)))))
    assert plan.top == top - pad and plan.left == left - pad
    assert plan.bottom == bottom + pad and plan.right == right + pad


def test_an_unshrunk_plan_holds_the_boxs_pixels_and_the_binarised_mask() -> None:
    image = noise(80, 90)
    mask = rectangle_mask(80, 90, 30, 30, 50, 60, value=130)

    plan = crop_around_mask(image, mask, margin=0.2, max_side=500, min_margin=5)

    assert np.array_equal(plan.image, image[plan.top : plan.bottom, plan.left : plan.right])
    assert set(np.unique(plan.mask)) == {0, 255}


def test_a_large_box_is_shrunk_so_that_its_long_side_is_max_side() -> None:
    mask = rectangle_mask(1000, 1500, 300, 400, 700, 1100)

    plan = crop_around_mask(noise(1000, 1500), mask, margin=1.0, max_side=256)

    assert plan.box_shape == (1000, 1500)
    assert max(plan.working_shape) == 256
    assert plan.working_shape == (171, 256)
    assert plan.scale == pytest.approx(256 / 1500)
    assert plan.image.shape == (171, 256, 3) and plan.mask.shape == (171, 256)


def test_the_shrunk_mask_covers_every_hole_pixel_once_enlarged_back() -> None:
    mask = np.zeros((900, 700), dtype=np.uint8)
    cv2.ellipse(mask, (350, 450), (200, 90), 30, 0, 360, 255, -1)
    mask[100:103, 600:603] = 255

    plan = crop_around_mask(noise(900, 700), mask, margin=0.5, max_side=128)

    height, width = plan.box_shape
    enlarged = cv2.resize(plan.mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0
    assert enlarged[mask[plan.top : plan.bottom, plan.left : plan.right] > 0].all()


def test_paste_back_changes_only_the_masks_pixels_and_takes_them_from_the_fill() -> None:
    image = noise(100, 120, seed=1)
    mask = rectangle_mask(100, 120, 40, 50, 60, 80)
    mask[45, 55] = 127
    plan = crop_around_mask(image, mask, margin=0.5, max_side=1000)
    fill = noise(*plan.working_shape, seed=2)

    result = paste_back(image, plan, fill, mask)

    selected = mask >= 128
    assert np.array_equal(result[~selected], image[~selected])
    inside = selected[plan.top : plan.bottom, plan.left : plan.right]
    assert np.array_equal(result[plan.top : plan.bottom, plan.left : plan.right][inside], fill[inside])


def test_paste_back_enlarges_a_shrunk_fill_and_still_changes_only_the_masks_pixels() -> None:
    image = noise(600, 800, seed=3)
    mask = np.zeros((600, 800), dtype=np.uint8)
    cv2.circle(mask, (400, 300), 120, 255, -1)
    plan = crop_around_mask(image, mask, margin=1.0, max_side=200)
    assert plan.scale < 1.0
    fill = np.full((*plan.working_shape, 3), (12, 34, 56), dtype=np.uint8)

    result = paste_back(image, plan, fill, mask)

    selected = mask > 0
    assert np.array_equal(result[~selected], image[~selected])
    assert (result[selected] == (12, 34, 56)).all()


def test_paste_back_feathers_the_fill_into_the_original_inside_the_hole_only() -> None:
    image = np.full((60, 60, 3), 200, dtype=np.uint8)
    mask = rectangle_mask(60, 60, 20, 20, 40, 40)
    plan = crop_around_mask(image, mask, margin=0.5, max_side=1000)
    fill = np.zeros((*plan.working_shape, 3), dtype=np.uint8)

    result = paste_back(image, plan, fill, mask, feather=3)

    assert np.array_equal(result[mask == 0], image[mask == 0])
    # 1, 2, 3 pixels deep the fill weighs 1/4, 2/4, 3/4; from 4 deep it is the fill alone.
    assert [int(result[30, column, 0]) for column in range(20, 25)] == [150, 100, 50, 0, 0]


def test_an_empty_mask_has_nothing_to_crop_around() -> None:
    with pytest.raises(InvalidInput, match="selects nothing"):
        crop_around_mask(noise(20, 20), np.full((20, 20), 127, dtype=np.uint8))


def test_a_mask_of_another_size_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="the image's size"):
        crop_around_mask(noise(20, 20), np.zeros((20, 21), dtype=np.uint8))


def test_paste_back_refuses_a_fill_of_the_wrong_size() -> None:
    image = noise(50, 50)
    mask = rectangle_mask(50, 50, 20, 20, 30, 30)
    plan = crop_around_mask(image, mask)

    with pytest.raises(ValueError, match="the plan expects"):
        paste_back(image, plan, np.zeros((5, 5, 3), dtype=np.uint8), mask)
