"""Laying a subject over a new background: alpha refinement, foreground colour, the blend, and the composite's parts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from retouch.engines.composite import CompositeEngine, contact_shadow, cover_crop, harmonize
from retouch.engines.diffusion import adapter_reference
from retouch.imaging.matting import alpha_of, blend, cut_out, cut_out_rgba, estimate_foreground, paste_subject, refine_alpha

GREEN = np.array([0, 255, 0], np.float32)


def green_screen(size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real photo's pixels as the subject (a disk with a soft edge) over a pure green screen: (photo, mask, subject colours)."""
    subject = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), size // 3, 255, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), size / 64)
    alpha = alpha_of(mask)[..., np.newaxis]
    photo = np.rint(alpha * subject + (1 - alpha) * GREEN).astype(np.uint8)
    return photo, mask, subject


def fringe_of(mask: np.ndarray) -> np.ndarray:
    return (mask > 40) & (mask < 215)


def test_the_foreground_estimate_takes_the_old_background_out_of_the_fringe():
    photo, mask, subject = green_screen()
    alpha = alpha_of(mask)
    foreground = estimate_foreground(photo, alpha) * 255
    fringe = fringe_of(mask)
    # The photo's fringe is partly green; the estimate keeps little of that green, and is closer to the subject's colour.

    def excess_green(pixels: np.ndarray) -> float:
        pixels = pixels.astype(np.float32)
        return float((pixels[:, 1] - pixels[:, [0, 2]].mean(axis=1)).mean())

    own = excess_green(subject[fringe])
    assert excess_green(foreground[fringe]) - own < 0.2 * (excess_green(photo[fringe]) - own)
    assert np.abs(foreground[fringe] - subject[fringe]).mean() < 0.6 * np.abs(photo[fringe].astype(np.float32) - subject[fringe]).mean()
    # Solid pixels are kept as they are.
    solid = mask == 255
    assert np.array_equal(np.rint(foreground[solid]).astype(np.uint8), photo[solid])


def test_a_composite_has_no_halo_of_the_old_background():
    photo, mask, _ = green_screen()
    red = np.zeros_like(photo)
    red[...] = (200, 30, 40)
    composite = CompositeEngine().replace(photo, mask, red, seeds=(3,), strength=1.0)[0].astype(np.float32)
    fringe = fringe_of(mask)
    naive = blend(photo, alpha_of(mask), red).astype(np.float32)
    # Green is what the old background left: the fringe keeps far less of it than a plain alpha blend.
    excess_green = composite[fringe][:, 1] - composite[fringe][:, [0, 2]].mean(axis=1)
    naive_excess = naive[fringe][:, 1] - naive[fringe][:, [0, 2]].mean(axis=1)
    assert excess_green.mean() < 0.3 * naive_excess.mean()
    # The fringe's colour is closer to the new background than to the old one.
    to_new = np.linalg.norm(composite[fringe] - red[fringe], axis=1).mean()
    to_old = np.linalg.norm(composite[fringe] - GREEN, axis=1).mean()
    assert to_new < to_old


def test_refine_alpha_keeps_the_certain_parts_and_follows_the_photo_in_the_band():
    photo, mask, _ = green_screen()
    refined = refine_alpha(photo, mask)
    assert refined.dtype == np.float32 and refined.shape == mask.shape
    assert np.all(refined[mask == 255] == 1.0) and np.all(refined[mask == 0] == 0.0)
    # A hard mask one pixel off the true edge is moved toward it.
    hard = (mask >= 128).astype(np.uint8) * 255
    shifted = np.roll(hard, 2, axis=1)
    moved = refine_alpha(photo, shifted)
    truth = alpha_of(mask)
    assert np.abs(moved - truth).mean() < np.abs(alpha_of(shifted) - truth).mean()


def test_paste_subject_keeps_the_subject_bit_for_bit():
    photo, mask, _ = green_screen(128)
    generated = np.full_like(photo, 90)
    pasted = paste_subject(photo, mask, generated)
    assert np.array_equal(pasted[mask == 255], photo[mask == 255])
    assert np.array_equal(pasted[mask == 0], generated[mask == 0])
    assert pasted.dtype == np.uint8 and pasted.shape == photo.shape


def test_cover_crop_covers_any_shape_and_its_seed_decides():
    reference = data.coffee()
    for height, width in ((100, 300), (300, 100), (1000, 1000), (7, 5)):
        crop = cover_crop(reference, height, width, np.random.default_rng(1))
        assert crop.shape == (height, width, 3) and crop.dtype == np.uint8
    first = cover_crop(reference, 200, 200, np.random.default_rng(1))
    assert np.array_equal(first, cover_crop(reference, 200, 200, np.random.default_rng(1)))
    assert not np.array_equal(first, cover_crop(reference, 200, 200, np.random.default_rng(2)))
    # A grey reference with alpha is taken by its colour channels.
    assert cover_crop(np.dstack([reference, np.full(reference.shape[:2], 255, np.uint8)]), 50, 60, np.random.default_rng(0)).shape == (50, 60, 3)


