"""Numba kernels of the PatchMatch image completion: the nearest-neighbour field search and the vote.

Images are float32 H x W x C (color, then texture features), C-contiguous. A patch is
(2 * radius + 1)² pixels around its centre. A nearest-neighbour field (NNF) is int32 H x W x 2:
for each target centre (a patch that overlaps the hole), the centre (y, x) of the source patch
it copies from; a source patch lies wholly inside the image and outside the hole. Only entries
at target centres are meaningful.

Randomness comes from a counter-based hash (SplitMix64) of a key and the target's index, not
from a generator whose state depends on the order of the calls: the output depends only on the
seed, whatever Numba's threading does.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_ONE = np.uint64(0xBF58476D1CE4E5B9)
_MIX_TWO = np.uint64(0x94D049BB133111EB)
_SHIFT_ONE = np.uint64(30)
_SHIFT_TWO = np.uint64(27)
_SHIFT_THREE = np.uint64(31)
_TOP_BITS = np.uint64(11)


@njit(cache=True, nogil=True)
def mix(value: np.uint64) -> np.uint64:
    """SplitMix64's finaliser: a well-spread 64-bit hash of ``value``."""
    value = (value ^ (value >> _SHIFT_ONE)) * _MIX_ONE
    value = (value ^ (value >> _SHIFT_TWO)) * _MIX_TWO
    return value ^ (value >> _SHIFT_THREE)


@njit(cache=True, nogil=True)
def _draw(state: np.uint64, bound: int) -> tuple[np.uint64, int]:
    """The next state and a uniform integer in 0..bound-1 from it."""
    state = state + _GOLDEN
    return state, int((mix(state) >> _TOP_BITS) % np.uint64(bound))


@njit(cache=True, nogil=True)
def patch_distance(image, target_y, target_x, source_y, source_x, radius, limit):
    """Sum of squared differences between two patches; stops early once it reaches ``limit``.

    A target patch may stick out of the image (a hole on the image's border needs targets
    centred right on it, or nothing anchors the fill to the known pixels along that border);
    only its pixels inside are compared, and the sum is scaled up to a whole patch so that
    distances stay comparable. Source patches always lie wholly inside the image. The early
    stop is checked per patch row: most candidates of the random search are far worse than the
    current match and are rejected after a row or two.
    """
    height, width, channels = image.shape
    top = max(-radius, -target_y)
    bottom = min(radius, height - 1 - target_y)
    left = max(-radius, -target_x)
    right = min(radius, width - 1 - target_x)
    side = 2 * radius + 1
    scale = (side * side) / ((bottom - top + 1) * (right - left + 1))
    total = 0.0
    for offset_y in range(top, bottom + 1):
        target_row = image[target_y + offset_y]
        source_row = image[source_y + offset_y]
        for offset_x in range(left, right + 1):
            target_pixel = target_row[target_x + offset_x]
            source_pixel = source_row[source_x + offset_x]
            for channel in range(channels):
                difference = target_pixel[channel] - source_pixel[channel]
                total += difference * difference
        if total * scale >= limit:
            return total * scale
    return total * scale


@njit(cache=True, nogil=True)
def initialize_random(target_ys, target_xs, source_ys, source_xs, nnf, key):
    """Point every target centre at a uniformly drawn source centre."""
    sources = source_ys.shape[0]
    for index in range(target_ys.shape[0]):
        state = mix(key ^ (np.uint64(index) * _GOLDEN))
        state, pick = _draw(state, sources)
        nnf[target_ys[index], target_xs[index], 0] = source_ys[pick]
        nnf[target_ys[index], target_xs[index], 1] = source_xs[pick]


@njit(cache=True, nogil=True, parallel=True)
def compute_distances(image, target_ys, target_xs, nnf, distances, radius):
    """The exact patch distance of every target's current match (after the image changed)."""
    for index in prange(target_ys.shape[0]):
        y = target_ys[index]
        x = target_xs[index]
        distances[y, x] = patch_distance(image, y, x, nnf[y, x, 0], nnf[y, x, 1], radius, np.inf)


