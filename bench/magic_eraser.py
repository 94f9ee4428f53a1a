"""magic-eraser's PatchMatch engine against OpenCV's inpainting, on large holes over the photo set's textures.

Each case cuts a blob-shaped hole (5 % to 15 % of the image) over one texture rectangle of a
photo of the labelled set's checking part (bench/photos, read by bench/photoset.py: grass,
foliage, gravel, water, sand, fabric, wood, sky with and without clouds), in a window of the
photo resampled to 1024 x 1024 or to 4000 x 3000 (12 megapixels), fills it with retouch's
PatchMatch, and, at 1024 x 1024, with cv2.inpaint (TELEA and NS) and cv2.xphoto.inpaint
(FSR_FAST); each fill is scored against the original pixels inside the hole:

- seconds (PatchMatch after its warm-up, so Numba compilation is excluded);
- PSNR and SSIM (SSIM's map averaged over the hole);
- SWD: the sliced Wasserstein distance between the 7 x 7 patches of the fill and those of the
  original in the hole, averaged over full and half resolution (Karras et al., "Progressive
  Growing of GANs", 2018; here the descriptors of both sets are normalised by the original's
  per-channel mean and deviation, so that a colour shift counts);
- energy: the mean absolute Laplacian of the fill over the original's, inside the hole eroded
  by a few pixels (1.0 keeps the texture's strength; a smear scores near 0);
- colour: the Lab distance between the fill's mean colour and the original's in the hole (dE),
  and the ratio of their lightness deviations (L sd);
- seam (PatchMatch only): the mean colour step (Lab distance) between neighbouring fill pixels
  copied from pieces that do not continue each other, over the mean step between neighbours
  copied from one piece (1.0: the joins between pieces are as smooth as the pieces
  themselves; a visible seam scores well above). The engine says where each pixel came from
  (PatchMatchEngine.fill).

PSNR alone rewards blur, hence the texture goals. Pictures go to bench/out/magic_eraser/ (not
committed): per case a side-by-side of the hole's neighbourhood (original outlined, then each
fill) and a 100 % crop across the hole's edge (original beside the PatchMatch fill).

cv2.xphoto comes with opencv-contrib-python-headless, which must be the same version as the
opencv-python-headless it replaces (both install the cv2 package).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/magic_eraser.py [--repeats 3] [--only grass] [--option patch_size=9] [--split check]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from photoset import Photo, PhotoMissing, load, photos
from skimage.metrics import structural_similarity

from retouch.engines.patchmatch import Fill, PatchMatchEngine

OUT = Path(__file__).parent / "out" / "magic_eraser"
SEED = 1234
PATCH_SIDE = 7
SWD_DIRECTIONS = 256
SWD_MAX_PATCHES = 20000
ENERGY_ERODE = 4
INPAINT_RADIUS = 5
OPENCV_METHODS = ("telea", "ns", "fsr_fast")
# The hole covers at most this share of its texture rectangle, so that it lies over that texture.
HOLE_SHARE_OF_TEXTURE = 0.4
SIZES = {"1024": (1024, 1024), "12mp": (4000, 3000)}

GOAL_SECONDS = {"1024": 2.0, "12mp": 4.0}
GOAL_ENERGY = (0.85, 1.15)
GOAL_SEAM = 1.3
GOAL_SWD_FACTOR = 0.7
GOAL_PSNR_MARGIN = 1.0


@dataclass(frozen=True)
class Case:
    """A hole of ``fraction`` of the image over texture ``texture`` (its index) of photo ``photo``, at ``size``."""

    photo: str
    texture: int
    fraction: float
    size: str

    @property
    def name(self) -> str:
        return f"{self.photo.split('-')[-1]}#{self.texture} {round(self.fraction * 100)}% {self.size}"


# Every case lies on the checking part of the photo set (the fitting part's photos are for tuning).
CASES = (
    Case("debian-lomiri-wallpapers-16.04-seeding", 0, 0.10, "1024"),
    Case("debian-lomiri-wallpapers-16.04-dragonfly", 0, 0.10, "1024"),
    Case("pillow-heif-path", 1, 0.05, "1024"),
    Case("debian-plasma-workspace-wallpapers-bythewater", 0, 0.05, "1024"),
    Case("debian-lomiri-wallpapers-16.04-bridge", 2, 0.05, "1024"),
    Case("face-recognition-biden", 0, 0.05, "1024"),
    Case("debian-lomiri-wallpapers-16.04-bridge", 1, 0.08, "1024"),
    Case("debian-lomiri-wallpapers-16.04-friends", 0, 0.15, "1024"),
    Case("debian-plasma-workspace-wallpapers-kite", 0, 0.15, "1024"),
    Case("debian-lomiri-wallpapers-16.04-sunset", 0, 0.10, "1024"),
    Case("pillow-heif-path", 2, 0.10, "1024"),
    Case("debian-lomiri-wallpapers-16.04-dragonfly", 0, 0.15, "12mp"),
    Case("debian-lomiri-wallpapers-16.04-dragonfly", 1, 0.05, "12mp"),
    Case("debian-lomiri-wallpapers-16.04-seeding", 0, 0.05, "12mp"),
    Case("debian-lomiri-wallpapers-16.04-sunset", 0, 0.05, "12mp"),
    Case("debian-lomiri-wallpapers-16.04-sunset", 1, 0.05, "12mp"),
)

# For tuning the engine's parameters: the fitting part's photos, never the checking part's.
FIT_CASES = (
    Case("debian-lomiri-wallpapers-16.04-aitzgorri", 0, 0.10, "1024"),
    Case("debian-lomiri-wallpapers-16.04-aitzgorri", 2, 0.10, "1024"),
    Case("debian-lomiri-wallpapers-16.04-aitzgorri", 3, 0.05, "1024"),
    Case("debian-lomiri-wallpapers-16.04-life", 2, 0.05, "1024"),
    Case("debian-lomiri-wallpapers-16.04-life", 3, 0.05, "1024"),
    Case("debian-plasma-workspace-wallpapers-eveningglow", 0, 0.10, "1024"),
    Case("debian-plasma-workspace-wallpapers-eveningglow", 1, 0.05, "1024"),
    Case("pillow-heif-bird", 0, 0.10, "1024"),
    Case("face-recognition-obama", 0, 0.05, "1024"),
    Case("debian-lomiri-wallpapers-16.04-aitzgorri", 0, 0.05, "12mp"),
    Case("debian-lomiri-wallpapers-20.04-kleiber", 0, 0.15, "12mp"),
)


@dataclass(frozen=True)
class Scene:
    """A case made concrete: the image, the hole and the texture rectangle in the image's pixels."""

    case: Case
    kind: str
    image: np.ndarray
    mask: np.ndarray
    texture_box: tuple[int, int, int, int]
    scale: float

    @property
    def inside(self) -> float:
        """The share of the hole that lies over its texture rectangle."""
        x1, y1, x2, y2 = self.texture_box
        hole = self.mask > 0
        return float(hole[y1:y2, x1:x2].sum() / hole.sum())