def test_harmonize_moves_the_subject_partway_toward_the_background():
    _, mask, subject = green_screen(128)
    alpha = alpha_of(mask)
    blue = np.zeros((128, 128, 3), np.float32)
    blue[...] = (0.1, 0.2, 0.9)
    foreground = subject.astype(np.float32) / 255
    moved = harmonize(foreground, alpha, blue, 0.2)
    inside = mask == 255
    before = cv2.cvtColor(foreground, cv2.COLOR_RGB2LAB)[inside].mean(axis=0)
    after = cv2.cvtColor(moved, cv2.COLOR_RGB2LAB)[inside].mean(axis=0)
    target = cv2.cvtColor(blue, cv2.COLOR_RGB2LAB)[0, 0]
    # b* (yellow-blue) moves toward the blue background, by about a fifth of the way.
    share = (after[2] - before[2]) / (target[2] - before[2])
    assert 0.1 < share < 0.3
    assert np.array_equal(harmonize(foreground, alpha, blue, 0.0), foreground)


def test_the_contact_shadow_lies_under_the_subject():
    alpha = np.zeros((200, 200), np.float32)
    alpha[40:150, 70:130] = 1.0
    shadow = contact_shadow(alpha)
    assert shadow.max() > 0.5
    row, column = np.unravel_index(np.argmax(shadow), shadow.shape)
    assert 140 <= row <= 160 and 80 <= column <= 120
    assert shadow[:100].max() < 0.01
    assert contact_shadow(np.zeros((10, 10), np.float32)).max() == 0


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_strength_is_how_far_the_old_background_gives_way(strength: float):
    photo, mask, _ = green_screen(128)
    red = np.zeros_like(photo)
    red[...] = (200, 30, 40)
    steps: list[float] = []
    output = CompositeEngine().replace(photo, mask, red, seeds=(1,), strength=strength, on_step=steps.append)[0]
    background = mask == 0
    # Far from the subject (no shadow there): the old green and the new red mix by strength.
    corner = output[:10, :10].reshape(-1, 3).mean(axis=0)
    expected = strength * np.array([200, 30, 40]) + (1 - strength) * GREEN
    assert np.abs(corner - expected).max() < 3
    assert steps == [1.0]
    if strength == 0.0:
        assert np.array_equal(output, photo)
    assert background.any()


def test_a_cut_outs_own_alpha_is_taken_as_it_is():
    """A cut-out's partial transparency (a baked-in shadow, glass) is kept: no settling, no guided filter."""
    photo, mask, _ = green_screen(128)
    mask = mask.copy()
    mask[:20, :20] = 100  # far from the outline: a predicted mask would be settled to 0 there
    assert np.array_equal(cut_out(photo, mask, refine=False).alpha, alpha_of(mask))
    assert np.all(cut_out(photo, mask).alpha[:20, :20] == 0.0)
    kept = CompositeEngine().replace(photo, mask, np.zeros_like(photo), seeds=(1,), strength=1.0, refine=False)[0]
    assert kept[5:15, 5:15].mean() > 10


def test_the_adapters_reference_is_bounded():
    assert adapter_reference(np.zeros((1, 4000, 3), np.uint8)).shape == (1, 2, 3)
    assert adapter_reference(np.zeros((3000, 1000, 4), np.uint8)).shape == (448, 224, 3)
    assert adapter_reference(np.zeros((100, 150, 3), np.uint8)).shape == (100, 150, 3)


def test_a_cut_out_carries_nothing_of_the_removed_background():
    photo, mask, subject = green_screen()
    rgba = cut_out_rgba(photo, mask)
    assert rgba.shape == (*mask.shape, 4) and rgba.dtype == np.uint8
    assert np.array_equal(rgba[..., 3], mask)
    # Clear pixels are (0, 0, 0, 0): dropping the alpha channel shows black, not the old background.
    assert (mask == 0).mean() > 0.3
    assert not rgba[mask == 0].any()
    # Solid pixels are the photo's own, bit for bit.
    solid = mask == 255
    assert np.array_equal(rgba[solid][:, :3], photo[solid])
    # The fringe's colour is the subject's, the green screen taken out of it.
    fringe = fringe_of(mask)
    colours = rgba[fringe][:, :3].astype(np.float32)
    to_subject = np.linalg.norm(colours - subject[fringe], axis=1).mean()
    to_screen = np.linalg.norm(colours - GREEN, axis=1).mean()
    assert to_subject < 0.5 * to_screen
    photo_to_subject = np.linalg.norm(photo[fringe].astype(np.float32) - subject[fringe], axis=1).mean()
    assert to_subject < 0.6 * photo_to_subject


def test_a_large_cut_out_takes_its_fringe_from_a_reduced_estimate_and_stays_as_clean():
    """Past ESTIMATE_SIDE the means come from a reduced copy: the fringe must come out as clean as at full size."""
    photo, mask, subject = green_screen(2400)
    fringe = fringe_of(mask)
    large = cut_out_rgba(photo, mask)[fringe][:, :3].astype(np.float32)
    error = np.linalg.norm(large - subject[fringe], axis=1).mean()
    small_photo, small_mask, small_subject = green_screen(800)
    small_fringe = fringe_of(small_mask)
    small = cut_out_rgba(small_photo, small_mask)[small_fringe][:, :3].astype(np.float32)
    small_error = np.linalg.norm(small - small_subject[small_fringe], axis=1).mean()
    assert error < 1.3 * small_error, (error, small_error)
    assert not cut_out_rgba(photo, mask)[mask == 0].any()
