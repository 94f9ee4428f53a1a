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

In words: the best detection of the named class in a photo (KNOTS_BEST; 504 detections, 103 true)
is a real object one time in four at a raw 0.37, one in two at 0.42, nine in ten from 0.70; any
other detection (KNOTS; 5,483 detections, 66 true) one in twelve at 0.32, one in three at 0.43, one in
two from 0.52. So automatic-mask-generator's 0.2 keeps a best detection from a raw of about 0.35 up
and another from 0.37; inpaint-mask-maker's 0.5 from about 0.42 and 0.52.
"""

from __future__ import annotations

KNOTS_BEST: list[tuple[float, float]] = [
    (0.0, 0.0),
    (0.0714, 0.0057),
    (0.1223, 0.0119),
    (0.1738, 0.0185),
    (0.223, 0.1111),
    (0.2711, 0.12),
    (0.3214, 0.1538),
    (0.373, 0.25),
    (0.4237, 0.5455),
    (0.4807, 0.6154),
    (0.551, 0.7273),
    (0.7046, 0.9123),
    (0.8138, 1.0),
    (1.0, 1.0),
]

KNOTS: list[tuple[float, float]] = [
    (0.0, 0.0),
    (0.0825, 0.0007),
    (0.1712, 0.002),
    (0.239, 0.0307),
    (0.3191, 0.0794),
    (0.3752, 0.2308),
    (0.4343, 0.3191),
    (0.522, 0.5),
    (0.6333, 0.5),
    (0.7373, 0.6),
    (1.0, 1.0),
]
