"""magic-eraser's PatchMatch engine against OpenCV's inpainting, on holes cut over photo backgrounds.

Each case cuts a blob-shaped hole (2 % to 15 % of the image) over a background region of an
image that scikit-image ships (sky, walls, wood, concrete, grass, gravel), fills it with
retouch's PatchMatch, cv2.inpaint (TELEA and NS) and cv2.xphoto.inpaint (FSR_FAST), and scores
each fill against the original pixels inside the hole:

- seconds (PatchMatch after its warm-up, so Numba compilation is excluded);
- PSNR and SSIM (SSIM's map averaged over the hole);
- SWD: the sliced Wasserstein distance between the 7 x 7 patches of the fill and those of the
  original in the hole, averaged over full and half resolution (Karras et al., "Progressive
  Growing of GANs", 2018; here the descriptors of both sets are normalised by the original's
  per-channel mean and deviation, so that a colour shift counts);
- energy: the mean absolute Laplacian of the fill over the original's, inside the hole eroded
  by a few pixels (1.0 keeps the texture's strength; a smear scores near 0).

PSNR alone rewards blur, hence the texture goals. Side-by-side pictures (original with the hole
outlined, then each method) go to bench/out/, largest holes first. A last section times a
12-megapixel photo with a small hole against its crop alone, and with a large hole.

cv2.xphoto comes with opencv-contrib-python-headless, which must be the same version as the
opencv-python-headless it replaces (both install the cv2 package).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/magic_eraser.py [--repeats 5] [--only grass] [--option patch_size=9]
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data
from skimage.metrics import structural_similarity

from retouch.engines.patchmatch import PatchMatchEngine
from retouch.imaging.crop import crop_around_mask

OUT = Path(__file__).parent / "out"
SEED = 1234
PATCH_SIDE = 7
SWD_DIRECTIONS = 256
SWD_MAX_PATCHES = 20000
ENERGY_ERODE = 4
INPAINT_RADIUS = 5
OPENCV_METHODS = ("telea", "ns", "fsr_fast")

# The texture goals' photo: skimage's grass texture, tinted green and enlarged to 1024 x 1024.
GOAL_CASE = "grass-1024 5%"
GOAL_SECONDS = 2.0
GOAL_ENERGY = (0.85, 1.15)
GOAL_SWD_FACTOR = 0.7
GOAL_PSNR_MARGIN = 1.0


@dataclass(frozen=True)
class Case:
    """A hole of ``fraction`` of the image's area centred on (x, y), over ``region``."""

    name: str
    image: Callable[[], np.ndarray]
    centre: tuple[int, int]
    fraction: float
    aspect: float
    region: str


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def green_grass(side: int) -> np.ndarray:
    """skimage's grey grass texture tinted like a lawn, resized to side x side (INTER_CUBIC)."""
    grass = data.grass().astype(np.float32)
    tinted = np.stack([grass * 0.55, grass * 0.8, grass * 0.35], axis=2).astype(np.uint8)
    if side == tinted.shape[0]:
        return tinted
    return cv2.resize(tinted, (side, side), interpolation=cv2.INTER_CUBIC)


def motorcycle() -> np.ndarray:
    left, _, _ = data.stereo_motorcycle()
    return left


# Centres (x, y) in pixels, chosen by looking at each picture so that the hole lies over the
# background named; larger holes sit where the background is widest.
CASES = (
    Case("rocket 2%", data.rocket, (135, 60), 0.02, 1.6, "evening sky left of the rocket"),
    Case("rocket 10%", data.rocket, (330, 60), 0.10, 4.0, "evening sky above the rocket and the towers"),
    Case("astronaut 2%", data.astronaut, (340, 70), 0.02, 0.8, "mottled studio wall above the shoulder"),
    Case("coffee 5%", data.coffee, (535, 330), 0.05, 0.9, "wooden table, bottom right"),
    Case("coffee 2%", data.coffee, (520, 50), 0.02, 1.5, "wooden table, top right"),
    Case("chelsea 2%", data.chelsea, (420, 220), 0.02, 0.7, "blurred room behind the cat"),
    Case("motorcycle 2%", motorcycle, (70, 440), 0.02, 1.5, "concrete floor, bottom left"),
    Case("camera 5%", lambda: gray_to_rgb(data.camera()), (458, 385), 0.05, 0.6, "mown grass field right of the tripod"),
    Case("brick 10%", lambda: gray_to_rgb(data.brick()), (256, 256), 0.10, 1.0, "brick wall"),
    Case("gravel 5%", lambda: gray_to_rgb(data.gravel()), (256, 256), 0.05, 1.2, "gravel"),
    Case("grass 15%", lambda: green_grass(512), (256, 256), 0.15, 1.3, "grass and clover"),
    Case(GOAL_CASE, lambda: green_grass(1024), (512, 512), 0.05, 1.3, "grass and clover, enlarged"),
)


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


