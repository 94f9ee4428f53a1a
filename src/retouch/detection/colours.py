"""Colour names of an object's own pixels, judged in CIE Lab (perceptual), not in RGB.

"white horse" keeps the horses whose refined mask is mostly white: every pixel of the mask gets
one colour name from its lightness, chroma and hue, and an object has a colour when that name is
its most common one, or holds at least `MIN_SHARE` of its pixels (a white horse in shade is part
grey, a red car also shows black tyres and glass). A red car is also red when its red is under a
third of its pixels: a chromatic colour is judged among the object's coloured pixels (at least
`MIN_CHROMATIC_SHARE` of it), white, grey and black among its colourless ones (when they are most of it).

White is also judged on the object's well-lit pixels alone, as a person judges it: a pale grey or
cream horse in sunlight is "white" to anyone, though most of its pixels are grey (shade, a grey
coat under a white sky) or faintly yellow. The brightest `LIT_SHARE` of its pixels must be light
(median lightness at least `WHITE_LIT_LIGHTNESS`) and nearly colourless (median chroma at most
`WHITE_LIT_CHROMA`); a mid-grey elephant or a tan horse stays what it is.

A person's colour is their clothes': "blue person" is judged with the skin-tone pixels left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COLOUR_NAMES = ("white", "gray", "black", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
MIN_SHARE = 0.35
ACHROMATIC = ("white", "gray", "black")
# Hue families by their upper hue bound (degrees, Lab): red runs from 350 through 0 to 50. Orange ends at
# 83, the Lab hue of sRGB (255, 191, 0), halfway between orange and yellow in sRGB hue: at 75 a lit
# orange fruit read yellow.
HUE_FAMILIES = ("red", "orange", "yellow", "green", "blue", "purple")
_HUE_BOUNDS = np.array([50.0, 83.0, 115.0, 200.0, 300.0, 350.0])
# A chromatic colour names an object whose coloured pixels (those not white, grey or black) are at
# least this share of it and mostly of that colour.
MIN_CHROMATIC_SHARE = 0.15
LIT_SHARE = 0.4
# Lab lightness 0..100: 64 is a mid-light grey (sRGB 155).
WHITE_LIT_LIGHTNESS = 64.0
# Lab chroma: ivory and cream are about 10 to 20; a tan or beige coat 25 and more.
WHITE_LIT_CHROMA = 22.0
# Skin, pale to dark, in Lab: hue 30-80 degrees, chroma 8-50, lightness from 15 (sRGB (225, 190, 170)
# is L 80, C 17, hue 54; (141, 85, 36) L 42, C 41, hue 65); pixel by pixel it is named orange or brown.
SKIN_HUE = (30.0, 80.0)
SKIN_CHROMA = (8.0, 50.0)
SKIN_LIGHTNESS = 15.0
SKIN_NAMES = ("orange", "brown", "pink")
MIN_CLOTHES_SHARE = 0.25
# Below this chroma (in Lab a*b* units) a pixel is achromatic: white, gray or black by lightness.
_ACHROMATIC_CHROMA = 14.0


def lightness_chroma_hue(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lab lightness (0..100), chroma and hue (degrees) of each pixel of an N x 3 (or H x W x 3) RGB uint8 array."""
    flat = np.ascontiguousarray(pixels.reshape(-1, 1, 3).astype(np.uint8))
    if len(flat) == 0:
        empty = np.empty(0, np.float32)
        return empty, empty, empty
    lab = cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    a_axis, b_axis = lab[:, 1] - 128.0, lab[:, 2] - 128.0
    return lab[:, 0] * (100.0 / 255.0), np.hypot(a_axis, b_axis), np.degrees(np.arctan2(b_axis, a_axis)) % 360.0


def hue_families(hue: np.ndarray) -> np.ndarray:
    """The index into HUE_FAMILIES of each hue (degrees): one table for the pixels' names and the lit judgement."""
    return np.searchsorted(_HUE_BOUNDS, hue, side="right") % len(HUE_FAMILIES)


def _names(lightness: np.ndarray, chroma: np.ndarray, hue: np.ndarray) -> np.ndarray:
    names = np.full(lightness.shape, COLOUR_NAMES.index("gray"), np.int8)

    def put(name: str, where: np.ndarray) -> None:
        names[where] = COLOUR_NAMES.index(name)

    achromatic = chroma < _ACHROMATIC_CHROMA
    put("white", achromatic & (lightness >= 70))
    put("black", achromatic & (lightness < 28))
    chromatic = ~achromatic
    family_names = np.array([COLOUR_NAMES.index(family) for family in HUE_FAMILIES], np.int8)
    names[chromatic] = family_names[hue_families(hue[chromatic])]
    dark = lightness < 50
    light = lightness >= 65
    # Pink is a light red or purple; brown a dark red, orange or yellow.
    put("pink", chromatic & light & ((hue >= 300) | (hue < 50)) & (chroma < 60))
    put("brown", chromatic & dark & (hue >= 20) & (hue < 115) & (chroma < 55))
    return names


