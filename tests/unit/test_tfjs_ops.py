"""The TF.js-to-ONNX converter, op by op: one-node TF.js graphs against NumPy references of TF's semantics.

Each test writes a small TF.js graph model the way the TF.js converter does (a GraphDef as JSON
with base64 strings, weights in a binary manifest), reads it back with retouch.convert.tfjs,
converts it and runs the ONNX model on onnxruntime. The references are written here from
TensorFlow's documented semantics (SAME padding with the odd pixel at the bottom/right, floor
division, TF1 bilinear sampling, ...), not from the converter's code.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest

from retouch.convert.tfjs import decode_weights, graph_from_json, load_graph_model
from retouch.convert.tfjs_to_onnx import (
    HARD_SWISH,
    TRANSLATORS,
    ConversionError,
    UnsupportedOp,
    convert_tfjs_graph,
    graph_to_onnx,
)

RNG = np.random.default_rng(1234)
_DT = {np.dtype(np.float32): "DT_FLOAT", np.dtype(np.int32): "DT_INT32", np.dtype(np.bool_): "DT_BOOL"}
_MANIFEST = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32", np.dtype(np.bool_): "bool"}


def _attr(value: Any) -> dict[str, Any]:
    """A Python value as TF's AttrValue in JSON (strings base64, ints as strings)."""
    if isinstance(value, bool):
        return {"b": value}
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": value}
    if isinstance(value, str):
        if value.startswith("DT_"):
            return {"type": value}
        return {"s": base64.b64encode(value.encode()).decode()}
    if isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return {"list": {"s": [base64.b64encode(item.encode()).decode() for item in value]}}
        return {"list": {"i": [str(item) for item in value]}}
    raise TypeError(value)


def _shape(shape: tuple[int, ...]) -> dict[str, Any]:
    return {"dim": [{"size": str(d)} for d in shape]} if shape else {}


class Graph:
    """A TF.js graph model built in memory: placeholders (fed at run), constants (in the weights) and ops."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.weights: list[tuple[str, np.ndarray]] = []
        self.feeds: dict[str, np.ndarray] = {}

    def placeholder(self, name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        self.nodes.append(
            {"name": name, "op": "Placeholder", "attr": {"dtype": {"type": _DT[value.dtype]}, "shape": {"shape": _shape(value.shape)}}}
        )
        self.feeds[name] = value
        return name

    def const(self, name: str, value: Any, dtype: Any = None) -> str:
        value = np.asarray(value, dtype=dtype)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        if value.dtype == np.int64:
            value = value.astype(np.int32)
        tensor = {"dtype": _DT[value.dtype], "tensorShape": _shape(value.shape)}
        self.nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": _DT[value.dtype]}, "value": {"tensor": tensor}}})
        self.weights.append((name, value))
        return name

    def op(self, name: str, op: str, inputs: list[str], **attrs: Any) -> str:
        self.nodes.append({"name": name, "op": op, "input": inputs, "attr": {key: _attr(value) for key, value in attrs.items()}})
        return name

    def model_json(self, outputs: list[str]) -> tuple[dict[str, Any], bytes]:
        specs = [{"name": name, "shape": list(value.shape), "dtype": _MANIFEST[value.dtype]} for name, value in self.weights]
        data = b"".join(value.astype(value.dtype.newbyteorder("<")).tobytes() for _, value in self.weights)
        model = {
            "format": "graph-model",
            "generatedBy": "test",
            "convertedBy": "test",
            "modelTopology": {"node": self.nodes, "library": {}, "versions": {}},
            "signature": {
                "inputs": {name: {"name": f"{name}:0"} for name in self.feeds},
                "outputs": {name: {"name": name} for name in outputs},
            },
            "weightsManifest": [{"paths": ["weights.bin"], "weights": specs}],
        }
        return model, data

    def to_onnx(self, outputs: list[str], **options: Any) -> onnx.ModelProto:
        model, data = self.model_json(outputs)
        return graph_to_onnx(graph_from_json(json.loads(json.dumps(model)), [data]), **options)

    def run(self, *outputs: str, **options: Any) -> list[np.ndarray]:
        model = self.to_onnx(list(outputs), **options)
        session = _session(model)
        assert [o.name for o in session.get_outputs()] == list(outputs)
        assert [i.name for i in session.get_inputs()] == list(self.feeds)
        return session.run(None, self.feeds)


def _session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _floats(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-5) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# -- NumPy references of TF's semantics ------------------------------------------------------------


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """TF's SAME: output ceil(size / stride); the odd padding pixel goes after."""
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2, out


