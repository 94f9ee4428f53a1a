"""Mask operations on small arrays whose every expected pixel is written out."""

from __future__ import annotations

import numpy as np
import pytest

from retouch.imaging.masks import (
    binarize,
    coverage,
    draw_boxes,
    draw_overlay,
    grow_mask,
    invert_mask,
    is_empty,
)


def single_pixel(size: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 2, size // 2] = 255
    return mask


def test_grow_mask_by_one_gives_the_3x3_ellipse_which_is_a_cross() -> None:
    grown = grow_mask(single_pixel(5), 1)

    expected = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 0, 255, 0, 0],
            [0, 255, 255, 255, 0],
            [0, 0, 255, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(grown, expected)


def test_grow_mask_by_two_gives_the_5x5_ellipse() -> None:
    grown = grow_mask(single_pixel(7), 2)

    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 255, 0, 0, 0],
            [0, 255, 255, 255, 255, 255, 0],
            [0, 255, 255, 255, 255, 255, 0],
            [0, 255, 255, 255, 255, 255, 0],
            [0, 0, 0, 255, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(grown, expected)


def test_grow_mask_spreads_the_largest_soft_value() -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[2, 2] = 100
    mask[0, 0] = 40

    grown = grow_mask(mask, 1)

    expected = np.array(
        [
            [40, 40, 0, 0],
            [40, 0, 100, 0],
            [0, 100, 100, 100],
            [0, 0, 100, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(grown, expected)


def test_grow_mask_by_zero_is_an_equal_copy() -> None:
    mask = single_pixel(3)

    grown = grow_mask(mask, 0)

    np.testing.assert_array_equal(grown, mask)
    assert grown is not mask
    grown[0, 0] = 7
    assert mask[0, 0] == 0


def test_grow_mask_does_not_change_its_input() -> None:
    mask = single_pixel(5)
    before = mask.copy()

    grow_mask(mask, 2)

    np.testing.assert_array_equal(mask, before)


def test_grow_mask_refuses_negative_pixels() -> None:
    with pytest.raises(ValueError, match="pixels is -1"):
        grow_mask(single_pixel(3), -1)


def test_invert_mask() -> None:
    mask = np.array([[0, 255], [1, 128]], dtype=np.uint8)

    inverted = invert_mask(mask)

    np.testing.assert_array_equal(inverted, np.array([[255, 0], [254, 127]], dtype=np.uint8))
    assert inverted.dtype == np.uint8
    np.testing.assert_array_equal(mask, np.array([[0, 255], [1, 128]], dtype=np.uint8))


def test_binarize_thresholds_at_128_exactly() -> None:
    mask = np.array([[0, 127, 128, 255]], dtype=np.uint8)

    np.testing.assert_array_equal(binarize(mask), np.array([[0, 0, 255, 255]], dtype=np.uint8))


def test_binarize_takes_a_custom_threshold() -> None:
    mask = np.array([[9, 10, 11]], dtype=np.uint8)

    np.testing.assert_array_equal(binarize(mask, threshold=10), np.array([[0, 255, 255]], dtype=np.uint8))


def test_binarize_bool_and_float_masks() -> None:
    np.testing.assert_array_equal(binarize(np.array([[True, False]])), np.array([[255, 0]], dtype=np.uint8))
    floats = np.array([[0.0, 0.5, 0.51, 1.0]], dtype=np.float32)
    # 0.5 * 255 = 127.5 is below 128, so floats follow the same rule as uint8.
    np.testing.assert_array_equal(binarize(floats), np.array([[0, 0, 255, 255]], dtype=np.uint8))


def test_binarize_refuses_other_dtypes() -> None:
    with pytest.raises(ValueError, match="int32"):
        binarize(np.zeros((2, 2), dtype=np.int32))


def test_draw_overlay_blends_only_selected_pixels() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 255], [128, 0]], dtype=np.uint8)

    overlay = draw_overlay(image, mask, color=(200, 0, 100), opacity=0.5)

    # Full selection moves halfway: 100 + (200 - 100) * 0.5 = 150, 100 + (0 - 100) * 0.5 = 50.
    # 128/255 of that: 100 + 100 * 0.5 * 128 / 255 = 125.098 -> 125; 100 - 25.098 = 74.902 -> 75.
    expected = np.array(
        [
            [[100, 100, 100], [150, 50, 100]],
            [[125, 75, 100], [100, 100, 100]],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(overlay, expected)
    assert (image == 100).all()


def test_draw_overlay_of_rgba_gives_rgb() -> None:
    image = np.full((1, 1, 4), 100, dtype=np.uint8)

    overlay = draw_overlay(image, np.array([[255]], dtype=np.uint8), color=(0, 0, 0), opacity=1.0)

    np.testing.assert_array_equal(overlay, np.zeros((1, 1, 3), dtype=np.uint8))


def test_draw_overlay_refuses_opacity_out_of_range() -> None:
    with pytest.raises(ValueError, match="opacity is 1.5"):
        draw_overlay(np.zeros((1, 1, 3), dtype=np.uint8), np.zeros((1, 1), dtype=np.uint8), opacity=1.5)


def test_draw_boxes_draws_the_outline_and_keeps_the_input() -> None:
    image = np.zeros((40, 60, 3), dtype=np.uint8)

    drawn = draw_boxes(image, [(10, 15, 30, 35)], color=(0, 255, 0), thickness=1)

    assert drawn.shape == (40, 60, 3)
    assert tuple(drawn[15, 20]) == (0, 255, 0)
    assert tuple(drawn[35, 20]) == (0, 255, 0)
    assert tuple(drawn[25, 10]) == (0, 255, 0)
    assert tuple(drawn[25, 20]) == (0, 0, 0)
    assert not image.any()


def test_draw_boxes_puts_the_label_above_the_box() -> None:
    image = np.zeros((200, 200, 3), dtype=np.uint8)

    drawn = draw_boxes(image, [(50, 100, 150, 180)], labels=["cat"], color=(255, 0, 0), thickness=1)

    above = drawn[:100, 50:150]
    assert (above == (255, 0, 0)).all(axis=2).any()
    assert not drawn[:60].any()


def test_draw_boxes_refuses_a_label_count_mismatch() -> None:
    with pytest.raises(ValueError, match="2 labels for 1 boxes"):
        draw_boxes(np.zeros((10, 10, 3), dtype=np.uint8), [(1, 1, 5, 5)], labels=["a", "b"])


def test_coverage_and_is_empty() -> None:
    mask = np.array([[0, 127, 128, 255]], dtype=np.uint8)

    assert coverage(mask) == 0.5
    assert not is_empty(mask)
    assert is_empty(np.array([[0, 127]], dtype=np.uint8))
    assert coverage(np.zeros((3, 3), dtype=np.uint8)) == 0.0
    assert coverage(np.full((3, 3), 255, dtype=np.uint8)) == 1.0
    assert coverage(np.zeros((0, 0), dtype=np.uint8)) == 0.0
    assert is_empty(np.zeros((0, 0), dtype=np.uint8))