@njit(cache=True, nogil=True, parallel=True)
def search(image, target_ys, target_xs, target_index, source_ok, nnf, distances, radius, iterations, key, bands, widest):
    """Improve the NNF in place with PatchMatch: propagation, then random search, per target.

    Odd iterations scan in reverse order and propagate from the right and below instead of the
    left and above. The random search tries one candidate per window, from the image's long
    side halving down to 1, around the current best match.

    The targets (raster order) are cut into ``bands`` runs searched in parallel. A band
    propagates only from targets of its own band, so no band reads what another is writing
    and the result does not depend on the threads' timing; the reverse scans cut half a band
    further on, so that good matches still cross every cut. ``target_index`` maps a pixel to its
    position in the target list, -1 for pixels that are no target. ``widest`` caps the first
    random-search window (a level whose matches came from a settled coarser one only needs to
    look nearby).
    """
    height, width = target_index.shape
    count = target_ys.shape[0]
    bands = max(1, min(bands, count))
    lowest_y, highest_y = radius, height - radius - 1
    lowest_x, highest_x = radius, width - radius - 1
    for iteration in range(iterations):
        step = 1 if iteration % 2 == 0 else -1
        shift = (iteration % 2) * (count // (2 * bands))
        iteration_key = mix(key ^ (np.uint64(iteration + 1) * _MIX_TWO))
        for band in prange(bands):
            first = band * count // bands
            last = (band + 1) * count // bands
            for order in range(last - first):
                relative = first + order if step == 1 else last - 1 - order
                index = (relative + shift) % count
                y = target_ys[index]
                x = target_xs[index]
                best_y = nnf[y, x, 0]
                best_x = nnf[y, x, 1]
                best = distances[y, x]
                # Propagation: the neighbour before this target in the scan, its match shifted by one pixel.
                for axis in range(2):
                    neighbour_y = y - step if axis == 0 else y
                    neighbour_x = x - step if axis == 1 else x
                    if not (0 <= neighbour_y < height and 0 <= neighbour_x < width):
                        continue
                    neighbour = target_index[neighbour_y, neighbour_x]
                    if neighbour < 0:
                        continue
                    neighbour_relative = (neighbour - shift) % count
                    if neighbour_relative < first or neighbour_relative >= last:
                        continue
                    candidate_y = nnf[neighbour_y, neighbour_x, 0] + (step if axis == 0 else 0)
                    candidate_x = nnf[neighbour_y, neighbour_x, 1] + (step if axis == 1 else 0)
                    if candidate_y == best_y and candidate_x == best_x:
                        continue
                    if candidate_y < lowest_y or candidate_y > highest_y or candidate_x < lowest_x or candidate_x > highest_x:
                        continue
                    if not source_ok[candidate_y, candidate_x]:
                        continue
                    distance = patch_distance(image, y, x, candidate_y, candidate_x, radius, best)
                    if distance < best:
                        best, best_y, best_x = distance, candidate_y, candidate_x
                # Random search around the best match, the window halving each try.
                state = mix(iteration_key ^ (np.uint64(index) * _GOLDEN))
                window = min(max(height, width), widest)
                while window >= 1:
                    low_y, high_y = max(lowest_y, best_y - window), min(highest_y, best_y + window)
                    low_x, high_x = max(lowest_x, best_x - window), min(highest_x, best_x + window)
                    state, draw_y = _draw(state, high_y - low_y + 1)
                    state, draw_x = _draw(state, high_x - low_x + 1)
                    candidate_y = low_y + draw_y
                    candidate_x = low_x + draw_x
                    window //= 2
                    if (candidate_y == best_y and candidate_x == best_x) or not source_ok[candidate_y, candidate_x]:
                        continue
                    distance = patch_distance(image, y, x, candidate_y, candidate_x, radius, best)
                    if distance < best:
                        best, best_y, best_x = distance, candidate_y, candidate_x
                nnf[y, x, 0] = best_y
                nnf[y, x, 1] = best_x
                distances[y, x] = best


@njit(cache=True, nogil=True, parallel=True)
def mean_votes(image, ys, xs, is_target, nnf, weights, radius, out):
    """The weighted mean of what the patches covering each pixel (ys, xs) copy there, into ``out``.

    A gather (each pixel reads the patches over it) rather than a scatter, so that pixels are
    independent and the parallel loop is deterministic. A pixel no target covers keeps its
    own value. The image is only read.
    """
    height, width, channels = image.shape
    for index in prange(ys.shape[0]):
        y = ys[index]
        x = xs[index]
        sums = np.zeros(channels, dtype=np.float64)
        total = 0.0
        for offset_y in range(-radius, radius + 1):
            centre_y = y - offset_y
            if centre_y < 0 or centre_y >= height:
                continue
            for offset_x in range(-radius, radius + 1):
                centre_x = x - offset_x
                if centre_x < 0 or centre_x >= width or not is_target[centre_y, centre_x]:
                    continue
                weight = weights[centre_y, centre_x]
                source = image[nnf[centre_y, centre_x, 0] + offset_y, nnf[centre_y, centre_x, 1] + offset_x]
                for channel in range(channels):
                    sums[channel] += weight * source[channel]
                total += weight
        for channel in range(channels):
            out[index, channel] = sums[channel] / total if total > 0.0 else image[y, x, channel]


@njit(cache=True, nogil=True, parallel=True)
def best_sources(ys, xs, is_target, nnf, weights, radius, out):
    """Where the single heaviest patch covering each pixel (ys, xs) copies it from, into ``out`` (N x 2, y and x).

    Averaging the overlapping patches blurs wherever neighbouring matches disagree; taking
    the best one keeps the source's texture at full strength. A pixel no target covers is its
    own source. The pixels may lie in or outside the hole.
    """
    height, width = is_target.shape
    for index in prange(ys.shape[0]):
        y = ys[index]
        x = xs[index]
        best = -1.0
        best_y = y
        best_x = x
        for offset_y in range(-radius, radius + 1):
            centre_y = y - offset_y
            if centre_y < 0 or centre_y >= height:
                continue
            for offset_x in range(-radius, radius + 1):
                centre_x = x - offset_x
                if centre_x < 0 or centre_x >= width or not is_target[centre_y, centre_x]:
                    continue
                if weights[centre_y, centre_x] > best:
                    best = weights[centre_y, centre_x]
                    best_y = nnf[centre_y, centre_x, 0] + offset_y
                    best_x = nnf[centre_y, centre_x, 1] + offset_x
        out[index, 0] = best_y
        out[index, 1] = best_x


@njit(cache=True, nogil=True)
def upsample_field(coarse_nnf, coarse_is_target, target_ys, target_xs, source_ok, source_ys, source_xs, nnf, key, ratio_y, ratio_x):
    """The fine level's starting NNF from the coarse one: the parent's offset, scaled by the levels' size ratio.

    A fine pixel's parent is the coarse pixel under it (y // ratio); the parent's match lies
    some offset away, and the fine pixel starts that offset, times the ratio, away from
    itself. With a ratio of 2 this is the parent's match doubled, plus the pixel's place in
    its 2 x 2 block. A target whose parent was no target, or whose scaled match is no valid
    source here (the fine hole's border differs), gets a random source instead.
    """
    coarse_height, coarse_width = coarse_is_target.shape
    height, width = source_ok.shape
    sources = source_ys.shape[0]
    for index in range(target_ys.shape[0]):
        y = target_ys[index]
        x = target_xs[index]
        parent_y = min(int(y / ratio_y), coarse_height - 1)
        parent_x = min(int(x / ratio_x), coarse_width - 1)
        if coarse_is_target[parent_y, parent_x]:
            candidate_y = y + round(ratio_y * (coarse_nnf[parent_y, parent_x, 0] - parent_y))
            candidate_x = x + round(ratio_x * (coarse_nnf[parent_y, parent_x, 1] - parent_x))
            if 0 <= candidate_y < height and 0 <= candidate_x < width and source_ok[candidate_y, candidate_x]:
                nnf[y, x, 0] = candidate_y
                nnf[y, x, 1] = candidate_x
                continue
        state = mix(key ^ (np.uint64(index) * _GOLDEN))
        state, pick = _draw(state, sources)
        nnf[y, x, 0] = source_ys[pick]
        nnf[y, x, 1] = source_xs[pick]


@njit(cache=True, nogil=True)
def onion_fill(image, hole):
    """Fill the hole from its edge inwards, each pixel the mean of its already known 8 neighbours.

    The coarsest level's first guess: smooth, but it gives the first search something to match.
    ``hole`` is not changed.
    """
    height, width = hole.shape
    channels = image.shape[2]
    sums = np.zeros(channels, dtype=np.float64)
    unknown = hole.copy()
    remaining = 0
    for y in range(height):
        for x in range(width):
            if unknown[y, x]:
                remaining += 1
    ready = np.zeros((height, width), dtype=np.bool_)
    while remaining > 0:
        progress = 0
        for y in range(height):
            for x in range(width):
                if not unknown[y, x]:
                    continue
                for neighbour_y in range(max(0, y - 1), min(height, y + 2)):
                    for neighbour_x in range(max(0, x - 1), min(width, x + 2)):
                        if not unknown[neighbour_y, neighbour_x]:
                            ready[y, x] = True
        for y in range(height):
            for x in range(width):
                if not ready[y, x]:
                    continue
                known = 0
                for channel in range(channels):
                    sums[channel] = 0.0
                for neighbour_y in range(max(0, y - 1), min(height, y + 2)):
                    for neighbour_x in range(max(0, x - 1), min(width, x + 2)):
                        if not unknown[neighbour_y, neighbour_x]:
                            for channel in range(channels):
                                sums[channel] += image[neighbour_y, neighbour_x, channel]
                            known += 1
                for channel in range(channels):
                    image[y, x, channel] = sums[channel] / known
        for y in range(height):
            for x in range(width):
                if ready[y, x]:
                    ready[y, x] = False
                    unknown[y, x] = False
                    progress += 1
        remaining -= progress
        if progress == 0:
            break