def _windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], padding: str, dilations=(1, 1), fill=0.0):
    """Yield (i, j, x-slice) for each kernel tap over the padded NHWC input, and the output size."""
    _, height, width, _ = x.shape
    if padding == "SAME":
        top, bottom, out_h = tf_same_pads(height, kernel[0], strides[0], dilations[0])
        left, right, out_w = tf_same_pads(width, kernel[1], strides[1], dilations[1])
    else:
        top = bottom = left = right = 0
        out_h = (height - (kernel[0] - 1) * dilations[0] - 1) // strides[0] + 1
        out_w = (width - (kernel[1] - 1) * dilations[1] - 1) // strides[1] + 1
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    taps = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            y0, x0 = i * dilations[0], j * dilations[1]
            taps.append((i, j, padded[:, y0 : y0 + (out_h - 1) * strides[0] + 1 : strides[0], x0 : x0 + (out_w - 1) * strides[1] + 1 : strides[1], :]))
    return taps


def ref_conv2d(x, w, strides, padding, dilations=(1, 1)):
    taps = _windows(x, w.shape[:2], strides, padding, dilations)
    return sum(np.einsum("nhwc,co->nhwo", tap, w[i, j], dtype=np.float64) for i, j, tap in taps).astype(np.float32)


def ref_depthwise(x, w, strides, padding, dilations=(1, 1)):
    taps = _windows(x, w.shape[:2], strides, padding, dilations)
    out = sum(tap[..., :, None].astype(np.float64) * w[i, j] for i, j, tap in taps)  # [n, h, w, c, m]
    return out.reshape(out.shape[:3] + (-1,)).astype(np.float32)  # channel c*M + m


def ref_max_pool(x, kernel, strides, padding):
    return np.max([tap for _, _, tap in _windows(x, kernel, strides, padding, fill=-np.inf)], axis=0)


def ref_avg_pool(x, kernel, strides, padding):
    taps = _windows(x, kernel, strides, padding, fill=np.nan)
    stacked = np.stack([tap for _, _, tap in taps])
    return (np.nansum(stacked, axis=0) / np.sum(~np.isnan(stacked), axis=0)).astype(np.float32)


def ref_resize_bilinear(x, size, align_corners=False, half_pixel_centers=False):
    """TF's ResizeBilinear (compute_interpolation_weights in resize_bilinear_op.cc)."""

    def weights(out_size: int, in_size: int):
        if align_corners and out_size > 1:
            scale = (in_size - 1) / (out_size - 1)
        else:
            scale = in_size / out_size
        lower, upper, lerp = [], [], []
        for i in range(out_size):
            position = (i + 0.5) * scale - 0.5 if half_pixel_centers else i * scale
            low = int(np.floor(position))
            lower.append(max(low, 0))
            upper.append(min(int(np.ceil(position)), in_size - 1))
            lerp.append(position - low)
        return np.array(lower), np.array(upper), np.array(lerp, dtype=np.float64)

    y0, y1, ly = weights(size[0], x.shape[1])
    x0, x1, lx = weights(size[1], x.shape[2])
    top = x[:, y0][:, :, x0] + (x[:, y0][:, :, x1] - x[:, y0][:, :, x0]) * lx[None, None, :, None]
    bottom = x[:, y1][:, :, x0] + (x[:, y1][:, :, x1] - x[:, y1][:, :, x0]) * lx[None, None, :, None]
    return (top + (bottom - top) * ly[None, :, None, None]).astype(np.float32)


# -- reading the TF.js format -----------------------------------------------------------------------