def _window(photo_size: tuple[int, int], box: tuple[int, int, int, int], aspect: float, area: float) -> tuple[int, int, int, int]:
    """A window of ``aspect`` (width / height) and about ``area`` pixels centred on the box, shifted into the photo."""
    width, height = photo_size
    window_height = min(height, width / aspect, np.sqrt(area / aspect))
    window_width = window_height * aspect
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    left = round(min(max(centre_x - window_width / 2, 0), width - window_width))
    top = round(min(max(centre_y - window_height / 2, 0), height - window_height))
    return left, top, left + round(window_width), top + round(window_height)


def scene(case: Case, photo: Photo) -> Scene:
    """The case's image: a window around the texture resampled to the case's size, and its hole over the texture.

    At 1024 x 1024 the window is as large as the hole's share of the texture allows (the
    texture shrunk when the photo is large, so that it stays sharp); at 12 megapixels it is the
    largest 4:3 window of the photo.
    """
    texture = photo.textures[case.texture]
    out_width, out_height = SIZES[case.size]
    aspect = out_width / out_height
    x1, y1, x2, y2 = texture.box
    texture_area = (x2 - x1) * (y2 - y1)
    area = HOLE_SHARE_OF_TEXTURE * texture_area / case.fraction if case.size == "1024" else float("inf")
    left, top, right, bottom = _window((photo.width, photo.height), texture.box, aspect, area)
    picture = load(photo)[top:bottom, left:right]
    scale = out_width / (right - left)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    image = np.ascontiguousarray(cv2.resize(picture, (out_width, out_height), interpolation=interpolation))
    box = (
        int((x1 - left) * scale), int((y1 - top) * scale), int(np.ceil((x2 - left) * scale)), int(np.ceil((y2 - top) * scale))
    )
    box = (max(box[0], 0), max(box[1], 0), min(box[2], out_width), min(box[3], out_height))
    box_width, box_height = box[2] - box[0], box[3] - box[1]
    hole_aspect = float(np.clip(box_width / box_height, 1 / 6, 6))
    mask = blob_mask((out_height, out_width), ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2), case.fraction, hole_aspect, SEED)
    return Scene(case, texture.kind, image, mask, box, scale)


