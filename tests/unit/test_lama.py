"""LaMa's loading and pre/post-processing on tiny ONNX models built here, with the real exports' layouts:
two inputs (image, mask) or one 4-channel input; fixed 512-style size or dynamic; output in 0..1 or 0..255."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tiny_models import tiny_lama

from retouch.engines.lama import LamaEngine


def photo(height: int = 90, width: int = 130) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 2, cols * 2 % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)


def hole(height: int = 90, width: int = 130) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[30:50, 40:80] = 255
    return mask


VARIANTS = [
    pytest.param(False, None, False, id="two-inputs-dynamic-0..1"),
    pytest.param(False, 64, True, id="two-inputs-fixed-64-0..255"),
    pytest.param(True, None, False, id="one-input-dynamic-0..1"),
    pytest.param(True, 64, False, id="one-input-fixed-64-0..1"),
]


@pytest.mark.parametrize(("single_input", "size", "output_255"), VARIANTS)
def test_every_layout_loads_and_fills_only_the_hole(tmp_path, single_input, size, output_255):
    engine = LamaEngine(tiny_lama(tmp_path / "lama.onnx", single_input, size, output_255))
    engine.setup("cpu")
    assert engine.layout is not None
    assert engine.layout.single_input is single_input
    assert engine.layout.fixed_size == ((size, size) if size else None)
    image, mask = photo(), hole()
    result = engine.predict(image, mask, seed=1)
    assert result.shape == image.shape and result.dtype == np.uint8
    assert np.array_equal(result[mask == 0], image[mask == 0])
    assert not np.array_equal(result[mask > 0], image[mask > 0])


def test_output_range_is_read_from_the_model(tmp_path):
    """The same network exported in 0..1 and in 0..255 gives the same fill."""
    image, mask = photo(), hole()
    fills = []
    for output_255 in (False, True):
        engine = LamaEngine(tiny_lama(tmp_path / f"lama{output_255}.onnx", False, None, output_255))
        engine.setup("cpu")
        fills.append(engine.predict(image, mask, seed=1))
    assert np.abs(fills[0].astype(int) - fills[1].astype(int)).max() <= 1


def test_dynamic_input_is_padded_to_a_multiple_of_eight(tmp_path):
    engine = LamaEngine(tiny_lama(tmp_path / "lama.onnx", False, None, False))
    engine.setup("cpu")
    seen = []
    original_run = engine._session.run

    def spy(names, feeds):
        seen.append({name: value.shape for name, value in feeds.items()})
        return original_run(names, feeds)

    engine._session.run = spy
    image = photo(37, 53)
    mask = np.zeros((37, 53), np.uint8)
    mask[10:20, 10:30] = 255
    result = engine.predict(image, mask, seed=0)
    assert result.shape == image.shape
    for shapes in seen:
        assert all(shape[2] % 8 == 0 and shape[3] % 8 == 0 for shape in shapes.values())


def test_empty_mask_returns_the_input(tmp_path):
    engine = LamaEngine(tiny_lama(tmp_path / "lama.onnx", False, None, False))
    engine.setup("cpu")
    image = photo()
    assert np.array_equal(engine.predict(image, np.zeros(image.shape[:2], np.uint8), seed=0), image)


def test_a_model_that_is_not_lama_is_refused(tmp_path):
    from retouch.errors import ServiceUnavailable

    wrong = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "wrong",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
    )  # fmt: skip
    model = helper.make_model(wrong, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "wrong.onnx")
    with pytest.raises(ServiceUnavailable, match="expected an image"):
        LamaEngine(tmp_path / "wrong.onnx").setup("cpu")