def test_weights_are_dequantized_as_tfjs_does() -> None:
    halves = np.array([0.1666, -3.5, 65504.0], dtype="<f2")
    quantized = np.array([0, 1, 255], dtype="u1")
    specs = [
        {"name": "h", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16", "original_dtype": "float32"}},
        {"name": "q", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.1, "min": -1.0}},
        {"name": "i", "shape": [2, 1], "dtype": "int32"},
        {"name": "qi", "shape": [3], "dtype": "int32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": 0.0}},
    ]
    data = halves.tobytes() + quantized.tobytes() + np.array([[7], [-8]], dtype="<i4").tobytes() + np.array([1, 3, 5], dtype="u1").tobytes()
    weights = decode_weights(specs, data)
    np.testing.assert_array_equal(weights["h"], halves.astype(np.float32))
    assert weights["h"].dtype == np.float32
    # q * scale + min, computed in float64 and stored as float32 (JavaScript numbers into a Float32Array).
    np.testing.assert_array_equal(weights["q"], np.array([-1.0, 0.1 - 1.0, 255 * 0.1 - 1.0], dtype=np.float32))
    np.testing.assert_array_equal(weights["i"], [[7], [-8]])
    # int32: Math.round, halves up.
    np.testing.assert_array_equal(weights["qi"], [1, 2, 3])
    assert weights["qi"].dtype == np.int32


def test_attributes_are_decoded_and_inputs_parsed(tmp_path: Path) -> None:
    g = Graph()
    x = g.placeholder("x", _floats(1, 4, 4, 2))
    w = g.const("w", _floats(3, 3, 2, 2))
    g.op("conv", "Conv2D", [x, w, "^x"], strides=[1, 2, 2, 1], padding="SAME", data_format="NHWC", dilations=[1, 1, 1, 1], use_cudnn_on_gpu=True)
    model, data = g.model_json(["conv"])
    model["weightsManifest"][0]["paths"] = ["a.bin", "b.bin"]
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "a.bin").write_bytes(data[:10])
    (tmp_path / "b.bin").write_bytes(data[10:])
    graph = load_graph_model(tmp_path / "model.json")
    conv = graph.node("conv")
    assert conv.attrs == {"strides": [1, 2, 2, 1], "padding": "SAME", "data_format": "NHWC", "dilations": [1, 1, 1, 1], "use_cudnn_on_gpu": True}
    assert [str(ref) for ref in conv.inputs] == ["x", "w"]
    assert conv.control_inputs == ["x"]
    assert graph.inputs == ["x"] and graph.outputs == ["conv"]
    assert graph.weights["w"].shape == (3, 3, 2, 2)

    convert_tfjs_graph(tmp_path / "model.json", tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "model.json", "model.onnx"]
    session = _session(onnx.load(tmp_path / "model.onnx"))
    (out,) = session.run(None, g.feeds)
    _close(out, ref_conv2d(g.feeds["x"], graph.weights["w"], (2, 2), "SAME"))


# -- convolutions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation"),
    [
        ((7, 7), 3, 2, "SAME", 1),  # odd size, stride 2: pads 1 and 1
        ((8, 8), 3, 2, "SAME", 1),  # even size, stride 2: pads 0 before, 1 after
        ((8, 6), 2, 1, "SAME", 1),  # even kernel: the extra pixel at the bottom/right
        ((9, 10), 3, 1, "SAME", 2),  # dilation
        ((9, 8), 3, 2, "VALID", 1),
        ((5, 11), 1, 2, "SAME", 1),
    ],
)
def test_conv2d(size: tuple[int, int], kernel: int, stride: int, padding: str, dilation: int) -> None:
    g = Graph()
    x = g.placeholder("images", _floats(2, *size, 3))
    w = _floats(kernel, kernel, 3, 5)
    g.op("conv", "Conv2D", [x, g.const("w", w)], strides=[1, stride, stride, 1], padding=padding, dilations=[1, dilation, dilation, 1], data_format="NHWC")
    (out,) = g.run("conv")
    _close(out, ref_conv2d(g.feeds["images"], w, (stride, stride), padding, (dilation, dilation)))


PRELU_ALPHA = np.linspace(0.1, 0.6, 6, dtype=np.float32)


