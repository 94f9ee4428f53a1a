"""The ISNet engine: the npm package's pre-processing, the mask from the `output` head, on a tiny model of ISNet's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_isnet

from retouch.engines.isnet import ISNetEngine, preprocess, stretch_bilinear
from retouch.errors import ServiceUnavailable


def test_the_stretch_samples_at_x_times_scale_and_rounds_half_up():
    row = np.array([[[0], [100], [200], [250]]], np.uint8)  # 1 x 4 x 1
    doubled = stretch_bilinear(np.repeat(row, 2, axis=0), 8, 2)[0, :, 0]
    # Sample points 0, 0.5, 1, ..., 3.5; the last neighbour clamps to the edge.
    assert doubled.tolist() == [0, 50, 100, 150, 200, 225, 250, 250]
    halved = stretch_bilinear(np.repeat(row, 2, axis=0), 2, 1)[0, :, 0]
    # No antialiasing: every second pixel, as the package's filter does.
    assert halved.tolist() == [0, 200]


def test_preprocess_is_v_minus_128_over_256_in_planes():
    image = np.zeros((10, 20, 4), np.uint8)
    image[..., 0], image[..., 1], image[..., 2], image[..., 3] = 0, 128, 255, 7
    tensor = preprocess(image, side=16)
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == np.float32
    assert np.allclose(tensor[0, :, 0, 0], [-0.5, 0.0, 127 / 256])


def test_the_mask_comes_from_the_output_head_at_the_photos_size(tmp_path: Path):
    engine = ISNetEngine(tiny_isnet(tmp_path / "isnet.onnx", side=64))
    engine.setup("cpu")
    photo = np.zeros((90, 160, 3), np.uint8)
    photo[:, :80] = 255
    mask = engine.predict(photo)
    assert mask.shape == (90, 160) and mask.dtype == np.uint8
    # White: sigmoid(40 * 127/256) is 1; black: sigmoid(-40 * 0.5) is 0. A wrong normalisation would blur both.
    assert mask[:, :70].min() == 255 and mask[:, 90:].max() == 0
    assert engine.model_files == ("isnet.onnx",)


def test_a_model_without_an_output_head_is_refused(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["mask"])],
        "not_isnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), path)
    engine = ISNetEngine(path)
    with pytest.raises(ServiceUnavailable, match="not an ISNet model"):
        engine.setup("cpu")