def name_pixels(pixels: np.ndarray) -> np.ndarray:
    """Colour-name index (into COLOUR_NAMES) of each pixel of an N x 3 (or H x W x 3) RGB uint8 array."""
    return _names(*lightness_chroma_hue(pixels))


@dataclass(frozen=True)
class ObjectPixels:
    """An object's selected pixels in Lab terms, computed once for every judgement of its colour."""

    lightness: np.ndarray
    chroma: np.ndarray
    hue: np.ndarray
    names: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray) -> ObjectPixels:
        lightness, chroma, hue = lightness_chroma_hue(image[..., :3][mask >= 128])
        return cls(lightness, chroma, hue, _names(lightness, chroma, hue))

    def shares(self) -> dict[str, float]:
        if len(self.names) == 0:
            return {}
        counts = np.bincount(self.names, minlength=len(COLOUR_NAMES))
        return {name: float(count) / len(self.names) for name, count in zip(COLOUR_NAMES, counts, strict=True)}

    def lit_hue_family(self) -> str | None:
        """The most common hue family of the brightest LIT_SHARE of the pixels that have a colour; None when none has."""
        coloured = self.chroma >= _ACHROMATIC_CHROMA
        if not coloured.any():
            return None
        lightness, hue = self.lightness[coloured], self.hue[coloured]
        lit_hue = hue[lightness >= np.quantile(lightness, 1.0 - LIT_SHARE)]
        return HUE_FAMILIES[int(np.bincount(hue_families(lit_hue), minlength=len(HUE_FAMILIES)).argmax())]

    def looks_white_where_lit(self) -> bool:
        """Whether the brightest LIT_SHARE of the pixels are light and nearly colourless."""
        if len(self.lightness) == 0:
            return False
        lit = self.lightness >= np.quantile(self.lightness, 1.0 - LIT_SHARE)
        return float(np.median(self.lightness[lit])) >= WHITE_LIT_LIGHTNESS and float(np.median(self.chroma[lit])) <= WHITE_LIT_CHROMA


def colour_shares(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Share of each colour name among the pixels the mask selects (>= 128)."""
    return ObjectPixels.of(image, mask).shares()


def _skin(pixels: ObjectPixels) -> np.ndarray:
    """Pixels of a skin tone, pale to dark: an orange-to-yellow hue at a moderate chroma."""
    return (
        (pixels.hue >= SKIN_HUE[0])
        & (pixels.hue < SKIN_HUE[1])
        & (pixels.chroma >= SKIN_CHROMA[0])
        & (pixels.chroma <= SKIN_CHROMA[1])
        & (pixels.lightness >= SKIN_LIGHTNESS)
    )


def has_colour(image: np.ndarray, mask: np.ndarray, colour: str, person: bool = False) -> bool:
    """Whether a person would call the masked object ``colour``. A ``person``'s colour is their clothes':
    skin-tone pixels are left out (unless that leaves under `MIN_CLOTHES_SHARE`, or the colour is one that
    skin is named itself)."""
    pixels = ObjectPixels.of(image, mask)
    if person and colour not in SKIN_NAMES and len(pixels.names):
        clothes = ~_skin(pixels)
        if clothes.mean() >= MIN_CLOTHES_SHARE:
            pixels = ObjectPixels(pixels.lightness[clothes], pixels.chroma[clothes], pixels.hue[clothes], pixels.names[clothes])
    shares = pixels.shares()
    if not shares:
        return False
    dominant = max(shares, key=lambda name: shares[name])
    if dominant == colour or shares.get(colour, 0.0) >= MIN_SHARE:
        return True
    chromatic = {name: share for name, share in shares.items() if name not in ACHROMATIC}
    coloured = sum(chromatic.values())
    if colour not in ACHROMATIC:
        # A red car is red where it has a colour at all: its tyres, glass and shadows are black or grey.
        if coloured < MIN_CHROMATIC_SHARE:
            return False
        if max(chromatic, key=lambda name: chromatic[name]) == colour:
            return True
        # And where that colour is lit: its shaded red reads as brown, pixel by pixel.
        return colour in HUE_FAMILIES and pixels.lit_hue_family() == colour
    achromatic = {name: share for name, share in shares.items() if name in ACHROMATIC}
    if coloured < 0.5 and max(achromatic, key=lambda name: achromatic[name]) == colour:
        return True
    return colour == "white" and pixels.looks_white_where_lit()