@pytest.mark.parametrize(
    ("fused_ops", "activation"),
    [
        (["BiasAdd"], lambda v: v),
        (["BiasAdd", "Relu"], lambda v: np.maximum(v, 0)),
        (["BiasAdd", "Relu6"], lambda v: np.clip(v, 0, 6)),
        (["BiasAdd", "Sigmoid"], lambda v: 1 / (1 + np.exp(-v))),
        (["BiasAdd", "Elu"], lambda v: np.where(v > 0, v, np.expm1(v))),
        (["BiasAdd", "LeakyRelu"], lambda v: np.where(v > 0, v, 0.3 * v)),
        (["BiasAdd", "Prelu"], lambda v: np.where(v > 0, v, PRELU_ALPHA * v)),
    ],
)
def test_fused_conv2d(fused_ops: list[str], activation) -> None:
    g = Graph()
    x = g.placeholder("x", _floats(1, 9, 8, 4) * 3)
    w, b = _floats(3, 3, 4, 6), _floats(6) * 2
    args = [g.const("w", w), g.const("b", b)] + ([g.const("alpha", PRELU_ALPHA)] if "Prelu" in fused_ops else [])
    g.op("conv", "_FusedConv2D", [x, *args], strides=[1, 2, 2, 1], padding="SAME", fused_ops=fused_ops, num_args=len(args) - 1, data_format="NHWC", epsilon=0.0, leakyrelu_alpha=0.3)
    (out,) = g.run("conv")
    expected = activation(ref_conv2d(g.feeds["x"], w, (2, 2), "SAME") + b)
    _close(out, expected.astype(np.float32))
    if "Relu6" in fused_ops:
        assert out.max() == pytest.approx(6.0) and out.min() == 0.0


@pytest.mark.parametrize(("size", "stride", "multiplier"), [((7, 9), 2, 1), ((8, 8), 2, 2), ((6, 5), 1, 3)])
def test_depthwise_conv(size: tuple[int, int], stride: int, multiplier: int) -> None:
    g = Graph()
    x = g.placeholder("x", _floats(1, *size, 4))
    w = _floats(3, 3, 4, multiplier)
    g.op("dw", "DepthwiseConv2dNative", [x, g.const("w", w)], strides=[1, stride, stride, 1], padding="SAME", dilations=[1, 1, 1, 1], data_format="NHWC")
    (out,) = g.run("dw")
    assert out.shape[-1] == 4 * multiplier
    _close(out, ref_depthwise(g.feeds["x"], w, (stride, stride), "SAME"))


def test_fused_depthwise_conv_with_bias_and_relu() -> None:
    g = Graph()
    x = g.placeholder("x", _floats(1, 8, 7, 3))
    w, b = _floats(5, 5, 3, 2), _floats(6)
    g.op("dw", "FusedDepthwiseConv2dNative", [x, g.const("w", w), g.const("b", b)], strides=[1, 2, 2, 1], padding="SAME", fused_ops=["BiasAdd", "Relu"], num_args=1, dilations=[1, 1, 1, 1], data_format="NHWC")
    (out,) = g.run("dw")
    _close(out, np.maximum(ref_depthwise(g.feeds["x"], w, (2, 2), "SAME") + b, 0))


@pytest.mark.parametrize(("size", "ksize", "stride"), [((7, 7), 3, 2), ((8, 8), 3, 2), ((6, 5), 3, 1), ((8, 9), 2, 2)])
def test_max_pool_same(size: tuple[int, int], ksize: int, stride: int) -> None:
    g = Graph()
    # Negative values: a zero-padded max would show at the borders.
    x = g.placeholder("x", _floats(1, *size, 3) - 5)
    g.op("pool", "MaxPool", [x], ksize=[1, ksize, ksize, 1], strides=[1, stride, stride, 1], padding="SAME", data_format="NHWC")
    (out,) = g.run("pool")
    _close(out, ref_max_pool(g.feeds["x"], (ksize, ksize), (stride, stride), "SAME"))


