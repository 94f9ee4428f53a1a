"""The calibration of raw detector scores: monotone, and it puts the contract's thresholds where the data says."""

from __future__ import annotations

import numpy as np
import pytest

from retouch.detection.calibration import calibrate, fit_monotone
from retouch.detection.calibration_data import KNOTS, KNOTS_BEST


@pytest.mark.parametrize("best", [False, True])
def test_calibration_is_monotone_and_within_0_1(best):
    raw = np.linspace(0, 1, 501)
    calibrated = np.array([calibrate(value, best=best) for value in raw])
    assert np.all(np.diff(calibrated) >= 0)
    assert calibrated[0] == 0 and calibrated[-1] == 1
    assert all(0 <= value <= 1 for _, value in (KNOTS_BEST if best else KNOTS))


def test_the_best_detection_of_the_named_class_is_trusted_sooner_and_clutter_is_not():
    # Fitted on the photo set's fitting part: a best detection at a raw 0.45 is real three times in five.
    for raw in np.linspace(0.05, 0.95, 19):
        assert calibrate(raw, best=True) >= calibrate(raw)
    assert calibrate(0.36, best=True) >= 0.2 > calibrate(0.36)
    assert calibrate(0.45, best=True) >= 0.5 > calibrate(0.45)
    assert calibrate(0.17, best=True) < 0.05 and calibrate(0.25) < 0.05
    assert calibrate(0.7) >= 0.5


def test_fit_is_isotonic():
    scores = [0.1, 0.12, 0.3, 0.32, 0.5, 0.52, 0.7]
    labels = [False, True, False, False, True, True, True]
    knots = fit_monotone(scores, labels, [0.0, 0.2, 0.4, 0.6, 1.0])
    shares = [share for _, share in knots]
    assert shares == sorted(shares)
    # The violating first two bins (0.5, then 0.0) are pooled to 0.25.
    assert knots[1][1] == 0.25
