"""Colour names judged on an object's own pixels, in Lab."""

from __future__ import annotations

import numpy as np
import pytest

from retouch.detection.colours import colour_shares, has_colour

SWATCHES = {
    "white": (245, 245, 240),
    "gray": (128, 128, 130),
    "black": (15, 15, 18),
    "red": (210, 25, 30),
    "orange": (240, 140, 20),
    "yellow": (240, 215, 30),
    "green": (40, 170, 60),
    "blue": (30, 60, 200),
    "purple": (130, 40, 170),
    "pink": (250, 170, 195),
    "brown": (105, 65, 30),
}


@pytest.mark.parametrize("name", sorted(SWATCHES))
def test_plain_swatches_get_their_name(name):
    image = np.full((8, 8, 3), SWATCHES[name], np.uint8)
    mask = np.full((8, 8), 255, np.uint8)
    shares = colour_shares(image, mask)
    assert max(shares, key=lambda key: shares[key]) == name


def test_only_the_masked_pixels_count():
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, :5] = SWATCHES["white"]
    image[:, 5:] = SWATCHES["red"]
    mask = np.zeros((10, 10), np.uint8)
    mask[:, :5] = 255
    assert has_colour(image, mask, "white") and not has_colour(image, mask, "red")


def test_a_shaded_white_object_is_still_white():
    image = np.full((10, 10, 3), SWATCHES["white"], np.uint8)
    image[6:] = SWATCHES["gray"]  # 40 % in shadow
    mask = np.full((10, 10), 255, np.uint8)
    assert has_colour(image, mask, "white")


def test_empty_mask_has_no_colour():
    assert not has_colour(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), "black")


def _shaded(lit: tuple[int, int, int], shade: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 20 x 20 object lit from the left: a ramp from ``lit`` to ``shade`` across it."""
    ramp = np.linspace(0.0, 1.0, 20)[np.newaxis, :, np.newaxis]
    image = np.rint(np.array(lit) * (1 - ramp) + np.array(shade) * ramp).astype(np.uint8)
    return np.repeat(image, 20, axis=0), np.full((20, 20), 255, np.uint8)


@pytest.mark.parametrize(
    ("lit", "shade"),
    [
        ((190, 190, 188), (105, 105, 107)),  # a pale grey horse in sunlight: most of it grey
        ((238, 228, 200), (150, 140, 118)),  # cream, shaded
        ((175, 176, 180), (120, 120, 124)),  # light grey where lit, at the tolerance's near side
    ],
)
def test_a_light_object_is_white_where_it_is_lit(lit, shade):
    image, mask = _shaded(lit, shade)
    shares = colour_shares(image, mask)
    assert shares.get("white", 0.0) < 0.35, "the case must need the lit pixels: white is not already most of it"
    assert has_colour(image, mask, "white")


@pytest.mark.parametrize(
    ("lit", "shade", "is_also"),
    [
        ((135, 135, 138), (70, 70, 72), "gray"),  # a mid-grey elephant in the sun
        ((205, 160, 110), (120, 85, 50), "orange"),  # a tan horse: too much colour for white
        ((150, 150, 150), (150, 150, 150), "gray"),  # flat grey just below the lightness bound
    ],
)
def test_a_grey_or_tan_object_is_not_white(lit, shade, is_also):
    image, mask = _shaded(lit, shade)
    assert not has_colour(image, mask, "white")
    assert has_colour(image, mask, is_also)


def test_a_red_car_is_red_though_its_tyres_glass_and_shadow_are_most_of_it():
    image = np.full((10, 10, 3), SWATCHES["black"], np.uint8)
    image[:3] = SWATCHES["red"]  # 30 % red body
    image[3:5] = SWATCHES["gray"]  # glass, chrome
    image[9, :2] = SWATCHES["blue"]  # a reflection of the sky
    mask = np.full((10, 10), 255, np.uint8)
    assert has_colour(image, mask, "red") and not has_colour(image, mask, "blue")
    assert has_colour(image, mask, "black") and not has_colour(image, mask, "white")


def test_a_grey_car_is_grey_among_its_colourless_pixels():
    image = np.full((10, 10, 3), SWATCHES["gray"], np.uint8)
    image[:3] = SWATCHES["black"]
    image[3:6] = SWATCHES["white"]
    image[6, :2] = SWATCHES["orange"]  # an indicator light
    mask = np.full((10, 10), 255, np.uint8)
    assert has_colour(image, mask, "gray") and not has_colour(image, mask, "orange")


def test_a_few_coloured_pixels_do_not_name_a_grey_object():
    image = np.full((10, 10, 3), SWATCHES["gray"], np.uint8)
    image[0, :8] = SWATCHES["green"]  # 8 %: grass at its foot
    mask = np.full((10, 10), 255, np.uint8)
    assert not has_colour(image, mask, "green")


def test_a_red_car_in_shade_is_red_where_it_is_lit():
    image = np.full((10, 10, 3), (95, 38, 20), np.uint8)  # shaded red: dark, so brown pixel by pixel
    image[:4] = (205, 40, 35)  # its lit side
    mask = np.full((10, 10), 255, np.uint8)
    shares = colour_shares(image, mask)
    assert max(shares, key=lambda key: shares[key]) == "brown", "the case must need the lit pixels"
    assert has_colour(image, mask, "red") and has_colour(image, mask, "brown")
    assert not has_colour(image, mask, "orange")


def test_a_lit_orange_fruit_is_orange_not_yellow():
    image, mask = _shaded((245, 180, 40), (150, 90, 20))
    assert has_colour(image, mask, "orange") and not has_colour(image, mask, "yellow")
    gold, _ = _shaded((255, 215, 0), (170, 140, 0))
    assert has_colour(gold, mask, "yellow") and not has_colour(gold, mask, "orange")


def _person(shirt: tuple[int, int, int], skin: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A 20 x 20 person: face and arms of ``skin`` (70 %), a shirt of ``shirt`` (30 %)."""
    image = np.full((20, 20, 3), skin, np.uint8)
    image[8:14, :] = shirt
    return image, np.full((20, 20), 255, np.uint8)


@pytest.mark.parametrize("skin", [(225, 190, 170), (198, 134, 66), (141, 85, 36), (80, 52, 40)])
def test_a_persons_colour_is_their_clothes(skin):
    image, mask = _person(SWATCHES["blue"], skin)
    assert not has_colour(image, mask, "blue"), "the case must need the person rule: skin is most of it"
    assert has_colour(image, mask, "blue", person=True)
    assert not has_colour(image, mask, "red", person=True) and not has_colour(image, mask, "white", person=True)
    grey, _ = _person(SWATCHES["gray"], skin)
    assert has_colour(grey, mask, "gray", person=True) and not has_colour(grey, mask, "blue", person=True)


def test_a_person_in_skin_coloured_clothes_is_judged_on_every_pixel():
    # Brown and tan cloth cannot be told from skin in Lab: with nothing else left, nothing is left out.
    image, mask = _person((198, 134, 66), (225, 190, 170))
    assert has_colour(image, mask, "orange", person=True)
    assert not has_colour(image, mask, "blue", person=True) and not has_colour(image, mask, "green", person=True)