def blob_mask(shape: tuple[int, int], centre: tuple[int, int], fraction: float, aspect: float, seed: int) -> np.ndarray:
    """An irregular, object-like hole: an ellipse whose radius wobbles, scaled to ``fraction`` of the image."""
    height, width = shape
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    wobble = np.ones_like(angles)
    for harmonic in (2, 3, 5):
        wobble += rng.uniform(0.04, 0.10) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
    unit_x = np.sqrt(aspect) * wobble * np.cos(angles)
    unit_y = wobble * np.sin(angles) / np.sqrt(aspect)
    # Area of the unit outline (shoelace), so that the scaled outline covers the fraction asked.
    unit_area = 0.5 * abs(np.dot(unit_x, np.roll(unit_y, 1)) - np.dot(unit_y, np.roll(unit_x, 1)))
    scale = np.sqrt(fraction * height * width / unit_area)
    outline = np.stack([centre[0] + scale * unit_x, centre[1] + scale * unit_y], axis=1)
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(outline).astype(np.int32)], 255)
    return mask


def fill_opencv(method: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The OpenCV fill, with only the hole's pixels taken from it (FSR also nudges known pixels)."""
    if method == "telea":
        filled = cv2.inpaint(image, mask, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    elif method == "ns":
        filled = cv2.inpaint(image, mask, INPAINT_RADIUS, cv2.INPAINT_NS)
    elif method == "fsr_fast":
        filled = np.empty_like(image)
        # xphoto's mask marks the known pixels, the opposite of cv2.inpaint's.
        cv2.xphoto.inpaint(image, np.where(mask > 0, 0, 255).astype(np.uint8), filled, cv2.xphoto.INPAINT_FSR_FAST)
    else:
        raise ValueError(f"unknown OpenCV method {method!r}")
    result = image.copy()
    result[mask > 0] = filled[mask > 0]
    return result


def psnr(original: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> float:
    error = np.mean((original[hole].astype(np.float64) - filled[hole].astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(error, 1e-10)))


def ssim(original: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> float:
    _, similarity = structural_similarity(original, filled, channel_axis=2, data_range=255, full=True)
    return float(similarity.mean(axis=2)[hole].mean())


def patches(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The 7 x 7 x 3 patches (flattened, float) whose every pixel lies in ``inside``."""
    half = PATCH_SIDE // 2
    whole = cv2.erode(inside.astype(np.uint8), np.ones((PATCH_SIDE, PATCH_SIDE), np.uint8)) > 0
    whole[:half], whole[-half:], whole[:, :half], whole[:, -half:] = False, False, False, False
    ys, xs = np.nonzero(whole)
    windows = np.lib.stride_tricks.sliding_window_view(image.astype(np.float32), (PATCH_SIDE, PATCH_SIDE), axis=(0, 1))
    return windows[ys - half, xs - half].reshape(len(ys), -1)


def sliced_wasserstein(original: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> float:
    """SWD between the two images' patches inside the hole, at full and half resolution (mean)."""
    rng = np.random.default_rng(SEED)
    distances = []
    for level in range(2):
        if level == 1:
            size = (original.shape[1] // 2, original.shape[0] // 2)
            original = cv2.resize(original, size, interpolation=cv2.INTER_AREA)
            filled = cv2.resize(filled, size, interpolation=cv2.INTER_AREA)
            hole = cv2.resize(hole.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        reference, candidate = patches(original, hole), patches(filled, hole)
        if len(reference) == 0:
            continue
        if len(reference) > SWD_MAX_PATCHES:
            chosen = rng.choice(len(reference), SWD_MAX_PATCHES, replace=False)
            reference, candidate = reference[chosen], candidate[chosen]
        # Normalise per colour channel by the original's statistics (descriptors are y, x, channel).
        channels = reference.reshape(len(reference), -1, 3)
        mean, deviation = channels.mean(axis=(0, 1)), channels.std(axis=(0, 1)) + 1e-6
        reference = ((channels - mean) / deviation).reshape(len(reference), -1)
        candidate = ((candidate.reshape(len(candidate), -1, 3) - mean) / deviation).reshape(len(candidate), -1)
        directions = rng.standard_normal((reference.shape[1], SWD_DIRECTIONS)).astype(np.float32)
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        projected_reference = np.sort(reference @ directions, axis=0)
        projected_candidate = np.sort(candidate @ directions, axis=0)
        distances.append(float(np.mean(np.abs(projected_reference - projected_candidate))))
    return float(np.mean(distances))


def energy_ratio(original: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> float:
    inner = cv2.erode(hole.astype(np.uint8), np.ones((2 * ENERGY_ERODE + 1,) * 2, np.uint8)) > 0

    def energy(image: np.ndarray) -> float:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.abs(cv2.Laplacian(gray, cv2.CV_32F))[inner].mean())

    return energy(filled) / max(energy(original), 1e-6)


def lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def colour_statistics(original: np.ndarray, filled: np.ndarray, hole: np.ndarray) -> tuple[float, float]:
    """(Lab distance between the mean colours, fill's lightness deviation over the original's) in the hole."""
    before, after = lab(original)[hole], lab(filled)[hole]
    return float(np.linalg.norm(before.mean(axis=0) - after.mean(axis=0))), float(after[:, 0].std() / max(before[:, 0].std(), 1e-6))


def seam_ratio(filled: np.ndarray, sources: np.ndarray, hole: np.ndarray, margin: int) -> tuple[float, float]:
    """(seam measure, share of the fill's pixels on a join) inside the hole eroded by ``margin``.

    A pixel lies on a join between pieces when a neighbour's source is not its own source's
    neighbour the same way. The measure is the mean gradient magnitude (Sobel, Lab lightness)
    on the joins over the mean elsewhere in the fill: about 1 where joins fall where the
    texture's own steps are, well above where they draw lines of their own.
    """
    inner = cv2.erode(hole.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
    join = np.zeros_like(inner)
    for axis in range(2):
        first = [slice(None), slice(None)]
        second = [slice(None), slice(None)]
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        expected = np.zeros(2, dtype=np.int32)
        expected[axis] = 1
        breaks = ~np.all(sources[tuple(second)] - sources[tuple(first)] == expected, axis=2)
        join[tuple(first)] |= breaks
        join[tuple(second)] |= breaks
    lightness = lab(filled)[:, :, 0]
    gradient = np.hypot(cv2.Sobel(lightness, cv2.CV_32F, 1, 0), cv2.Sobel(lightness, cv2.CV_32F, 0, 1))
    on_join, elsewhere = gradient[join & inner], gradient[~join & inner]
    share = float(on_join.size / max(on_join.size + elsewhere.size, 1))
    if on_join.size == 0 or elsewhere.size == 0:
        return 1.0, share
    return float(on_join.mean() / max(elsewhere.mean(), 1e-6)), share


def around(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The hole's bounding box grown by ``pad``, clipped to the image."""
    ys, xs = np.nonzero(mask)
    return (
        slice(max(0, ys.min() - pad), min(mask.shape[0], ys.max() + pad + 1)),
        slice(max(0, xs.min() - pad), min(mask.shape[1], xs.max() + pad + 1)),
    )


def side_by_side(image: np.ndarray, mask: np.ndarray, fills: dict[str, np.ndarray], columns: int = 3, width: int = 1400) -> np.ndarray:
    """Original (hole outlined), then each fill, around the hole, labelled, in a grid at most ``width`` wide."""
    ys, xs = np.nonzero(mask)
    region = around(mask, max(24, int(np.ptp(ys) + np.ptp(xs)) // 6))
    outlined = image.copy()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, (255, 0, 0), max(1, image.shape[1] // 1000))
    panels = []
    shown = min(columns, 1 + len(fills))
    for label, picture in [("original", outlined), *fills.items()]:
        panel = picture[region]
        factor = min(1.0, width / shown / panel.shape[1])
        panel = np.ascontiguousarray(cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA))
        cv2.putText(panel, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2, cv2.LINE_AA)
        panels.append(np.pad(panel, ((0, 4), (0, 4), (0, 0)), constant_values=255))
    while len(panels) % shown:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.concatenate(panels[start : start + shown], axis=1) for start in range(0, len(panels), shown)]
    return np.concatenate(rows, axis=0)


def full_size_crop(image: np.ndarray, mask: np.ndarray, filled: np.ndarray, side: int = 600) -> np.ndarray:
    """A side x side crop at 100 % across the hole's left edge: original (outlined) beside the fill."""
    ys = np.nonzero(mask)[0]
    middle = int(np.median(ys))
    row = np.nonzero(mask[middle])[0]
    left = max(0, min(image.shape[1] - side, int(row.min()) - side // 4))
    top = max(0, min(image.shape[0] - side, middle - side // 2))
    outlined = image.copy()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, (255, 0, 0), 1)
    window = (slice(top, top + side), slice(left, left + side))
    return np.concatenate([outlined[window], np.full((min(side, image.shape[0]), 8, 3), 255, np.uint8), filled[window]], axis=1)


def scores(original: np.ndarray, filled: np.ndarray, mask: np.ndarray, fill: Fill | None, seam_margin: int) -> dict[str, float]:
    """Every score of one fill, computed on the hole's neighbourhood only (a 12-megapixel image is mostly far away)."""
    region = around(mask, 16)
    original, filled, mask = original[region], filled[region], mask[region]
    hole = mask > 0
    mean_distance, deviation = colour_statistics(original, filled, hole)
    result = {
        "psnr": psnr(original, filled, hole),
        "ssim": ssim(original, filled, hole),
        "swd": sliced_wasserstein(original, filled, hole),
        "energy": energy_ratio(original, filled, hole),
        "dE": mean_distance,
        "L sd": deviation,
    }
    if fill is not None:
        result["seam"], result["crossing"] = seam_ratio(filled, fill.sources[region], hole, seam_margin)
    return result


def measure(engine: PatchMatchEngine, scene_: Scene, repeats: int, opencv: bool) -> dict[str, dict[str, float]]:
    image, mask = scene_.image, scene_.mask
    hole = mask > 0
    fills: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    methods = ("patchmatch", *OPENCV_METHODS) if opencv and scene_.case.size == "1024" else ("patchmatch",)
    engine_fill: Fill | None = None
    for method in methods:
        times = []
        for _ in range(repeats if method == "patchmatch" else 1):
            started = time.perf_counter()
            if method == "patchmatch":
                engine_fill = engine.fill(image, mask, SEED)
                fills[method] = engine_fill.image
            else:
                fills[method] = fill_opencv(method, image, mask)
            times.append(time.perf_counter() - started)
        seconds[method] = statistics.median(times)
        # Only the hole may change: a broken paste-back would flatter every score.
        assert np.array_equal(fills[method][~hole], image[~hole]), f"{method} changed pixels outside the hole"
    OUT.mkdir(parents=True, exist_ok=True)
    stem = scene_.case.name.replace("#", "-").replace("%", "pct").replace(" ", "_")
    cv2.imwrite(str(OUT / f"{stem}_side.png"), cv2.cvtColor(side_by_side(image, mask, fills), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(OUT / f"{stem}_100pct.png"), cv2.cvtColor(full_size_crop(image, mask, fills["patchmatch"]), cv2.COLOR_RGB2BGR))
    results = {}
    for method, filled in fills.items():
        results[method] = {"seconds": seconds[method], **scores(image, filled, mask, engine_fill if method == "patchmatch" else None, engine.seam_width + 1)}
    return results


COLUMNS = (("seconds", 8, ".3f"), ("psnr", 7, ".2f"), ("ssim", 6, ".3f"), ("swd", 6, ".3f"), ("energy", 7, ".3f"), ("dE", 6, ".2f"), ("L sd", 6, ".3f"))


def table_row(name: str, row: dict[str, float], seam: bool) -> str:
    cells = "".join(f" {row[key]:{width}{form}}" for key, width, form in COLUMNS)
    if seam:
        cells += f" {row['seam']:6.3f} {row['crossing']:8.3f}"
    return f"  {name:<30}{cells}"


def table_header(seam: bool) -> str:
    cells = "".join(f" {key:>{width}}" for key, width, _ in COLUMNS)
    return f"  {'case':<30}{cells}" + (f" {'seam':>6} {'crossing':>8}" if seam else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="PatchMatch runs per 5 %% case (median time); others run once; default 3")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--split", choices=("check", "fit"), default="check", help="the photo set's part the cases come from")
    parser.add_argument("--no-opencv", action="store_true", help="PatchMatch alone (quicker, for tuning; no SWD or PSNR goal)")
    parser.add_argument(
        "--option", action="append", default=[], metavar="NAME=VALUE",
        help="a PatchMatchEngine keyword argument (Python literal), e.g. --option patch_size=9; repeatable",
    )
    arguments = parser.parse_args()
    if not hasattr(cv2, "xphoto"):
        print("cv2.xphoto is missing: install opencv-contrib-python-headless of the same version as opencv", file=sys.stderr)
        return 2
    options = {}
    for option in arguments.option:
        name, _, value = option.partition("=")
        options[name] = ast.literal_eval(value)
    engine = PatchMatchEngine(**options)
    started = time.perf_counter()
    engine.setup("cpu")
    print(f"PatchMatch setup (Numba compile or cache load, warm-up): {time.perf_counter() - started:.2f} s")
    by_id = {photo.id: photo for photo in photos(arguments.split)}
    results: dict[str, dict[str, dict[str, float]]] = {}
    cases = {}
    for case in CASES if arguments.split == "check" else FIT_CASES:
        if arguments.only not in case.name:
            continue
        if case.photo not in by_id:
            raise SystemExit(f"{case.photo} is not on the {arguments.split} part of the photo set")
        try:
            made = scene(case, by_id[case.photo])
        except PhotoMissing as missing:
            print(f"  {case.name}: skipped, {missing}", file=sys.stderr)
            continue
        repeats = arguments.repeats if case.fraction <= 0.05 else 1
        results[case.name] = measure(engine, made, repeats, opencv=not arguments.no_opencv)
        cases[case.name] = made
        row = results[case.name]["patchmatch"]
        print(
            f"  {case.name:<30} {made.kind:<16} photo x{made.scale:.2f}, {made.inside:.0%} over it: {row['seconds']:.2f} s, "
            f"energy {row['energy']:.3f}, seam {row['seam']:.3f}",
            flush=True,
        )
    if not results:
        print("no case ran", file=sys.stderr)
        return 2
    print("\npatchmatch, every case")
    print(table_header(seam=True))
    for name, result in results.items():
        print(table_row(name, result["patchmatch"], seam=True))
    compared = {name: result for name, result in results.items() if "ns" in result}
    for method in OPENCV_METHODS:
        print(f"\n{method}, the 1024 x 1024 cases")
        print(table_header(seam=False))
        for name, result in compared.items():
            print(table_row(name, result[method], seam=False))
    goals = []
    low, high = GOAL_ENERGY
    for name, result in results.items():
        row = result["patchmatch"]
        goals.append((f"{name}: energy {row['energy']:.3f} in {low}..{high}", low <= row["energy"] <= high))
        goals.append((f"{name}: seam {row['seam']:.3f} <= {GOAL_SEAM}", row["seam"] <= GOAL_SEAM))
        made = cases[name].case
        if made.fraction <= 0.05:
            goal = GOAL_SECONDS[made.size]
            goals.append((f"{name}: {row['seconds']:.2f} s <= {goal} s (median of {arguments.repeats})", row["seconds"] <= goal))
    if compared:
        methods = ("patchmatch", *OPENCV_METHODS)
        mean_swd = {method: statistics.fmean(result[method]["swd"] for result in compared.values()) for method in methods}
        mean_psnr = {method: statistics.fmean(result[method]["psnr"] for result in compared.values()) for method in methods}
        best_swd = min(OPENCV_METHODS, key=lambda method: mean_swd[method])
        best_psnr = max(OPENCV_METHODS, key=lambda method: mean_psnr[method])
        goals.append((
            f"mean SWD {mean_swd['patchmatch']:.3f} <= {GOAL_SWD_FACTOR} x {best_swd}'s {mean_swd[best_swd]:.3f} (1024 x 1024)",
            mean_swd["patchmatch"] <= GOAL_SWD_FACTOR * mean_swd[best_swd],
        ))
        goals.append((
            f"mean PSNR {mean_psnr['patchmatch']:.2f} dB >= {best_psnr}'s {mean_psnr[best_psnr]:.2f} - {GOAL_PSNR_MARGIN} dB (1024 x 1024)",
            mean_psnr["patchmatch"] >= mean_psnr[best_psnr] - GOAL_PSNR_MARGIN,
        ))
    print("\ngoals")
    for text, passed in goals:
        print(f"  {'PASS' if passed else 'FAIL'}  {text}")
    print(f"\npictures in {OUT}")
    return 0 if all(passed for _, passed in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