def test_avg_pool_same_excludes_padding() -> None:
    g = Graph()
    x = g.placeholder("x", _floats(1, 7, 6, 2) + 3)
    g.op("pool", "AvgPool", [x], ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME", data_format="NHWC")
    (out,) = g.run("pool")
    _close(out, ref_avg_pool(g.feeds["x"], (3, 3), (2, 2), "SAME"))


@pytest.mark.parametrize(
    ("in_size", "out_size", "align_corners", "half_pixel_centers"),
    [
        ((4, 4), (8, 8), False, False),  # the CenterNet head's 2x upsampling: asymmetric
        ((5, 3), (9, 7), False, False),  # non-integer scales
        ((5, 3), (9, 7), True, False),
        ((5, 3), (9, 7), False, True),
        ((6, 6), (4, 3), False, False),  # shrinking
    ],
)
def test_resize_bilinear(in_size, out_size, align_corners: bool, half_pixel_centers: bool) -> None:
    g = Graph()
    x = g.placeholder("x", _floats(2, *in_size, 3))
    g.op("resize", "ResizeBilinear", [x, g.const("size", np.array(out_size, dtype=np.int32))], align_corners=align_corners, half_pixel_centers=half_pixel_centers)
    (out,) = g.run("resize")
    _close(out, ref_resize_bilinear(g.feeds["x"], out_size, align_corners, half_pixel_centers))


# -- element-wise ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "reference"),
    [
        ("Add", np.add),
        ("AddV2", np.add),
        ("Sub", np.subtract),
        ("Mul", np.multiply),
        ("RealDiv", np.divide),
        ("Maximum", np.maximum),
        ("Minimum", np.minimum),
        ("Equal", np.equal),
        ("Greater", np.greater),
        ("Less", np.less),
    ],
)
def test_binary_broadcasting(op: str, reference) -> None:
    g = Graph()
    a = _floats(1, 3, 4, 5)
    b = _floats(5)
    b[0] = a[0, 0, 0, 0]  # one equal pair for Equal
    g.op("out", op, [g.placeholder("a", a), g.const("b", b)])
    (out,) = g.run("out")
    _close(out, reference(a, b))


def test_bias_add_and_scalar_const() -> None:
    g = Graph()
    x = g.placeholder("x", _floats(2, 3, 4))
    biased = g.op("biased", "BiasAdd", [x, g.const("b", _floats(4))], data_format="NHWC")
    g.op("out", "Mul", [g.const("half", np.float32(0.5)), biased])
    (out,) = g.run("out")
    _close(out, 0.5 * (g.feeds["x"] + dict(g.weights)["b"]))


@pytest.mark.parametrize(
    ("op", "reference"),
    [
        ("Relu", lambda v: np.maximum(v, 0)),
        ("Relu6", lambda v: np.clip(v, 0, 6)),
        ("Sigmoid", lambda v: 1 / (1 + np.exp(-v))),
        ("Tanh", np.tanh),
        ("Exp", np.exp),
        ("Neg", np.negative),
        ("Identity", lambda v: v),
        ("Elu", lambda v: np.where(v > 0, v, np.expm1(v))),
        ("LeakyRelu", lambda v: np.where(v > 0, v, 0.2 * v)),
    ],
)
def test_unary(op: str, reference) -> None:
    g = Graph()
    x = g.placeholder("x", _floats(2, 3, 7) * 5)
    g.op("out", op, [x], **({"alpha": 0.2} if op == "LeakyRelu" else {}))
    (out,) = g.run("out")
    _close(out, reference(g.feeds["x"]).astype(np.float32))


