"""Colour names of an object's own pixels, judged in CIE Lab (perceptual), not in RGB.

"white horse" keeps the horses whose refined mask is mostly white: every pixel of the mask gets
one colour name from its lightness, chroma and hue, and an object has a colour when that name is
its most common one, or holds at least `MIN_SHARE` of its pixels (a white horse in shade is part
grey, a red car also shows black tyres and glass).
"""

from __future__ import annotations

import cv2
import numpy as np

COLOUR_NAMES = ("white", "gray", "black", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
MIN_SHARE = 0.35
# Below this chroma (in Lab a*b* units) a pixel is achromatic: white, gray or black by lightness.
_ACHROMATIC_CHROMA = 14.0


def name_pixels(pixels: np.ndarray) -> np.ndarray:
    """Colour-name index (into COLOUR_NAMES) of each pixel of an N x 3 (or H x W x 3) RGB uint8 array."""
    flat = np.ascontiguousarray(pixels.reshape(-1, 1, 3).astype(np.uint8))
    lab = cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    lightness = lab[:, 0] * (100.0 / 255.0)
    a_axis, b_axis = lab[:, 1] - 128.0, lab[:, 2] - 128.0
    chroma = np.hypot(a_axis, b_axis)
    hue = np.degrees(np.arctan2(b_axis, a_axis)) % 360.0
    names = np.full(lightness.shape, COLOUR_NAMES.index("gray"), np.int8)

    def put(name: str, where: np.ndarray) -> None:
        names[where] = COLOUR_NAMES.index(name)

    achromatic = chroma < _ACHROMATIC_CHROMA
    put("white", achromatic & (lightness >= 70))
    put("black", achromatic & (lightness < 28))
    chromatic = ~achromatic
    dark = lightness < 50
    light = lightness >= 65
    put("red", chromatic & ((hue >= 350) | (hue < 50)))
    put("orange", chromatic & (hue >= 50) & (hue < 75))
    put("yellow", chromatic & (hue >= 75) & (hue < 115))
    put("green", chromatic & (hue >= 115) & (hue < 200))
    put("blue", chromatic & (hue >= 200) & (hue < 300))
    put("purple", chromatic & (hue >= 300) & (hue < 350))
    # Pink is a light red or purple; brown a dark red, orange or yellow.
    put("pink", chromatic & light & ((hue >= 300) | (hue < 50)) & (chroma < 60))
    put("brown", chromatic & dark & (hue >= 20) & (hue < 115) & (chroma < 55))
    return names


def colour_shares(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Share of each colour name among the pixels the mask selects (>= 128)."""
    pixels = image[..., :3][mask >= 128]
    if len(pixels) == 0:
        return {}
    counts = np.bincount(name_pixels(pixels), minlength=len(COLOUR_NAMES))
    return {name: float(count) / len(pixels) for name, count in zip(COLOUR_NAMES, counts, strict=True)}


def has_colour(image: np.ndarray, mask: np.ndarray, colour: str) -> bool:
    shares = colour_shares(image, mask)
    if not shares:
        return False
    dominant = max(shares, key=lambda name: shares[name])
    return dominant == colour or shares.get(colour, 0.0) >= MIN_SHARE
