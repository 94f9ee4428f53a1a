"""The labelled data behind the calibration of CenterNet's raw scores, and the knots fitted on it.

Ground truth: every object of a COCO class visible in the photos that scikit-image and matplotlib
ship (boxes x1, y1, x2, y2 in pixels, labelled by hand by looking at each photo). A detection is
true when its box overlaps a ground-truth box of its class with IoU >= 0.5, false otherwise
(clutter, a wrong class, a duplicate of the wrong extent). Each photo is used as it is, mirrored,
and in two crops (the box coordinates follow), to see each object at several positions and sizes.
`scripts/fit_calibration.py` runs the detector on them and fits KNOTS with
`calibration.fit_monotone`; it prints the data and the fit.

Left out on purpose: skimage's clock (the detector never finds the clock above 0.1: a miss teaches
the mapping nothing) and photos without any COCO object other than rocket (kept: all its
detections are false, which is what clutter looks like).
"""

from __future__ import annotations

# photo -> [(label, (x1, y1, x2, y2)), ...]
GROUND_TRUTH: dict[str, list[tuple[str, tuple[int, int, int, int]]]] = {
    "astronaut": [("person", (8, 8, 368, 512))],
    "chelsea": [("cat", (0, 2, 416, 297))],
    "coffee": [("cup", (167, 9, 414, 267)), ("spoon", (315, 65, 425, 330)), ("dining table", (0, 0, 600, 400))],
    "rocket": [],
    "stereo_motorcycle": [("motorcycle", (117, 34, 677, 446)), ("bicycle", (0, 119, 46, 228)), ("bottle", (399, 54, 418, 89))],
    "camera": [("person", (8, 59, 292, 510))],
    "grace_hopper": [("person", (14, 24, 508, 600)), ("tie", (224, 420, 292, 530))],
}

# Fitted by scripts/fit_calibration.py on the data above (raw score -> share of true detections):
# 1117 detections with a raw score of at least 0.05 after NMS, 34 of them true. In words: below a raw
# 0.17 a detection is almost never an object (4 %), at 0.27 one in five is, from 0.47 three in four,
# above 0.68 all were. So the contract's 0.2 (automatic-mask-generator) keeps raw scores from about
# 0.27 up, and 0.5 (inpaint-mask-maker) from about 0.40 up.
KNOTS: list[tuple[float, float]] = [
    (0.0, 0.0),
    (0.0678, 0.0048),
    (0.1196, 0.0169),
    (0.1702, 0.0408),
    (0.2672, 0.1935),
    (0.4693, 0.7273),
    (0.5562, 0.75),
    (0.6772, 1.0),
    (0.8089, 1.0),
    (1.0, 1.0),
]