def test_floordiv_and_floormod_follow_floor_semantics_with_negatives() -> None:
    g = Graph()
    a = np.array([7, -7, 7, -7, 0, 13, -13, 5, -1], dtype=np.int32)
    b = np.array([2, 2, -2, -2, 3, -4, 4, 5, 3], dtype=np.int32)
    fa, fb = a.astype(np.float32) + 0.5, b.astype(np.float32)
    ia, ib, xa, xb = g.placeholder("a", a), g.placeholder("b", b), g.placeholder("fa", fa), g.placeholder("fb", fb)
    g.op("div", "FloorDiv", [ia, ib])
    g.op("mod", "FloorMod", [ia, ib])
    g.op("fdiv", "FloorDiv", [xa, xb])
    g.op("fmod", "FloorMod", [xa, xb])
    g.op("scalar_div", "FloorDiv", [ia, g.const("three", np.int32(-3))])
    div, mod, fdiv, fmod, scalar_div = g.run("div", "mod", "fdiv", "fmod", "scalar_div")
    # Python's // and % are TF's FloorDiv and FloorMod.
    _close(div, a // b)
    _close(mod, a % b)
    _close(fdiv, np.floor_divide(fa, fb))
    _close(fmod, np.mod(fa, fb))
    _close(scalar_div, a // np.int32(-3))
    assert div.tolist()[:4] == [3, -4, -4, 3] and mod.tolist()[:4] == [1, 1, -1, -1]


def test_cast_and_equal() -> None:
    g = Graph()
    x = g.placeholder("x", np.array([[1.0, 2.0], [3.0, 2.0]], dtype=np.float32))
    eq = g.op("eq", "Equal", [x, g.const("two", np.float32(2.0))], incompatible_shape_error=True)
    g.op("as_float", "Cast", [eq], SrcT="DT_BOOL", DstT="DT_FLOAT", Truncate=False)
    i = g.placeholder("i", np.array([-3, 0, 4], dtype=np.int32))
    g.op("i_float", "Cast", [i], SrcT="DT_INT32", DstT="DT_FLOAT")
    g.op("f_int", "Cast", [g.placeholder("f", np.array([-2.7, 2.7], dtype=np.float32))], SrcT="DT_FLOAT", DstT="DT_INT32")
    as_float, i_float, f_int = g.run("as_float", "i_float", "f_int")
    _close(as_float, np.array([[0, 1], [0, 1]], dtype=np.float32))
    _close(i_float, np.array([-3, 0, 4], dtype=np.float32))
    _close(f_int, np.array([-2, 2], dtype=np.int32))  # TF truncates toward zero


# -- reductions and shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("axes", "keep_dims"), [([1, 2], True), ([1, 2], False), ([-1], True), ([0, 3], False), ([], True)])
def test_mean(axes: list[int], keep_dims: bool) -> None:
    g = Graph()
    x = g.placeholder("x", _floats(2, 3, 4, 5))
    g.op("mean", "Mean", [x, g.const("axes", np.array(axes, dtype=np.int32))], keep_dims=keep_dims, Tidx="DT_INT32")
    (out,) = g.run("mean")
    expected = g.feeds["x"] if not axes else np.mean(g.feeds["x"], axis=tuple(axes), keepdims=keep_dims)
    _close(out, expected.astype(np.float32))


def test_max_reduction_with_scalar_axis() -> None:
    g = Graph()
    x = g.placeholder("x", _floats(2, 3, 4))
    g.op("max", "Max", [x, g.const("axis", np.int32(1))], keep_dims=False)
    (out,) = g.run("max")
    _close(out, g.feeds["x"].max(axis=1))


def test_concat_reshape_expand_dims() -> None:
    g = Graph()
    a, b = g.placeholder("a", _floats(2, 3, 4)), g.placeholder("b", _floats(2, 1, 4))
    cat = g.op("cat", "ConcatV2", [a, b, g.const("axis", np.int32(-2))], N=2)
    flat = g.op("flat", "Reshape", [cat, g.const("shape", np.array([2, -1], dtype=np.int32))])
    g.op("expanded", "ExpandDims", [flat, g.const("dim", np.int32(-1))])
    g.op("front", "ExpandDims", [flat, g.const("zero", np.array([0], dtype=np.int32))])
    cat_out, expanded, front = g.run("cat", "expanded", "front")
    expected = np.concatenate([g.feeds["a"], g.feeds["b"]], axis=1)
    _close(cat_out, expected)
    _close(expanded, expected.reshape(2, -1)[..., None])
    _close(front, expected.reshape(2, -1)[None])


def _slice(begin, end, strides, **masks):
    return np.array(begin, np.int32), np.array(end, np.int32), np.array(strides, np.int32), masks


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # the CenterNet graph's x[:, :, 0:1] with begin/end masks on the first two axes
        (_slice([0, 0, 0], [0, 0, 1], [1, 1, 1], begin_mask=3, end_mask=3), lambda x: x[:, :, 0:1]),
        (_slice([0, 1, 2], [0, 0, 0], [1, 1, 1], begin_mask=1, end_mask=3, shrink_axis_mask=4), lambda x: x[:, 1:, 2]),
        (_slice([0, -1], [0, 0], [1, -1], begin_mask=1, end_mask=3), lambda x: x[:, ::-1]),
        (_slice([1, 0, 0], [3, 0, 0], [1, 1, 2], ellipsis_mask=2, end_mask=4), lambda x: x[1:3, ..., ::2]),
        (_slice([0, 0, 1], [0, 0, 3], [1, 1, 1], new_axis_mask=2, begin_mask=1, end_mask=1), lambda x: x[:, None, 1:3]),
        (_slice([-1], [0], [1], shrink_axis_mask=1), lambda x: x[-1]),
        (_slice([0, 5, 0], [2, -7, 4], [1, -2, 1], begin_mask=0), lambda x: x[0:2, 5:-7:-2, 0:4]),
    ],
)
def test_strided_slice(spec, expected) -> None:
    begin, end, strides, masks = spec
    g = Graph()
    x = g.placeholder("x", _floats(4, 6, 5))
    g.op("out", "StridedSlice", [x, g.const("b", begin), g.const("e", end), g.const("s", strides)], **{**{"begin_mask": 0, "end_mask": 0, "ellipsis_mask": 0, "new_axis_mask": 0, "shrink_axis_mask": 0}, **masks})
    (out,) = g.run("out")
    _close(out, np.ascontiguousarray(expected(g.feeds["x"])))


