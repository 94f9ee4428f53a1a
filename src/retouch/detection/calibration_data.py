"""The knots of the calibration of CenterNet's raw scores, and the data they were fitted on.

Fitted by scripts/fit_calibration.py on the fitting part of the labelled photo set (bench/photos/:
photos that scikit-image, scikit-learn, matplotlib, ultralytics, insightface, mahotas,
face_recognition, pillow, pillow-heif and Debian's opencv-doc and wallpaper packages ship, every
object of a COCO class boxed by hand; the checking part, which bench/text_masks.py judges on, is
never read by the fit). Each photo is used as it is, mirrored and in two crops: 29 photos, 180
objects in all the variants. The detections are the engine's own (its passes merged), of the classes
a prompt would name for the photo (those in it, and those its label lists as absent), after
non-maximum suppression; a detection is true when it is the best match (IoU >= 0.5) of a labelled
object of its class, and one on an object labelled as ignored (too small, hidden, doubtful) is left
out.

In words: the best detection of the named class in a photo (KNOTS_BEST; 480 detections, 100 true)
is a real object one time in five at a raw 0.35, two in three at 0.45, nine in ten from 0.65; any
other detection (KNOTS; 4,840 detections, 66 true) one in ten at 0.32, one in four at 0.41, three in
five from 0.55. So automatic-mask-generator's 0.2 keeps a best detection from a raw of about 0.34 up
and another from 0.38; inpaint-mask-maker's 0.5 from about 0.42 and 0.52.
"""

from __future__ import annotations

KNOTS_BEST: list[tuple[float, float]] = [
    (0.0, 0.0),
    (0.0719, 0.0057),
    (0.1217, 0.0244),
    (0.1752, 0.0294),
    (0.2224, 0.0294),
    (0.2777, 0.1304),
    (0.3457, 0.2188),
    (0.455, 0.65),
    (0.5393, 0.7273),
    (0.6471, 0.9231),
    (0.7737, 0.9302),
    (1.0, 1.0),
]

KNOTS: list[tuple[float, float]] = [
    (0.0, 0.0),
    (0.0688, 0.0007),
    (0.1221, 0.003),
    (0.1711, 0.0047),
    (0.2225, 0.026),
    (0.2714, 0.0309),
    (0.3187, 0.1017),
    (0.4082, 0.2588),
    (0.5482, 0.5789),
    (0.6707, 0.619),
    (1.0, 1.0),
]
