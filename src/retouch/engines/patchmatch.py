"""PatchMatch image completion: magic-eraser's weight-free default engine.

Barnes et al., "PatchMatch: A Randomized Correspondence Algorithm for Structural Image
Editing" (SIGGRAPH 2009), inside the multi-scale EM completion of Wexler et al., "Space-Time
Completion of Video" (PAMI 2007). A coarse-to-fine pyramid; at each level a nearest-neighbour
field (NNF) from every patch that overlaps the hole to a patch wholly outside it, then a vote
that rebuilds the hole from the matches, a few times over; the NNF, upsampled, rebuilds the
next level's hole before it is searched again.

What keeps a large fill from washing out into a pale, smooth blob (measured on the benchmark,
bench/magic_eraser.py): patches are compared in Lab with Newson et al.'s texture features
("Video Inpainting of Complex Scenes", 2014) as two more channels; the coarse levels vote
by weighted mean, the full-size level copies each pixel from its best patch wherever the
surroundings are textured; and the fill's color offset from its surroundings is measured on
the ring around the hole and corrected. The engine works on a crop around the mask
(retouch.imaging.crop) and changes only the hole's pixels. A crop larger than the working size
(a large hole in a phone photo) is completed at the working size and then once more at its own
resolution, from the working matches scaled up: the fill copies the photo's own full-resolution
pixels instead of an enlarged, softened working fill. The inner loops are Numba kernels
(patchmatch_kernels), compiled once and cached on disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from retouch.engines import patchmatch_kernels as kernels
from retouch.errors import InvalidInput
from retouch.imaging.crop import CropPlan, crop_around_mask, paste_back, shrink_mask
from retouch.imaging.masks import binarize

logger = logging.getLogger(__name__)

COLOR_SPACES = ("lab", "rgb")
FINEST_VOTES = ("adaptive", "best", "mean")
# The texture measure of PatchMatchEngine._texture_share: its window, and the mean lightness
# steps (Lab L) under which a region counts as smooth and over which as textured.
TEXTURE_WINDOW = 7
TEXTURE_SMOOTH = 1.0
TEXTURE_RICH = 4.0
# Wexler's spatial confidence: a pixel d pixels inside the hole counts CONFIDENCE_BASE ** -d,
# so the fill grows from the known edge inwards instead of the middle deciding for the edge.
CONFIDENCE_BASE = 1.3
# One fill at a time per process: Numba's workqueue threading layer (used where neither OpenMP
# nor TBB is installed) aborts the process when two threads launch parallel kernels at once,
# and the kernels already use every core, so two fills side by side would gain nothing.
_KERNEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class Fill:
    """A filled image and, for each hole pixel, the pixel it was copied from.

    ``sources`` is int32 H x W x 2 (y, x in the image), -1 outside the hole: the source of
    the heaviest patch over each pixel in the last vote, where the fill copies; in smooth
    regions the vote averages, and the source is the one that patch would have given. Pieces
    are the runs of neighbouring pixels copied from neighbouring sources; the benchmark's seam
    measure compares the steps between pieces with those inside them.
    """

    image: np.ndarray
    sources: np.ndarray


@dataclass
class _Level:
    """One pyramid level: its image (hole filled progressively), hole and NNF bookkeeping."""

    image: np.ndarray
    hole: np.ndarray
    is_target: np.ndarray
    source_ok: np.ndarray
    target_ys: np.ndarray
    target_xs: np.ndarray
    target_index: np.ndarray
    source_ys: np.ndarray
    source_xs: np.ndarray
    hole_ys: np.ndarray
    hole_xs: np.ndarray
    ring_ys: np.ndarray
    ring_xs: np.ndarray
    confidence: np.ndarray


class PatchMatchEngine:
    """Fills a masked hole from the rest of the image by PatchMatch and EM voting; no weights."""

    name = "patchmatch"

    def __init__(
        self,
        patch_size: int = 7,
        search_iterations: int = 2,
        coarse_em_iterations: int = 8,
        finest_em_iterations: int = 2,
        coarsest_hole_width: int = 12,
        max_side: int = 1024,
        margin: float = 1.0,
        min_margin: int = 32,
        seam_width: int = 3,
        color_space: str = "lab",
        texture_weight: float = 3.0,
        finest_vote: str = "adaptive",
        search_bands: int = 4,
        color_adaptation: bool = True,
        detail_em_iterations: int = 1,
        detail_search_window: int = 8,
    ) -> None:
        """Tuning of the completion; the defaults are what bench/magic_eraser.py measured best.

        patch_size: odd side of the compared patches. search_iterations: PatchMatch passes per
        EM round. coarse_em_iterations / finest_em_iterations: search-and-vote rounds per level
        (the coarse levels settle the layout and are cheap; the finest level costs most and
        only sharpens). coarsest_hole_width: the pyramid goes down until the hole is about
        this many pixels across. max_side, margin, min_margin: the crop around the mask (see
        crop_around_mask). seam_width: pixels inside the hole's edge over which the fill is
        blended into the original. color_space: "lab" or "rgb", where patches are compared
        and averaged. texture_weight: weight of the texture features (0 turns them off).
        finest_vote: how the full-size level rebuilds the hole: "best" copies each pixel from
        its heaviest patch, "mean" averages the patches (smooth, blurs texture), "adaptive"
        copies in texture and averages in smooth regions. search_bands: runs of targets searched in
        parallel; it changes the result a little, the thread count never does.
        color_adaptation: correct the fill's color offset from its surroundings.
        detail_em_iterations / detail_search_window: the search-and-vote rounds, and the widest
        random-search window in pixels, of the full-resolution pass over a crop that was shrunk
        to max_side (its matches come from the working size, so it only looks nearby).
        """
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size is {patch_size}; it must be a positive odd number")
        if color_space not in COLOR_SPACES:
            raise ValueError(f"color_space is {color_space!r}; use one of: {', '.join(COLOR_SPACES)}")
        if finest_vote not in FINEST_VOTES:
            raise ValueError(f"finest_vote is {finest_vote!r}; use one of: {', '.join(FINEST_VOTES)}")
        if min(search_iterations, coarse_em_iterations, finest_em_iterations, search_bands, detail_em_iterations, detail_search_window) < 1:
            raise ValueError(
                "search_iterations, coarse_em_iterations, finest_em_iterations, search_bands, "
                "detail_em_iterations and detail_search_window must be at least 1"
            )
        if max_side < 1 or margin < 0 or min_margin < 0:
            raise ValueError(f"max_side {max_side} must be >= 1, margin {margin} and min_margin {min_margin} >= 0")
        if coarsest_hole_width < 1 or seam_width < 0:
            raise ValueError(f"coarsest_hole_width {coarsest_hole_width} must be >= 1 and seam_width {seam_width} >= 0")
        self.patch_size = patch_size
        self.search_iterations = search_iterations
        self.coarse_em_iterations = coarse_em_iterations
        self.finest_em_iterations = finest_em_iterations
        self.coarsest_hole_width = coarsest_hole_width
        self.max_side = max_side
        self.margin = margin
        self.min_margin = min_margin
        self.seam_width = seam_width
        self.color_space = color_space
        self.texture_weight = texture_weight
        self.finest_vote = finest_vote
        self.search_bands = search_bands
        self.color_adaptation = color_adaptation
        self.detail_em_iterations = detail_em_iterations
        self.detail_search_window = detail_search_window
        self.device: str | None = None
        self._setup_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether :meth:`setup` has compiled and warmed up the kernels."""
        return self.device is not None

    def setup(self, device: str) -> None:
        """Compile the Numba kernels (or load them from the on-disk cache) by filling a tiny image.

        PatchMatch runs on the CPU whatever ``device`` says; it is recorded as "cpu". Later
        calls do nothing, so the first request pays no compilation.
        """
        with self._setup_lock:
            if self.device is not None:
                return
            started = time.perf_counter()
            # Large enough for two pyramid levels, so that every kernel is compiled (or loaded).
            rows, columns = np.mgrid[0:96, 0:96]
            image = np.dstack([rows * 2, columns * 2, (rows + columns) % 16 * 8]).astype(np.uint8)
            mask = np.zeros((96, 96), dtype=np.uint8)
            mask[32:64, 32:64] = 255
            self.predict(image, mask, seed=0)
            self.device = "cpu"
            logger.info("PatchMatch kernels ready in %.2f s (device %r runs on the CPU)", time.perf_counter() - started, device)

    def predict(self, image: np.ndarray, mask: np.ndarray, seed: int, on_step: Callable[[float], None] | None = None) -> np.ndarray:
        """The image with the hole (mask >= 128) filled; RGB uint8, same size.

        Pixels outside the hole are bit-identical to the input. An empty mask returns a copy;
        a mask over the whole image raises InvalidInput. The same seed gives the same output.
        ``on_step(fraction)`` is called after each EM round (it may raise to stop the fill).
        """
        return self._fill(image, mask, seed, on_step)[0]

    def fill(self, image: np.ndarray, mask: np.ndarray, seed: int, on_step: Callable[[float], None] | None = None) -> Fill:
        """:meth:`predict`'s image with the source of every hole pixel (see :class:`Fill`)."""
        filled, plan, hole_sources = self._fill(image, mask, seed, on_step)
        # Built here, not in predict(): an image-sized array a request never reads (96 MB at 12 MP).
        sources = np.full((*image.shape[:2], 2), -1, dtype=np.int32)
        if plan is not None:
            sources[plan.top : plan.bottom, plan.left : plan.right][plan.mask > 0] = hole_sources + np.array([plan.top, plan.left], dtype=np.int32)
        return Fill(filled, sources)

    def _fill(
        self, image: np.ndarray, mask: np.ndarray, seed: int, on_step: Callable[[float], None] | None
    ) -> tuple[np.ndarray, CropPlan | None, np.ndarray]:
        """The filled image, the crop it was filled in (None when the mask selects nothing) and the crop's
        hole pixels' sources (N x 2 in the crop, row-major)."""
        _check_image(image)
        if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.shape != image.shape[:2]:
            described = f"shape {mask.shape}" if isinstance(mask, np.ndarray) else type(mask).__name__
            raise InvalidInput(f"the mask has {described}; it must be 2-D and the image's size {image.shape[:2]}")
        if mask.dtype != np.uint8 and mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.floating):
            raise InvalidInput(f"the mask has dtype {mask.dtype}; it must be uint8 (0..255), bool or float (0..1)")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidInput(f"seed is {seed!r}; PatchMatch takes a whole number >= 0")
        binary = binarize(mask)
        hole = binary > 0
        if not hole.any():
            return image.copy(), None, np.empty((0, 2), dtype=np.int32)
        if hole.all():
            raise InvalidInput("the mask covers the whole image: there is nothing left to fill from")
        # The box at full resolution; complete() shrinks it to max_side itself, so that its last
        # pass can copy full-resolution pixels.
        plan = crop_around_mask(image, binary, margin=self.margin, max_side=max(image.shape[:2]), min_margin=self.min_margin)
        working_scale = min(1.0, self.max_side / max(plan.box_shape))
        with _KERNEL_LOCK:
            filled, hole_sources = self._complete(plan.image, plan.mask > 0, int(seed), on_step, working_scale)
        return paste_back(image, plan, filled, binary, feather=self.seam_width), plan, hole_sources

    def complete(
        self, image: np.ndarray, hole: np.ndarray, seed: int, on_step: Callable[[float], None] | None = None, working_scale: float = 1.0
    ) -> np.ndarray:
        """``image`` (RGB uint8) with the ``hole`` (bool) pixels synthesised; no crop, no seam blend.

        Pixels outside the hole are returned unchanged. Raises InvalidInput when no pixel is
        left to copy from. ``working_scale`` < 1 completes the image shrunk by that factor first,
        then refines the fill at the image's own size.
        """
        return self._complete(image, hole, seed, on_step, working_scale)[0]

    def _complete(
        self, image: np.ndarray, hole: np.ndarray, seed: int, on_step: Callable[[float], None] | None, working_scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`complete`'s image and the source (y, x) of each hole pixel, N x 2 in ``hole``'s row-major order."""
        if not hole.any():
            return image.copy(), np.empty((0, 2), dtype=np.int32)
        if hole.all():
            raise InvalidInput("the mask covers the whole image: there is nothing left to fill from")
        color = self._to_working(image)
        working = np.ascontiguousarray(np.concatenate([color, self._texture_features(color, hole)], axis=2))
        radius = self._radius(hole)
        # With ``detail`` the finest level is the full-resolution pass over a shrunk crop: it starts
        # from matches already settled at the working size, whatever the ratio of the two sizes.
        levels, detail = self._pyramid(working, hole, radius, working_scale)
        costs = [level.target_ys.size * self._rounds(depth, len(levels), detail) for depth, level in enumerate(levels)]
        coarse: _Level | None = None
        coarse_field: np.ndarray | None = None
        done_cost = 0.0
        for depth in range(len(levels) - 1, -1, -1):
            level = levels[depth]
            key = _key(seed, depth, 0)
            field = np.zeros((*level.hole.shape, 2), dtype=np.int32)
            # Averaged votes let the coarse levels settle the layout; at full size they would blur
            # wherever neighbouring matches disagree, so there texture is copied instead.
            vote_mode = self.finest_vote if depth == 0 else "mean"
            widest = self.detail_search_window if depth == 0 and detail else max(level.hole.shape)
            if coarse is None:
                kernels.onion_fill(level.image, level.hole)
                kernels.initialize_random(level.target_ys, level.target_xs, level.source_ys, level.source_xs, field, key)
            else:
                self._upsample_image(coarse, level)
                kernels.upsample_field(
                    coarse_field, coarse.is_target, level.target_ys, level.target_xs,
                    level.source_ok, level.source_ys, level.source_xs, field, key,
                    *self._ratios(level, coarse, depth == 0 and detail),
                )
                # Rebuild the hole from the upsampled matches before searching: searching against
                # the enlarged (blurred) coarse fill would pick smooth patches and wash it out.
                self._vote(level, field, level.confidence, radius, vote_mode)
            distances = np.full(level.hole.shape, np.inf, dtype=np.float32)
            kernels.compute_distances(level.image, level.target_ys, level.target_xs, field, distances, radius)
            rounds = self._rounds(depth, len(levels), detail)
            for em_round in range(rounds):
                # A random start needs more passes to converge than an upsampled one; the detail
                # pass's matches are already settled, one pass only aligns them.
                if depth == 0 and detail:
                    passes = 1
                else:
                    passes = self.search_iterations * (2 if coarse is None and em_round == 0 else 1)
                round_key = _key(seed, depth, em_round + 1)
                kernels.search(
                    level.image, level.target_ys, level.target_xs, level.target_index, level.source_ok,
                    field, distances, radius, passes, round_key, self.search_bands, widest,
                )
                weights = self._vote_weights(level, distances)
                if on_step is not None:
                    # A round costs about what its level's targets number.
                    on_step(min(1.0, (done_cost + costs[depth] * (em_round + 1) / rounds) / sum(costs)))
                if depth == 0 and em_round == rounds - 1:
                    hole_sources = self._final_vote(level, field, weights, radius, vote_mode)
                    break
                self._vote(level, field, weights, radius, vote_mode)
                kernels.compute_distances(level.image, level.target_ys, level.target_xs, field, distances, radius)
            done_cost += costs[depth]
            coarse, coarse_field = level, field
        return self._from_working(levels[0].image[:, :, :3], image, hole), hole_sources

    @staticmethod
    def _ratios(fine: _Level, coarse: _Level, detail: bool) -> tuple[float, float]:
        """How many fine pixels one coarse pixel spans (y, x): 2 between halved levels (fine pixel
        (y, x) lies under coarse (y // 2, x // 2), an odd side included), the sizes' ratio above a shrunk one."""
        if not detail:
            return 2.0, 2.0
        return fine.hole.shape[0] / coarse.hole.shape[0], fine.hole.shape[1] / coarse.hole.shape[1]

    def _rounds(self, depth: int, count: int, detail: bool) -> int:
        """EM rounds at a level: the finest starts from a settled coarse one and only sharpens it, unless it is the only level.

        Over a shrunk crop the finest is the detail pass, and the working size is finest of the
        rest: it only sharpens what the coarser levels settled, as it did when it was the last.
        """
        if detail and depth == 0:
            return self.detail_em_iterations
        finest = 1 if detail else 0
        return self.finest_em_iterations if depth == finest and count > finest + 1 else self.coarse_em_iterations

    def _vote(
        self, level: _Level, field: np.ndarray, weights: np.ndarray, radius: int, mode: str, sources: np.ndarray | None = None
    ) -> None:
        """Rebuild the level's hole from the NNF (see :meth:`_votes`)."""
        level.image[level.hole_ys, level.hole_xs] = self._votes(level, level.hole_ys, level.hole_xs, field, weights, radius, mode, sources)

    def _votes(
        self,
        level: _Level,
        ys: np.ndarray,
        xs: np.ndarray,
        field: np.ndarray,
        weights: np.ndarray,
        radius: int,
        mode: str,
        sources: np.ndarray | None = None,
    ) -> np.ndarray:
        """What the patches covering pixels (ys, xs) say they are (N x C), by vote ``mode``.

        "mean": the weighted mean (smooth; blurs texture where neighbouring matches disagree).
        "best": the heaviest patch's pixel (keeps texture; in smooth areas the seams between
        copied pieces show as faint steps). "adaptive": per pixel, the best vote where the best
        vote's surroundings are textured, the mean where they are smooth, blended in between.
        ``sources``: the pixels' best sources (:meth:`_sources`), when the caller has them already.
        """
        channels = level.image.shape[2]
        if mode == "best":
            if sources is None:
                sources = self._sources(level, ys, xs, field, weights, radius)
            return level.image[sources[:, 0], sources[:, 1]]
        if mode == "mean":
            votes = np.empty((ys.size, channels), dtype=np.float32)
            kernels.mean_votes(level.image, ys, xs, level.is_target, field, weights, radius, votes)
            return votes
        best = self._votes(level, ys, xs, field, weights, radius, "best", sources)
        mean = self._votes(level, ys, xs, field, weights, radius, "mean")
        share = self._texture_share(level, ys, xs, best)[:, None]
        return share * best + (1.0 - share) * mean

    @staticmethod
    def _sources(level: _Level, ys: np.ndarray, xs: np.ndarray, field: np.ndarray, weights: np.ndarray, radius: int) -> np.ndarray:
        """The pixel (y, x) the heaviest patch over each of (ys, xs) copies there (N x 2 int32)."""
        sources = np.empty((ys.size, 2), dtype=np.int32)
        kernels.best_sources(ys, xs, level.is_target, field, weights, radius, sources)
        return sources

    def _texture_share(self, level: _Level, ys: np.ndarray, xs: np.ndarray, values: np.ndarray) -> np.ndarray:
        """0 where the lightness around each pixel, with ``values`` written in, is smooth; 1 where textured.

        The measure is the mean absolute lightness step (horizontal plus vertical, Lab L) over
        TEXTURE_WINDOW x TEXTURE_WINDOW pixels: about 0.3 in the benchmark's sky, 1 on its
        studio wall, 2 on concrete, 3 on brick, 7 to 13 in grass, gravel and wood grain. A seam
        between two copied pieces of a smooth wall is a single step of 2 or 3, which the window
        dilutes under the smooth limit.
        """
        pad = TEXTURE_WINDOW
        height, width = level.hole.shape
        top, left = max(0, int(ys.min()) - pad), max(0, int(xs.min()) - pad)
        bottom, right = min(height, int(ys.max()) + pad + 1), min(width, int(xs.max()) + pad + 1)
        window = level.image[top:bottom, left:right, :3].copy()
        window[ys - top, xs - left] = values[:, :3]
        lightness = self._lightness(window)
        steps = np.zeros_like(lightness)
        steps[:, :-1] += np.abs(np.diff(lightness, axis=1))
        steps[:-1, :] += np.abs(np.diff(lightness, axis=0))
        texture = cv2.blur(steps, (TEXTURE_WINDOW, TEXTURE_WINDOW))[ys - top, xs - left]
        scale = 1.0 if self.color_space == "lab" else 2.55
        smooth, rich = TEXTURE_SMOOTH * scale, TEXTURE_RICH * scale
        return np.clip((texture - smooth) / (rich - smooth), 0.0, 1.0).astype(np.float32)

    def _lightness(self, color: np.ndarray) -> np.ndarray:
        """Lab's L, or Rec. 601 luma in RGB: both on the scale of the color channels they come from."""
        if self.color_space == "lab":
            return np.ascontiguousarray(color[:, :, 0])
        return color @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def _final_vote(self, level: _Level, field: np.ndarray, weights: np.ndarray, radius: int, mode: str) -> np.ndarray:
        """The last vote at full size, then Content-Aware-Fill-style color adaptation; the hole pixels' sources.

        Patches copied from elsewhere can be slightly lighter or of another tint than the
        hole's surroundings (a sky's gradient, a wall's uneven light), which shows as a faint
        blotch. The same vote, run on the known ring around the hole that the patches also
        cover, says by how much the copies are off there; that difference, smoothed and
        interpolated smoothly across the hole, is added to the fill.
        """
        sources = self._sources(level, level.hole_ys, level.hole_xs, field, weights, radius)
        self._vote(level, field, weights, radius, mode, sources)
        if not self.color_adaptation:
            return sources
        ring_ys, ring_xs = level.ring_ys, level.ring_xs
        if ring_ys.size == 0:
            return sources
        copied = self._votes(level, ring_ys, ring_xs, field, weights, radius, mode)
        smoothing = 2.0 * (2 * radius + 1)
        # The ring encloses the hole, so a window around it (with room for the smoothing) is
        # all the interpolation needs; the rest of the crop is context for the search only.
        pad = int(np.ceil(1.5 * smoothing))
        height, width = level.hole.shape
        top, left = max(0, int(ring_ys.min()) - pad), max(0, int(ring_xs.min()) - pad)
        bottom, right = min(height, int(ring_ys.max()) + pad + 1), min(width, int(ring_xs.max()) + pad + 1)
        offsets = np.zeros((bottom - top, right - left, 3), dtype=np.float32)
        known = np.zeros((bottom - top, right - left), dtype=np.float32)
        offsets[ring_ys - top, ring_xs - left] = level.image[ring_ys, ring_xs, :3] - copied[:, :3]
        known[ring_ys - top, ring_xs - left] = 1.0
        correction = _membrane(offsets, known, smoothing)
        level.image[level.hole_ys, level.hole_xs, :3] += correction[level.hole_ys - top, level.hole_xs - left]
        return sources

    def _texture_features(self, color: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """Newson et al.'s texture features: mean absolute horizontal and vertical lightness gradients.

        Averaged down the pyramid with the color, they tell a coarse level which regions are
        textured at full resolution, where the coarse image itself looks smooth everywhere; the
        search then stops preferring flat source patches, whose average is what washes a large
        fill out. Computed from known pixels only; the hole's are rebuilt by the vote.
        """
        lightness = self._lightness(color)
        known = (~hole).astype(np.float32)
        features = np.zeros((*hole.shape, 2), dtype=np.float32)
        if self.texture_weight == 0:
            return features
        for axis in range(2):
            difference = np.abs(np.diff(lightness, axis=axis))
            valid = known[1:, :] * known[:-1, :] if axis == 0 else known[:, 1:] * known[:, :-1]
            gradient = np.zeros_like(lightness)
            weight = np.zeros_like(lightness)
            if axis == 0:
                gradient[:-1, :] = difference * valid
                weight[:-1, :] = valid
            else:
                gradient[:, :-1] = difference * valid
                weight[:, :-1] = valid
            summed = cv2.boxFilter(gradient, -1, (3, 3), normalize=False)
            counted = cv2.boxFilter(weight, -1, (3, 3), normalize=False)
            features[:, :, axis] = self.texture_weight * summed / np.maximum(counted, 1.0)
        return features

    def _radius(self, hole: np.ndarray) -> int:
        """Half the patch side, shrunk when the image or the known area is too small for it."""
        height, width = hole.shape
        radius = self.patch_size // 2
        while radius > 0:
            side = 2 * radius + 1
            if side <= min(height, width):
                grown = cv2.dilate(hole.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
                if not grown[radius : height - radius, radius : width - radius].all():
                    return radius
            radius -= 1
        return 0

    def _pyramid(self, working: np.ndarray, hole: np.ndarray, radius: int, working_scale: float) -> tuple[list[_Level], bool]:
        """Levels from full size down until the hole is about coarsest_hole_width across, and whether the second is shrunk.

        With ``working_scale`` < 1 the second level is the image shrunk by that factor (the
        working size), the rest halve from there. A level is also never smaller than four
        patches a side, nor without a source patch.
        """
        finest = self._geometry(working, hole, radius)
        if finest is None:
            raise InvalidInput("the mask leaves too little of the image to fill from; make it smaller")
        levels = [finest]
        thickness = 2.0 * float(cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE).max())
        minimum_side = 4 * (2 * radius + 1)
        scale = 1.0
        detail = False
        if working_scale < 1.0:
            shrunk = self._shrink(working, hole, working_scale, radius)
            if shrunk is not None:
                levels.append(shrunk)
                scale, detail = working_scale, True
        while thickness * scale / 2 >= self.coarsest_hole_width:
            finer = levels[-1]
            height, width = finer.hole.shape
            if min((height + 1) // 2, (width + 1) // 2) < minimum_side:
                break
            known = (~finer.hole).astype(np.float32)
            # Exact 2 x 2 blocks (not cv2.resize, which takes at most 4 channels) keep fine pixel
            # (y, x) under coarse pixel (y // 2, x // 2), which the NNF upsampling relies on; the
            # hole's own pixels are left out of the averages.
            coarse_hole = _reduce(finer.hole.astype(np.float32)) > 0
            weight = _reduce(known)
            coarse_image = _reduce(finer.image * known[:, :, None]) / np.maximum(weight, 1e-6)[:, :, None]
            coarse = self._geometry(coarse_image, coarse_hole, radius)
            if coarse is None:
                break
            levels.append(coarse)
            scale /= 2
        return levels, detail

    def _shrink(self, working: np.ndarray, hole: np.ndarray, working_scale: float, radius: int) -> _Level | None:
        """The working-size level of a crop larger than max_side (INTER_AREA), its hole conservative.

        The hole is :func:`shrink_mask`'s, the crop's own rule: every shrunk pixel whose value mixes
        in what is being removed is hole.
        """
        height, width = hole.shape
        size = (max(1, round(width * working_scale)), max(1, round(height * working_scale)))
        # OpenCV's area resampling takes at most four channels: color and texture features apart.
        shrunk_image = np.concatenate(
            [cv2.resize(np.ascontiguousarray(working[:, :, part]), size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
             for part in (slice(0, 3), slice(3, None))],
            axis=2,
        )
        return self._geometry(shrunk_image, shrink_mask(hole, size) > 0, radius)

    @staticmethod
    def _geometry(image: np.ndarray, hole: np.ndarray, radius: int) -> _Level | None:
        """Targets, sources and confidences of one level; None when it has no source patch."""
        height, width = hole.shape
        side = 2 * radius + 1
        grown = cv2.dilate(hole.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
        interior = np.zeros_like(hole)
        interior[radius : height - radius, radius : width - radius] = True
        # Targets may be centred up to the image's edge (their patches are clipped there);
        # sources must lie wholly inside it.
        is_target = grown
        source_ok = ~grown & interior
        source_ys, source_xs = np.nonzero(source_ok)
        if source_ys.size == 0:
            return None
        target_ys, target_xs = np.nonzero(is_target)
        target_index = np.full(hole.shape, -1, dtype=np.int32)
        target_index[target_ys, target_xs] = np.arange(target_ys.size, dtype=np.int32)
        hole_ys, hole_xs = np.nonzero(hole)
        ring_ys, ring_xs = np.nonzero(grown & ~hole)
        inside = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return _Level(
            image=np.ascontiguousarray(image, dtype=np.float32),
            hole=hole,
            is_target=is_target,
            source_ok=source_ok,
            target_ys=target_ys.astype(np.int32),
            target_xs=target_xs.astype(np.int32),
            target_index=target_index,
            source_ys=source_ys.astype(np.int32),
            source_xs=source_xs.astype(np.int32),
            hole_ys=hole_ys.astype(np.int32),
            hole_xs=hole_xs.astype(np.int32),
            ring_ys=ring_ys.astype(np.int32),
            ring_xs=ring_xs.astype(np.int32),
            confidence=(np.power(CONFIDENCE_BASE, -inside) * _coverage(height, width, radius)).astype(np.float32),
        )

    @staticmethod
    def _vote_weights(level: _Level, distances: np.ndarray) -> np.ndarray:
        """Wexler's weights: patch similarity exp(-d / 2σ²), σ² the 75th percentile, times confidence."""
        target_distances = distances[level.is_target]
        scale = max(float(np.percentile(target_distances, 75)), 1e-6)
        return (np.exp(-distances / (2.0 * scale)) * level.confidence).astype(np.float32)

    @staticmethod
    def _upsample_image(coarse: _Level, fine: _Level) -> None:
        """Give the fine level's hole the coarse fill, enlarged, as the first guess."""
        height, width = fine.hole.shape
        enlarged = cv2.resize(coarse.image, (width, height), interpolation=cv2.INTER_LINEAR)
        fine.image[fine.hole] = enlarged.reshape(fine.image.shape)[fine.hole]

    def _to_working(self, image: np.ndarray) -> np.ndarray:
        scaled = image.astype(np.float32) / 255.0
        if self.color_space == "lab":
            return np.ascontiguousarray(cv2.cvtColor(scaled, cv2.COLOR_RGB2Lab))
        return np.ascontiguousarray(scaled * 255.0)

    def _from_working(self, working: np.ndarray, original: np.ndarray, hole: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(working, cv2.COLOR_Lab2RGB) * 255.0 if self.color_space == "lab" else working
        result = original.copy()
        result[hole] = np.clip(np.rint(rgb[hole]), 0, 255).astype(np.uint8)
        return result


def _coverage(height: int, width: int, radius: int) -> np.ndarray:
    """The share of each pixel's patch that lies inside the image: 1 inside, less near the edges.

    It scales a vote's weight: a patch clipped by the image's edge is compared on fewer pixels,
    so its match is less certain, and a wrong one could otherwise sustain itself along the edge.
    """
    side = 2 * radius + 1
    rows = np.minimum(np.arange(height), radius) + np.minimum(np.arange(height)[::-1], radius) + 1
    columns = np.minimum(np.arange(width), radius) + np.minimum(np.arange(width)[::-1], radius) + 1
    return np.outer(rows, columns) / float(side * side)


def _membrane(values: np.ndarray, known: np.ndarray, smoothing: float) -> np.ndarray:
    """A smooth field through ``values`` where ``known`` is 1, everywhere: a pull-push interpolation.

    The values are first averaged over ``smoothing`` pixels (Gaussian, among known pixels
    only): in texture the differences are mostly the texture's own, whose local mean is near
    zero, and only a systematic offset should carry into the hole. Then a Gaussian pyramid is
    pulled down and pushed back up, each level keeping its own estimate where it has support
    and taking the coarser one elsewhere (Gortler et al.'s pull-push, The Lumigraph, 1996).
    """
    sigma = max(smoothing / 2.0, 0.5)
    blurred_values = cv2.GaussianBlur(values * known[:, :, None], (0, 0), sigma)
    blurred_known = cv2.GaussianBlur(known, (0, 0), sigma)
    values = np.where(known[:, :, None] > 0, blurred_values / np.maximum(blurred_known, 1e-6)[:, :, None], 0.0)
    values = (values * known[:, :, None]).astype(np.float32)
    pyramid = [(values, known.astype(np.float32))]
    while min(pyramid[-1][1].shape) > 2:
        level_values, level_known = pyramid[-1]
        pyramid.append((cv2.pyrDown(level_values), cv2.pyrDown(level_known)))
    level_values, level_known = pyramid[-1]
    estimate = level_values / np.maximum(level_known, 1e-6)[:, :, None]
    for level_values, level_known in reversed(pyramid[:-1]):
        height, width = level_known.shape
        enlarged = cv2.pyrUp(estimate, dstsize=(width, height))
        # Weight 1 on a fully supported pixel; the factor lets partly supported ones trust themselves.
        support = np.clip(level_known * 4.0, 0.0, 1.0)[:, :, None]
        estimate = support * (level_values / np.maximum(level_known, 1e-6)[:, :, None]) + (1.0 - support) * enlarged
    return estimate


def _reduce(array: np.ndarray) -> np.ndarray:
    """Sums over 2 x 2 blocks (an odd last row or column padded with zeros): ceil(h/2) x ceil(w/2)."""
    height, width = array.shape[:2]
    padded = np.zeros(((height + 1) // 2 * 2, (width + 1) // 2 * 2, *array.shape[2:]), dtype=np.float32)
    padded[:height, :width] = array
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, *array.shape[2:])
    return blocks.sum(axis=(1, 3))


def _key(seed: int, depth: int, em_round: int) -> np.uint64:
    """The random stream of one level and EM round: a SplitMix64 hash of the three, as NumPy uint64."""
    value = 0
    for part in (seed, depth, em_round):
        value = (value + part + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return np.uint64(value)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = f"shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidInput(f"PatchMatch needs an RGB uint8 H x W x 3 image, got {described}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInput(f"the image is empty (shape {image.shape})")