def side_by_side(image: np.ndarray, mask: np.ndarray, fills: dict[str, np.ndarray], columns: int = 3) -> np.ndarray:
    """Original (hole outlined), then each fill, cropped to the hole with a margin, labelled, in a grid."""
    ys, xs = np.nonzero(mask)
    pad = max(24, int(np.ptp(ys) + np.ptp(xs)) // 3)
    top, bottom = max(0, ys.min() - pad), min(image.shape[0], ys.max() + pad)
    left, right = max(0, xs.min() - pad), min(image.shape[1], xs.max() + pad)
    outlined = image.copy()
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outlined, contours, -1, (255, 0, 0), 1)
    # Small holes are enlarged (nearest neighbour, so pixels stay visible) to be judged by eye.
    zoom = max(1, 400 // (bottom - top))
    panels = []
    for label, picture in [("original", outlined), *fills.items()]:
        panel = np.ascontiguousarray(np.repeat(np.repeat(picture[top:bottom, left:right], zoom, axis=0), zoom, axis=1))
        cv2.putText(panel, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2, cv2.LINE_AA)
        panels.append(np.pad(panel, ((0, 4), (0, 4), (0, 0)), constant_values=255))
    while len(panels) % columns:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.concatenate(panels[start : start + columns], axis=1) for start in range(0, len(panels), columns)]
    return np.concatenate(rows, axis=0)


