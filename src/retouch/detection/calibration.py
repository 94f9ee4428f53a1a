"""Calibrated confidences for the offline CenterNet's raw scores.

The detector's raw scores run lower than the hosted models' confidences: true objects in everyday
photos score 0.25 to 0.6. The contract's default thresholds (0.2 for automatic-mask-generator,
0.5 for inpaint-mask-maker) are confidences, so raw scores are mapped through a monotone function
fitted on labelled detections (see `fit_monotone`, scripts/fit_calibration.py and the knots in
calibration_data.py): the probability that a detection of that raw score is a real object of the
class the prompt named.

Two maps, because a prompt names what the user sees: the best-scoring detection of the named class
in a photo is a real object far more often than the others at the same raw score (on the fitting
photos, at a raw 0.45 to 0.55, 68 % against 32 %), so it is calibrated by `KNOTS_BEST`, the rest by
`KNOTS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retouch.detection.calibration_data import KNOTS, KNOTS_BEST


def calibrate(raw_score: float, best: bool = False) -> float:
    """The calibrated confidence of a raw CenterNet score: piecewise linear through KNOTS (KNOTS_BEST for
    the best-scoring detection of its class in the photo), monotone."""
    raw_points, calibrated_points = zip(*(KNOTS_BEST if best else KNOTS), strict=True)
    return float(np.interp(raw_score, raw_points, calibrated_points))


def fit_monotone(raw_scores: Sequence[float], labels: Sequence[bool], bins: Sequence[float]) -> list[tuple[float, float]]:
    """Knots of a monotone (non-decreasing) map from raw score to the share of true detections.

    The share of true detections is taken in each raw-score bin, then made monotone by
    pool-adjacent-violators (isotonic regression) weighted by the bins' counts; each bin gives one
    knot at its mean raw score. The ends are pinned at (0, 0) and (1, 1).
    """
    scores = np.asarray(raw_scores, float)
    truths = np.asarray(labels, float)
    blocks: list[list[float]] = []  # [share, weight, mean score]
    for low, high in zip(bins[:-1], bins[1:], strict=True):
        inside = (scores >= low) & (scores < high)
        if inside.any():
            blocks.append([truths[inside].mean(), float(inside.sum()), scores[inside].mean()])
    merged: list[list[float]] = []
    for block in blocks:
        merged.append(block)
        while len(merged) > 1 and merged[-2][0] > merged[-1][0]:
            right, left = merged.pop(), merged.pop()
            weight = left[1] + right[1]
            merged.append([(left[0] * left[1] + right[0] * right[1]) / weight, weight, (left[2] * left[1] + right[2] * right[1]) / weight])
    knots = [(0.0, 0.0)] + [(round(float(score), 4), round(float(share), 4)) for share, _, score in merged] + [(1.0, 1.0)]
    return knots