def test_gather() -> None:
    g = Graph()
    params = g.placeholder("params", _floats(5, 3))
    indices = g.placeholder("indices", np.array([[4, 0], [2, 2]], dtype=np.int32))
    g.op("rows", "GatherV2", [params, indices, g.const("axis", np.int32(0))], batch_dims=0)
    g.op("cols", "GatherV2", [params, g.const("idx", np.array([2, 0], np.int32)), g.const("axis1", np.int32(-1))], batch_dims=0)
    rows, cols = g.run("rows", "cols")
    _close(rows, np.take(g.feeds["params"], g.feeds["indices"], axis=0))
    _close(cols, np.take(g.feeds["params"], [2, 0], axis=1))


def test_top_k_is_sorted_with_int32_indices() -> None:
    g = Graph()
    values = RNG.permutation(60).astype(np.float32).reshape(2, 30) / 7
    x = g.placeholder("x", values)
    top = g.op("top", "TopKV2", [x, g.const("k", np.int32(5))], sorted=True)
    g.op("idx", "Identity", [f"{top}:1"])
    g.op("idx_float", "Cast", [f"{top}:1"], SrcT="DT_INT32", DstT="DT_FLOAT")
    top_values, indices, idx_float = g.run("top", "idx", "idx_float")
    order = np.argsort(-values, axis=1, kind="stable")[:, :5]
    _close(top_values, np.take_along_axis(values, order, axis=1))
    _close(indices, order.astype(np.int32))
    _close(idx_float, order.astype(np.float32))


# -- layouts, fusion, errors ---------------------------------------------------------------------------


def test_nchw_body_keeps_nhwc_boundaries_and_few_transposes() -> None:
    """Conv -> SE-style mean/multiply -> upsample -> concat -> pool, outputs NHWC, one transpose per boundary."""
    g = Graph()
    image = _floats(1, 8, 8, 3)
    skip = _floats(1, 8, 8, 2)
    w1, w2 = _floats(3, 3, 3, 4), _floats(1, 1, 4, 4)
    x = g.placeholder("image", image)
    s = g.placeholder("skip", skip)
    conv = g.op("conv", "Conv2D", [x, g.const("w1", w1)], strides=[1, 2, 2, 1], padding="SAME")
    squeeze = g.op("squeeze", "Mean", [conv, g.const("hw", np.array([1, 2], np.int32))], keep_dims=True)
    gate = g.op("gate", "Sigmoid", [g.op("excite", "Conv2D", [squeeze, g.const("w2", w2)], strides=[1, 1, 1, 1], padding="SAME")])
    scaled = g.op("scaled", "Mul", [conv, gate])
    shifted = g.op("shifted", "Add", [scaled, g.const("shift", _floats(1, 1, 1, 4))])
    up = g.op("up", "ResizeBilinear", [shifted, g.const("size", np.array([8, 8], np.int32))], align_corners=False, half_pixel_centers=False)
    cat = g.op("cat", "ConcatV2", [up, s, g.const("axis", np.int32(3))], N=2)
    g.op("pool", "MaxPool", [cat], ksize=[1, 3, 3, 1], strides=[1, 1, 1, 1], padding="SAME")
    g.op("flat", "Reshape", [cat, g.const("shape", np.array([1, -1], np.int32))])

    model = g.to_onnx(["pool", "flat", "conv"])
    transposes = [node for node in model.graph.node if node.op_type == "Transpose"]
    # image and skip in; pool, cat (for the reshape) and conv out.
    assert len(transposes) == 5
    pool, flat, conv_out = _session(model).run(None, g.feeds)

    c = ref_conv2d(image, w1, (2, 2), "SAME")
    gate_ref = 1 / (1 + np.exp(-ref_conv2d(c.mean(axis=(1, 2), keepdims=True), w2, (1, 1), "SAME")))
    shift = dict(g.weights)["shift"]
    up_ref = ref_resize_bilinear(c * gate_ref + shift, (8, 8))
    cat_ref = np.concatenate([up_ref, skip], axis=3)
    _close(conv_out, c)
    _close(pool, ref_max_pool(cat_ref, (3, 3), (1, 1), "SAME"))
    _close(flat, cat_ref.reshape(1, -1))