def measure(engine: PatchMatchEngine, case: Case, repeats: int) -> dict[str, dict[str, float]]:
    image = np.ascontiguousarray(case.image()[:, :, :3])
    mask = blob_mask(image.shape[:2], case.centre, case.fraction, case.aspect, SEED)
    hole = mask > 0
    fills: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for method in ("patchmatch", *OPENCV_METHODS):
        times = []
        for _ in range(repeats if method == "patchmatch" else 1):
            started = time.perf_counter()
            if method == "patchmatch":
                fills[method] = engine.predict(image, mask, SEED)
            else:
                fills[method] = fill_opencv(method, image, mask)
            times.append(time.perf_counter() - started)
        seconds[method] = statistics.median(times)
        # Only the hole may change: a broken paste-back would flatter every score.
        assert np.array_equal(fills[method][~hole], image[~hole]), f"{method} changed pixels outside the hole"
    picture = side_by_side(image, mask, fills)
    OUT.mkdir(exist_ok=True)
    file_name = f"{int(round(case.fraction * 100)):02d}pct_{case.name.split()[0]}.png"
    cv2.imwrite(str(OUT / file_name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return {
        method: {
            "seconds": seconds[method],
            "psnr": psnr(image, filled, hole),
            "ssim": ssim(image, filled, hole),
            "swd": sliced_wasserstein(image, filled, hole),
            "energy": energy_ratio(image, filled, hole),
        }
        for method, filled in fills.items()
    }


def table_row(name: str, row: dict[str, float]) -> str:
    return f"  {name:<16} {row['seconds']:8.3f} {row['psnr']:7.2f} {row['ssim']:6.3f} {row['swd']:6.3f} {row['energy']:7.3f}"


def large_photo_timing(engine: PatchMatchEngine, repeats: int) -> None:
    """Seconds for a 12-megapixel photo with a small hole against its crop alone, and with a large hole.

    The photo is coffee enlarged to 4032 x 3024; the holes lie over the table. The small hole's
    crop needs no shrinking, so the whole photo should cost about what the crop costs; the large
    one's crop is shrunk to the working size and the fill enlarged back.
    """
    photo = cv2.resize(data.coffee(), (4032, 3024), interpolation=cv2.INTER_CUBIC)
    small = blob_mask(photo.shape[:2], (3550, 2250), 0.005, 1.0, SEED)
    large = blob_mask(photo.shape[:2], (3450, 2150), 0.05, 0.8, SEED)
    plan = crop_around_mask(photo, small, margin=engine.margin, max_side=engine.max_side, min_margin=engine.min_margin)
    crop_image = np.ascontiguousarray(photo[plan.top : plan.bottom, plan.left : plan.right])
    crop_mask = np.ascontiguousarray(small[plan.top : plan.bottom, plan.left : plan.right])

    def median_seconds(image: np.ndarray, mask: np.ndarray) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            engine.predict(image, mask, SEED)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    whole, alone = median_seconds(photo, small), median_seconds(crop_image, crop_mask)
    shrunk = crop_around_mask(photo, large, margin=engine.margin, max_side=engine.max_side, min_margin=engine.min_margin)
    print("\n12-megapixel photo (coffee enlarged to 4032 x 3024), median of", repeats)
    print(f"  0.5% hole: {whole:.3f} s; its {plan.box_shape[1]} x {plan.box_shape[0]} crop alone: {alone:.3f} s")
    box_height, box_width = shrunk.box_shape
    working_height, working_width = shrunk.working_shape
    print(
        f"  5% hole: {median_seconds(photo, large):.3f} s "
        f"(crop {box_width} x {box_height} worked at {working_width} x {working_height})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="PatchMatch runs per case (median time); default 3")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    parser.add_argument("--skip-large", action="store_true", help="skip the 12-megapixel timing")
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
    cases = [case for case in CASES if arguments.only in case.name]
    results = {}
    for case in sorted(cases, key=lambda case: -case.fraction):
        results[case.name] = measure(engine, case, arguments.repeats)
        print(f"  {case.name:<16} over {case.region}", flush=True)
    methods = ("patchmatch", *OPENCV_METHODS)
    for method in methods:
        print(f"\n{method}")
        print(f"  {'case':<16} {'seconds':>8} {'PSNR':>7} {'SSIM':>6} {'SWD':>6} {'energy':>7}")
        for name, scores in results.items():
            print(table_row(name, scores[method]))
        keys = ("seconds", "psnr", "ssim", "swd", "energy")
        print(table_row("mean", {key: statistics.fmean(scores[method][key] for scores in results.values()) for key in keys}))
    print("\ngoals")
    mean_swd = {method: statistics.fmean(scores[method]["swd"] for scores in results.values()) for method in methods}
    mean_psnr = {method: statistics.fmean(scores[method]["psnr"] for scores in results.values()) for method in methods}
    best_swd = min(OPENCV_METHODS, key=lambda method: mean_swd[method])
    best_psnr = max(OPENCV_METHODS, key=lambda method: mean_psnr[method])
    goals = [
        (
            f"mean SWD {mean_swd['patchmatch']:.3f} <= {GOAL_SWD_FACTOR} x {best_swd}'s {mean_swd[best_swd]:.3f}",
            mean_swd["patchmatch"] <= GOAL_SWD_FACTOR * mean_swd[best_swd],
        ),
        (
            f"mean PSNR {mean_psnr['patchmatch']:.2f} dB >= {best_psnr}'s {mean_psnr[best_psnr]:.2f} - {GOAL_PSNR_MARGIN} dB",
            mean_psnr["patchmatch"] >= mean_psnr[best_psnr] - GOAL_PSNR_MARGIN,
        ),
    ]
    if GOAL_CASE in results:
        goal = results[GOAL_CASE]["patchmatch"]
        low, high = GOAL_ENERGY
        goals.append((f"{GOAL_CASE}: energy ratio {goal['energy']:.3f} in {low}..{high}", low <= goal["energy"] <= high))
        goals.append((f"{GOAL_CASE}: {goal['seconds']:.2f} s <= {GOAL_SECONDS} s (median)", goal["seconds"] <= GOAL_SECONDS))
    for text, passed in goals:
        print(f"  {'PASS' if passed else 'FAIL'}  {text}")
    if not arguments.skip_large:
        large_photo_timing(engine, arguments.repeats)
    print(f"\npictures in {OUT}")
    return 0 if all(passed for _, passed in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
