"""PatchMatch image completion on small synthetic images whose right answer is known exactly.

The Numba kernels compile on the first setup (about 15 s on a fresh clone, then cached on disk);
one module-scoped engine pays that once.
"""

from __future__ import annotations

import numpy as np
import pytest

from retouch.engines.patchmatch import PatchMatchEngine
from retouch.errors import InvalidInput

GARBAGE = (255, 0, 255)


@pytest.fixture(scope="module")
def engine() -> PatchMatchEngine:
    """No seam blending, so that every hole pixel must be exactly the synthesised one."""
    engine = PatchMatchEngine(seam_width=0)
    engine.setup("cpu")
    return engine


def rectangle_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top:bottom, left:right] = 255
    return mask


def with_garbage(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with what is to be erased painted over the hole, so a fill cannot just keep it."""
    painted = image.copy()
    painted[mask >= 128] = GARBAGE
    return painted


def vertical_stripes(height: int, width: int, period: int) -> np.ndarray:
    columns = np.arange(width)
    on = (columns % period) < period // 2
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:, on] = (200, 40, 90)
    image[:, ~on] = (20, 170, 60)
    return image


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_hole_in_a_constant_image_fills_with_exactly_that_constant(engine: PatchMatchEngine) -> None:
    image = np.full((48, 56, 3), (10, 120, 200), dtype=np.uint8)
    mask = rectangle_mask(48, 56, 14, 18, 34, 40)

    filled = engine.predict(with_garbage(image, mask), mask, seed=3)

    assert np.array_equal(filled, image)


def test_a_hole_in_vertical_stripes_is_filled_with_the_stripes_in_phase(engine: PatchMatchEngine) -> None:
    image = vertical_stripes(64, 64, period=8)
    mask = rectangle_mask(64, 64, 20, 21, 42, 45)

    filled = engine.predict(with_garbage(image, mask), mask, seed=5)

    hole = mask > 0
    assert np.array_equal(filled[hole], image[hole])


def test_a_hole_in_horizontal_stripes_is_filled_with_the_stripes_in_phase(engine: PatchMatchEngine) -> None:
    image = np.ascontiguousarray(vertical_stripes(64, 64, period=6).transpose(1, 0, 2))
    mask = rectangle_mask(64, 64, 18, 10, 40, 50)

    filled = engine.predict(with_garbage(image, mask), mask, seed=7)

    hole = mask > 0
    assert np.array_equal(filled[hole], image[hole])


def test_pixels_outside_the_mask_are_unchanged_to_the_bit(engine: PatchMatchEngine) -> None:
    image = noise(60, 70)
    mask = np.zeros((60, 70), dtype=np.uint8)
    mask[10:30, 15:40] = 255
    mask[35:50, 45:62] = 200
    mask[5, 5] = 127

    filled = engine.predict(image, mask, seed=1)

    outside = mask < 128
    assert np.array_equal(filled[outside], image[outside])
    assert not np.array_equal(filled[~outside], image[~outside])


def test_the_seam_blends_into_the_original_only_inside_the_hole() -> None:
    blended = PatchMatchEngine(seam_width=3)
    image = np.full((40, 40, 3), 100, dtype=np.uint8)
    mask = rectangle_mask(40, 40, 10, 10, 30, 30)

    filled = blended.predict(with_garbage(image, mask), mask, seed=0)

    outside = mask == 0
    assert np.array_equal(filled[outside], image[outside])
    edge, middle = filled[10, 20], filled[20, 20]
    assert np.array_equal(middle, [100, 100, 100])
    # One pixel inside the edge the fill weighs 1 / (seam_width + 1); the rest is the original.
    assert np.array_equal(edge, np.rint(0.25 * 100 + 0.75 * np.array(GARBAGE)).astype(np.uint8))


def test_the_same_seed_gives_the_same_output_and_another_seed_may_not(engine: PatchMatchEngine) -> None:
    image = noise(64, 64, seed=11)
    mask = rectangle_mask(64, 64, 16, 20, 44, 50)

    first = engine.predict(image, mask, seed=42)
    again = engine.predict(image, mask, seed=42)
    other = engine.predict(image, mask, seed=43)

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_an_empty_mask_returns_an_unchanged_copy(engine: PatchMatchEngine) -> None:
    image = noise(32, 32)
    mask = np.full((32, 32), 127, dtype=np.uint8)

    filled = engine.predict(image, mask, seed=0)

    assert np.array_equal(filled, image)
    assert filled is not image


def test_a_mask_over_the_whole_image_is_invalid_input(engine: PatchMatchEngine) -> None:
    image = noise(24, 24)

    with pytest.raises(InvalidInput, match="the mask covers the whole image: there is nothing left to fill from"):
        engine.predict(image, np.full((24, 24), 255, dtype=np.uint8), seed=0)


@pytest.mark.parametrize(
    ("image", "mask", "seed", "message"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), np.zeros((8, 8), dtype=np.uint8), 0, "RGB uint8"),
        (np.zeros((8, 8, 4), dtype=np.uint8), np.zeros((8, 8), dtype=np.uint8), 0, "RGB uint8"),
        (np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((8, 9), dtype=np.uint8), 0, "the image's size"),
        (np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((8, 8), dtype=np.uint8), -1, "seed"),
    ],
)
def test_bad_inputs_are_invalid_input(
    engine: PatchMatchEngine, image: np.ndarray, mask: np.ndarray, seed: int, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        engine.predict(image, mask, seed=seed)


def test_holes_on_the_image_border_are_filled_with_the_stripes_in_phase(engine: PatchMatchEngine) -> None:
    image = vertical_stripes(48, 48, period=8)
    mask = np.zeros((48, 48), dtype=np.uint8)
    mask[:14, 10:30] = 255
    mask[34:, 18:40] = 255

    filled = engine.predict(with_garbage(image, mask), mask, seed=2)

    assert np.array_equal(filled, image)


def test_a_hole_in_the_image_corner_is_filled(engine: PatchMatchEngine) -> None:
    image = np.full((40, 40, 3), 60, dtype=np.uint8)
    mask = rectangle_mask(40, 40, 28, 26, 40, 40)

    filled = engine.predict(with_garbage(image, mask), mask, seed=2)

    assert np.array_equal(filled, image)


def test_a_tiny_image_with_little_left_to_copy_from_is_still_filled(engine: PatchMatchEngine) -> None:
    image = np.full((6, 6, 3), 77, dtype=np.uint8)
    mask = np.full((6, 6), 255, dtype=np.uint8)
    mask[0, 0] = 0

    filled = engine.predict(with_garbage(image, mask), mask, seed=0)

    assert np.array_equal(filled, image)


def test_a_crop_shrunk_to_the_working_size_is_filled_and_pasted_back() -> None:
    small_working_size = PatchMatchEngine(max_side=64, seam_width=0)
    image = np.full((180, 300, 3), (30, 140, 60), dtype=np.uint8)
    image[:, 150:] = (90, 60, 20)
    mask = rectangle_mask(180, 300, 70, 40, 110, 90)

    filled = small_working_size.predict(with_garbage(image, mask), mask, seed=0)

    assert np.array_equal(filled, image)


def test_a_crop_larger_than_the_working_size_is_refined_at_its_own_resolution() -> None:
    """Stripes one pixel wide vanish when the crop is shrunk to a quarter; only a full-size pass can restore them."""
    small_working_size = PatchMatchEngine(max_side=64, seam_width=0)
    image = vertical_stripes(256, 256, 2)
    mask = rectangle_mask(256, 256, 96, 96, 160, 160)

    filled = small_working_size.predict(with_garbage(image, mask), mask, seed=0)

    hole = mask > 0
    inner = np.zeros_like(hole)
    inner[100:156, 100:156] = True
    columns = np.arange(256)[None, :].repeat(256, axis=0)
    # Every pixel of the hole's inside is one of the two stripe colours, in phase with the columns.
    assert np.array_equal(filled[inner], image[inner]), f"{(filled[inner] != image[inner]).any(axis=1).mean():.1%} of the inside differs"
    assert set(columns[inner] % 2) == {0, 1}


def test_fill_says_where_each_hole_pixel_was_copied_from(engine: PatchMatchEngine) -> None:
    image = noise(48, 64, seed=3)
    mask = rectangle_mask(48, 64, 16, 20, 32, 44)

    fill = engine.fill(with_garbage(image, mask), mask, seed=0)

    hole = mask > 0
    assert fill.sources.shape == (48, 64, 2) and fill.sources.dtype == np.int32
    assert (fill.sources[~hole] == -1).all()
    ys, xs = fill.sources[hole][:, 0], fill.sources[hole][:, 1]
    assert not hole[ys, xs].any(), "a hole pixel was copied from the hole"
    assert np.array_equal(fill.image, engine.predict(with_garbage(image, mask), mask, seed=0))


def test_the_sources_of_a_pure_copy_hold_the_copied_pixels() -> None:
    """Without color adaptation the best vote copies: each hole pixel is exactly its source's value."""
    copying = PatchMatchEngine(seam_width=0, finest_vote="best", color_adaptation=False)
    image = noise(64, 64, seed=5)
    mask = rectangle_mask(64, 64, 20, 20, 44, 44)

    fill = copying.fill(with_garbage(image, mask), mask, seed=1)

    hole = mask > 0
    ys, xs = fill.sources[hole][:, 0], fill.sources[hole][:, 1]
    assert np.abs(fill.image[hole].astype(int) - image[ys, xs].astype(int)).max() <= 1


def test_setup_compiles_once_and_reports_ready() -> None:
    fresh = PatchMatchEngine()
    assert not fresh.ready

    fresh.setup("auto")
    fresh.setup("cpu")

    assert fresh.ready
    assert fresh.device == "cpu"


@pytest.mark.parametrize(
    "options",
    [
        {"patch_size": 4},
        {"patch_size": 0},
        {"color_space": "hsv"},
        {"search_iterations": 0},
        {"seam_width": -1},
        {"finest_vote": "median"},
        {"max_side": 0},
    ],
)
def test_bad_tuning_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PatchMatchEngine(**options)
