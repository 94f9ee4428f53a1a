"""Tiny ONNX models with the layouts of real exports, built by the tests themselves (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_lama(path: Path, single_input: bool, size: int | None, output_255: bool, seed: int = 0) -> Path:
    """A few random 3x3 convolutions; the hole is filled with their output, the rest passes through
    (as LaMa's exports do), so every pixel of the result depends on the pre-processing being right."""
    generator = np.random.default_rng(seed)
    height = width = size if size is not None else "height"
    if size is None:
        width = "width"
    nodes, initializers, inputs = [], [], []
    if single_input:
        inputs.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, height, width]))
        initializers += [
            numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), "starts_image"),
            numpy_helper.from_array(np.array([1, 3, 2**31, 2**31], np.int64), "ends_image"),
            numpy_helper.from_array(np.array([0, 3, 0, 0], np.int64), "starts_mask"),
            numpy_helper.from_array(np.array([1, 4, 2**31, 2**31], np.int64), "ends_mask"),
        ]
        nodes += [
            helper.make_node("Slice", ["input", "starts_image", "ends_image"], ["image"]),
            helper.make_node("Slice", ["input", "starts_mask", "ends_mask"], ["mask"]),
        ]
    else:
        inputs += [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, height, width]),
        ]
    first = generator.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32)
    second = generator.normal(0, 0.3, (3, 8, 3, 3)).astype(np.float32)
    initializers += [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2"),
                     numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                     numpy_helper.from_array(np.array(255.0 if output_255 else 1.0, np.float32), "scale")]  # fmt: skip
    nodes += [
        helper.make_node("Concat", ["image", "mask"], ["joined"], axis=1),
        helper.make_node("Conv", ["joined", "w1"], ["hidden"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["hidden"], ["active"]),
        helper.make_node("Conv", ["active", "w2"], ["raw"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["raw"], ["painted"]),
        helper.make_node("Sub", ["one", "mask"], ["keep"]),
        helper.make_node("Mul", ["image", "keep"], ["kept"]),
        helper.make_node("Mul", ["painted", "mask"], ["filled"]),
        helper.make_node("Add", ["kept", "filled"], ["blend"]),
        helper.make_node("Mul", ["blend", "scale"], ["output"]),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, height, width])
    graph = helper.make_graph(nodes, "tiny_lama", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