def _hard_swish_graph(share_inner: bool = False) -> Graph:
    g = Graph()
    x = g.placeholder("x", _floats(1, 4, 4, 3) * 4)
    scaled = g.op("hs/mul", "Mul", [g.const("hs/c", np.float16(1 / 6).astype(np.float32)), x])
    shifted = g.op("hs/add", "Add", [x, g.const("hs/three", np.float32(3))])
    relu6 = g.op("hs/relu6", "Relu6", [shifted])
    g.op("hs/out", "Mul", [scaled, relu6])
    if share_inner:
        g.op("other", "Identity", [relu6])
    return g


@pytest.mark.parametrize("share_inner", [False, True])
def test_hard_swish_is_fused_only_when_its_inner_results_are_private(share_inner: bool) -> None:
    g = _hard_swish_graph(share_inner)
    outputs = ["hs/out", "other"] if share_inner else ["hs/out"]
    model = g.to_onnx(outputs)
    ops = [node.op_type for node in model.graph.node]
    assert ("HardSwish" in ops) is not share_inner
    results = _session(model).run(None, g.feeds)
    x = g.feeds["x"]
    c = np.float32(np.float16(1 / 6))
    _close(results[0], (c * x) * np.clip(x + 3, 0, 6), tol=1e-6)
    # Without fusion the same values, op for op.
    (unfused,) = _session(g.to_onnx(["hs/out"], fuse=False)).run(None, g.feeds)
    _close(results[0], unfused, tol=1e-6)
    assert HARD_SWISH in TRANSLATORS


def test_unsupported_op_is_named() -> None:
    g = Graph()
    x = g.placeholder("x", _floats(2, 3))
    g.op("mystery", "Cumsum", [x, g.const("axis", np.int32(0))])
    with pytest.raises(UnsupportedOp, match=r"op 'Cumsum' \(node 'mystery'\) is not supported"):
        g.to_onnx(["mystery"])


def test_runtime_value_where_a_constant_is_needed_is_an_error() -> None:
    g = Graph()
    x = g.placeholder("x", _floats(2, 3))
    shape = g.placeholder("shape", np.array([3, 2], dtype=np.int32))
    g.op("r", "Reshape", [x, shape])
    with pytest.raises(ConversionError, match=r"Reshape node 'r': its shape \('shape'\) must be a constant"):
        g.to_onnx(["r"])


def test_dynamic_input_shape_needs_an_override() -> None:
    g = Graph()
    x = g.placeholder("x", _floats(1, 4, 4, 1))
    g.nodes[0]["attr"]["shape"] = {"shape": {"dim": [{"size": "-1"}, {"size": "4"}, {"size": "4"}, {"size": "1"}]}}
    g.op("y", "Relu", [x])
    with pytest.raises(ConversionError, match="not static"):
        g.to_onnx(["y"])
    model = g.to_onnx(["y"], input_shapes={"x": [1, 4, 4, 1]})
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 4, 4, 1]


def test_nchw_tensor_with_a_lower_rank_runtime_operand_and_a_flat_mean() -> None:
    """A conv output (NCHW inside) added to a run-time [C] vector, and reduced without keep_dims."""
    g = Graph()
    image, bias = _floats(1, 6, 5, 2), _floats(3)
    w = _floats(3, 3, 2, 3)
    conv = g.op("conv", "Conv2D", [g.placeholder("x", image), g.const("w", w)], strides=[1, 1, 1, 1], padding="SAME")
    added = g.op("added", "AddV2", [conv, g.placeholder("bias", bias)])
    g.op("flat_mean", "Mean", [conv, g.const("axes", np.array([1, 2], np.int32))], keep_dims=False)
    added_out, flat_mean = g.run("added", "flat_mean")
    c = ref_conv2d(image, w, (1, 1), "SAME")
    _close(added_out, c + bias)
    _close(flat_mean, c.mean(axis=(1, 2)), tol=1e-5)
