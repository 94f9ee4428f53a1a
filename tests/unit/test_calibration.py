"""The calibration of raw detector scores: monotone, and it puts the contract's thresholds where the data says."""

from __future__ import annotations

import numpy as np

from retouch.detection.calibration import calibrate, fit_monotone
from retouch.detection.calibration_data import KNOTS


def test_calibration_is_monotone_and_within_0_1():
    raw = np.linspace(0, 1, 501)
    calibrated = np.array([calibrate(value) for value in raw])
    assert np.all(np.diff(calibrated) >= 0)
    assert calibrated[0] == 0 and calibrated[-1] == 1
    assert all(0 <= value <= 1 for _, value in KNOTS)


def test_everyday_objects_pass_the_default_thresholds_and_clutter_does_not():
    # True objects score 0.25 to 0.6 raw; clutter under about 0.2.
    assert calibrate(0.15) < 0.2
    assert calibrate(0.30) >= 0.2
    assert calibrate(0.6) >= 0.5
    assert calibrate(0.2) < 0.5


def test_fit_is_isotonic():
    scores = [0.1, 0.12, 0.3, 0.32, 0.5, 0.52, 0.7]
    labels = [False, True, False, False, True, True, True]
    knots = fit_monotone(scores, labels, [0.0, 0.2, 0.4, 0.6, 1.0])
    shares = [share for _, share in knots]
    assert shares == sorted(shares)
    # The violating first two bins (0.5, then 0.0) are pooled to 0.25.
    assert knots[1][1] == 0.25
