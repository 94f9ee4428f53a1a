"""Translate a TF.js graph model into an ONNX model, with the ``onnx`` package only.

No TensorFlow, tf2onnx or onnx-tf: each TensorFlow op this converter knows has a translator
function in :data:`TRANSLATORS` that emits the equivalent ONNX nodes; any other op stops the
conversion with :class:`UnsupportedOp`, naming it. The ops are those of ordinary TF.js vision
models (convolutions with fused bias and activation, depthwise convolutions, pooling, resizing,
element-wise arithmetic, reductions, reshaping, slicing, top-k, gather).

Layout. TensorFlow works in NHWC, ONNX's Conv, MaxPool and Resize in NCHW. The ONNX model keeps
TF.js's interface (same input and output names, NHWC shapes) and converts the body lazily: every
4-D tensor is produced in the layout its producer prefers (NCHW for convolutions, pooling and
resizing; element-wise ops, keep-dims reductions and concatenations follow their inputs), and a
Transpose is inserted only where a consumer needs the other layout, once per tensor. A
MobileNet-style body is then NCHW from the first convolution to its heads, with one Transpose
at the input and one per 4-D output.

Semantics that differ between the two and are translated exactly:

- ``padding="SAME"``: TensorFlow pads ``total // 2`` before and the rest after (the extra pixel
  goes at the bottom / right). The pads are computed from the static shapes and written
  explicitly; ``auto_pad`` is never used.
- Depthwise convolution: filter ``[H, W, C, M]`` becomes a grouped Conv (``group=C``) with
  weights ``[C*M, 1, H, W]``; TensorFlow's output channel ``c*M + m`` is ONNX's too.
- ``FloorDiv`` / ``FloorMod`` round toward minus infinity (Python's ``//`` and ``%``); ONNX
  ``Div`` on integers truncates, so FloorDiv is ``(a - floormod(a, b)) / b`` (exact), and
  FloorMod is ``Mod`` with ``fmod=0`` on integers, ``fmod`` plus a sign fix on floats.
- ``ResizeBilinear``: ``align_corners`` -> ``align_corners``, ``half_pixel_centers`` ->
  ``half_pixel``, neither -> ``asymmetric`` (TF 1's original sampling).
- ``TopKV2``: ONNX's indices are int64; they are cast to TF's int32.

Fusion: MobileNetV3's hard-swish, four element-wise TF nodes, becomes one ONNX HardSwish (times
the graph's own constant; see :func:`fuse_hard_swish`), which onnxruntime runs as part of its
convolution chain.

Shapes must be static (as they are in a TF.js graph model with a fixed input size): they are
propagated through the graph at conversion time to compute paddings and resolve reshapes, and
``onnx.checker`` with full shape inference checks the result. Constant inputs that decide shapes
(reshape targets, slice bounds, resize sizes, axes) must be Const nodes, as the TF.js converter
leaves them after its constant folding.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from retouch.convert import TFJS_TO_ONNX_VERSION
from retouch.convert.tfjs import TF_DTYPES, Node, TensorRef, TFJSGraph, load_graph_model
from retouch.errors import RetouchError

# Recorded in the model (producer_version) and by the weights store next to converted files.
CONVERTER_VERSION = TFJS_TO_ONNX_VERSION
OPSET = 17
IR_VERSION = 8  # the IR of opset 17; onnxruntime >= 1.14 reads it

NHWC = "NHWC"
NCHW = "NCHW"
_TO_NCHW = (0, 3, 1, 2)
_TO_NHWC = (0, 2, 3, 1)
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


class ConversionError(RetouchError):
    """The TF.js graph cannot be converted: a malformed node, a dynamic shape, an unsupported attribute."""


class UnsupportedOp(ConversionError):
    """The graph uses a TensorFlow op that the converter has no translator for."""


@dataclass
class _Tensor:
    """A TF tensor during conversion: its TF (logical, NHWC) shape and dtype, its constant value if
    any, and its ONNX name in each layout it has been materialized in."""

    shape: tuple[int, ...]
    dtype: np.dtype
    value: np.ndarray | None = None
    names: dict[str, str] = field(default_factory=dict)
    native: str = NHWC


def _nchw_axis(axis: int) -> int:
    """Where NHWC axis ``axis`` (0..3) is in NCHW."""
    return _TO_NCHW.index(axis)


def _onnx_type(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class _Context:
    """The ONNX graph being built, and the TF tensors translated so far."""

    def __init__(self, graph: TFJSGraph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.tensors: dict[TensorRef, _Tensor] = {}
        self.used: set[str] = {node.name for node in graph.nodes}
        self._scalars: dict[tuple[str, float], str] = {}
        self.current: Node | None = None

    # -- names and nodes -------------------------------------------------------------------------

    def unique(self, base: str) -> str:
        name = base
        counter = 1
        while name in self.used:
            name = f"{base}_{counter}"
            counter += 1
        self.used.add(name)
        return name

    def error(self, message: str) -> ConversionError:
        node = self.current
        where = f"{node.op} node {node.name!r}: " if node is not None else ""
        return ConversionError(f"cannot convert the TF.js graph: {where}{message}")

    def add(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str] | None = None, **attrs: object) -> list[str]:
        """Append an ONNX node; ``outputs`` default to one fresh name derived from the current TF node."""
        base = self.current.name if self.current is not None else op_type
        if outputs is None:
            outputs = [self.unique(f"{base}__{op_type.lower()}")]
        else:
            self.used.update(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.unique(f"{base}/{op_type}"), **attrs))
        return list(outputs)

    def constant(self, array: np.ndarray, base: str, exact: bool = False) -> str:
        """An initializer holding ``array``, named ``base`` (``exact``: a name reserved for it) or a fresh variant."""
        name = base if exact else self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value: float, dtype: np.dtype) -> str:
        key = (np.dtype(dtype).str, float(value))
        if key not in self._scalars:
            self._scalars[key] = self.constant(np.array(value, dtype=dtype), f"const__{np.dtype(dtype).name}_{value:g}")
        return self._scalars[key]

    def int64s(self, values: Sequence[int], base: str = "shape") -> str:
        owner = self.current.name if self.current is not None else "graph"
        return self.constant(np.array(list(values), dtype=np.int64), f"{owner}__{base}")

    # -- tensors ---------------------------------------------------------------------------------

    def tensor(self, ref: TensorRef) -> _Tensor:
        try:
            return self.tensors[ref]
        except KeyError:
            raise self.error(f"input {str(ref)!r} is not produced by any node of the graph") from None

    def value(self, ref: TensorRef, what: str) -> np.ndarray:
        """The constant value of ``ref``; an error naming ``what`` it is when it is computed at run time."""
        tensor = self.tensor(ref)
        if tensor.value is None:
            raise self.error(f"its {what} ({str(ref)!r}) must be a constant; it is computed at run time")
        return tensor.value

    def input(self, index: int) -> TensorRef:
        node = self.current
        assert node is not None
        if index >= len(node.inputs):
            raise self.error(f"it has {len(node.inputs)} inputs, at least {index + 1} expected")
        return node.inputs[index]

    def is_nchw(self, ref: TensorRef) -> bool:
        """Whether ``ref`` is a run-time 4-D tensor produced in NCHW."""
        tensor = self.tensor(ref)
        return tensor.value is None and tensor.native == NCHW

    def name(self, ref: TensorRef, layout: str = NHWC) -> str:
        """The ONNX name of ``ref`` in ``layout`` (NCHW only for 4-D tensors), materializing it if needed."""
        tensor = self.tensor(ref)
        if layout in tensor.names:
            return tensor.names[layout]
        if layout == NCHW and len(tensor.shape) != 4:
            raise self.error(f"{str(ref)!r} has rank {len(tensor.shape)}; only 4-D tensors change layout")
        canonical = str(ref)
        if tensor.value is not None:
            # A Const node's own (NHWC) value takes its TF name, reserved for it in ``used``.
            if layout == NHWC:
                name = self.constant(tensor.value, canonical, exact=True)
            else:
                name = self.constant(tensor.value.transpose(_TO_NCHW), f"{canonical}__nchw")
        else:
            source_layout = tensor.native
            perm = _TO_NCHW if layout == NCHW else _TO_NHWC
            target = canonical if layout == NHWC else self.unique(f"{canonical}__nchw")
            name = self.add("Transpose", [tensor.names[source_layout]], [target], perm=list(perm))[0]
        tensor.names[layout] = name
        return name

    def operand(self, ref: TensorRef, layout: str, rank: int) -> str:
        """``ref`` as an operand of a broadcasting op whose output has ``rank`` and ``layout``.

        In NCHW a constant of lower rank is first given the output's rank (leading ones, as
        NumPy broadcasting does) and then transposed; scalars stay as they are.
        """
        tensor = self.tensor(ref)
        if layout == NHWC or len(tensor.shape) == 0:
            return self.name(ref, NHWC)
        if tensor.value is not None and len(tensor.shape) < rank:
            expanded = tensor.value.reshape((1,) * (rank - len(tensor.shape)) + tensor.value.shape)
            return self.constant(expanded.transpose(_TO_NCHW), f"{ref}__nchw")
        return self.name(ref, NCHW)

    def output(self, index: int, shape: Sequence[int], dtype: np.dtype, layout: str = NHWC) -> str:
        """Register output ``index`` of the current node and return the ONNX name to write it to."""
        node = self.current
        assert node is not None
        ref = TensorRef(node.name, index)
        shape = tuple(int(dim) for dim in shape)
        if layout == NCHW and len(shape) != 4:
            layout = NHWC
        name = str(ref) if layout == NHWC else self.unique(f"{ref}__nchw")
        self.used.add(name)
        self.tensors[ref] = _Tensor(shape=shape, dtype=np.dtype(dtype), names={layout: name}, native=layout)
        return name


Translator = Callable[[_Context, Node], None]


# -- helpers ------------------------------------------------------------------------------------


def _attr(ctx: _Context, node: Node, key: str, default: object = None) -> object:
    if key in node.attrs:
        return node.attrs[key]
    if default is None:
        raise ctx.error(f"it has no attribute {key!r}")
    return default


def _dtype(ctx: _Context, node: Node, key: str) -> np.dtype:
    name = _attr(ctx, node, key)
    try:
        return TF_DTYPES[str(name)]
    except KeyError:
        raise ctx.error(f"its {key} {name!r} is not a supported dtype") from None


def _check_nhwc(ctx: _Context, node: Node) -> None:
    data_format = node.attrs.get("data_format", "NHWC")
    if data_format != "NHWC":
        raise ctx.error(f"data_format {data_format!r} is not supported; only NHWC")


def _spatial(ctx: _Context, node: Node, key: str, default: list[int] | None = None) -> tuple[int, int]:
    values = node.attrs.get(key, default)
    if not isinstance(values, list) or len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise ctx.error(f"its {key} {values!r} must be [1, h, w, 1]")
    return int(values[1]), int(values[2])


def _paddings(
    ctx: _Context, node: Node, size: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[list[int], list[int]]:
    """ONNX pads ``[top, left, bottom, right]`` and the output size, as TensorFlow computes them."""
    padding = _attr(ctx, node, "padding")
    before, after, out = [], [], []
    for axis in range(2):
        length, k, s, d = size[axis], kernel[axis], strides[axis], dilations[axis]
        if length < 0:
            raise ctx.error("its input has a dynamic spatial size; the converter needs static shapes")
        effective = (k - 1) * d + 1
        if padding == "SAME":
            out_length = -(-length // s)
            total = max((out_length - 1) * s + effective - length, 0)
            # TensorFlow puts the odd pixel after (bottom / right).
            before.append(total // 2)
            after.append(total - total // 2)
        elif padding == "VALID":
            out_length = (length - effective) // s + 1
            before.append(0)
            after.append(0)
        elif padding == "EXPLICIT":
            explicit = node.attrs.get("explicit_paddings", [])
            if len(explicit) != 8:
                raise ctx.error(f"its explicit_paddings {explicit!r} must have 8 values")
            pad_before, pad_after = int(explicit[2 + 2 * axis]), int(explicit[3 + 2 * axis])
            out_length = (length + pad_before + pad_after - effective) // s + 1
            before.append(pad_before)
            after.append(pad_after)
        else:
            raise ctx.error(f"padding {padding!r} is not supported")
        if out_length <= 0:
            raise ctx.error(f"its output would be empty (input {length}, kernel {k}, stride {s})")
        out.append(out_length)
    return before + after, out


def _activation(ctx: _Context, op: str, source: str, target: str, dtype: np.dtype, alpha: float, extra: str | None) -> None:
    """Apply TF activation ``op`` from ONNX tensor ``source`` into ``target``."""
    if op == "Relu":
        ctx.add("Relu", [source], [target])
    elif op == "Relu6":
        ctx.add("Clip", [source, ctx.scalar(0, dtype), ctx.scalar(6, dtype)], [target])
    elif op == "Sigmoid":
        ctx.add("Sigmoid", [source], [target])
    elif op == "Elu":
        ctx.add("Elu", [source], [target], alpha=1.0)
    elif op == "LeakyRelu":
        ctx.add("LeakyRelu", [source], [target], alpha=float(alpha))
    elif op == "Prelu":
        if extra is None:
            raise ctx.error("Prelu needs its alpha input")
        ctx.add("PRelu", [source, extra], [target])
    else:
        raise ctx.error(f"fused activation {op!r} is not supported")


# -- convolution and pooling --------------------------------------------------------------------


def _convolution(ctx: _Context, node: Node, depthwise: bool, fused: bool) -> None:
    _check_nhwc(ctx, node)
    x_ref, w_ref = ctx.input(0), ctx.input(1)
    x = ctx.tensor(x_ref)
    if len(x.shape) != 4:
        raise ctx.error(f"its input has rank {len(x.shape)}; 4 expected")
    filt = ctx.value(w_ref, "filter").astype(x.dtype, copy=False)
    if filt.ndim != 4:
        raise ctx.error(f"its filter has shape {list(filt.shape)}; [h, w, in, out] expected")
    batch, height, width, channels = x.shape
    kh, kw = filt.shape[:2]
    strides = _spatial(ctx, node, "strides")
    dilations = _spatial(ctx, node, "dilations", [1, 1, 1, 1])
    pads, (out_h, out_w) = _paddings(ctx, node, (height, width), (kh, kw), strides, dilations)
    if depthwise:
        if filt.shape[2] != channels:
            raise ctx.error(f"its filter has {filt.shape[2]} input channels, its input {channels}")
        multiplier = filt.shape[3]
        weights = filt.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)
        group = channels
        out_channels = channels * multiplier
    else:
        in_channels, out_channels = filt.shape[2], filt.shape[3]
        if in_channels == 0 or channels % in_channels or out_channels % (channels // in_channels):
            raise ctx.error(f"its filter has {in_channels} input channels, its input {channels}")
        weights = filt.transpose(3, 2, 0, 1)
        group = channels // in_channels

    fused_ops: list[str] = list(node.attrs.get("fused_ops", [])) if fused else []
    args = node.inputs[2:]
    inputs = [ctx.name(x_ref, NCHW), ctx.constant(weights, f"{node.name}__weights")]
    if fused_ops and fused_ops[0] == "BiasAdd":
        if not args:
            raise ctx.error("its fused BiasAdd has no bias input")
        bias = ctx.value(args[0], "bias").astype(x.dtype, copy=False).reshape(-1)
        if bias.shape[0] != out_channels:
            raise ctx.error(f"its bias has {bias.shape[0]} values for {out_channels} channels")
        inputs.append(ctx.constant(bias, f"{node.name}__bias"))
        fused_ops = fused_ops[1:]
        args = args[1:]
    if len(fused_ops) > 1:
        raise ctx.error(f"fused ops {node.attrs.get('fused_ops')!r} are not supported")

    target = ctx.output(0, (batch, out_h, out_w, out_channels), x.dtype, NCHW)
    conv_out = target if not fused_ops else ctx.unique(f"{node.name}__conv")
    ctx.add(
        "Conv",
        inputs,
        [conv_out],
        kernel_shape=[kh, kw],
        strides=list(strides),
        dilations=list(dilations),
        pads=pads,
        group=group,
    )
    if fused_ops:
        extra = None
        if fused_ops[0] == "Prelu":
            if not args:
                raise ctx.error("its fused Prelu has no alpha input")
            alpha = ctx.value(args[0], "Prelu alpha").astype(x.dtype).reshape(-1)
            extra = ctx.constant(np.broadcast_to(alpha, (out_channels,)).reshape(out_channels, 1, 1), f"{node.name}__alpha")
        leaky = float(node.attrs.get("leakyrelu_alpha", 0.2))
        _activation(ctx, fused_ops[0], conv_out, target, x.dtype, leaky, extra)


def _conv2d(ctx: _Context, node: Node) -> None:
    _convolution(ctx, node, depthwise=False, fused=False)


def _fused_conv2d(ctx: _Context, node: Node) -> None:
    _convolution(ctx, node, depthwise=False, fused=True)


def _depthwise(ctx: _Context, node: Node) -> None:
    _convolution(ctx, node, depthwise=True, fused=False)


def _fused_depthwise(ctx: _Context, node: Node) -> None:
    _convolution(ctx, node, depthwise=True, fused=True)


def _pool(onnx_op: str) -> Translator:
    def translate(ctx: _Context, node: Node) -> None:
        _check_nhwc(ctx, node)
        x_ref = ctx.input(0)
        x = ctx.tensor(x_ref)
        if len(x.shape) != 4:
            raise ctx.error(f"its input has rank {len(x.shape)}; 4 expected")
        kernel = _spatial(ctx, node, "ksize")
        strides = _spatial(ctx, node, "strides")
        pads, (out_h, out_w) = _paddings(ctx, node, x.shape[1:3], kernel, strides, (1, 1))
        target = ctx.output(0, (x.shape[0], out_h, out_w, x.shape[3]), x.dtype, NCHW)
        attrs: dict[str, object] = {"kernel_shape": list(kernel), "strides": list(strides), "pads": pads}
        if onnx_op == "AveragePool":
            # TensorFlow averages over the window's pixels inside the image only.
            attrs["count_include_pad"] = 0
        ctx.add(onnx_op, [ctx.name(x_ref, NCHW)], [target], **attrs)

    return translate


def _resize_bilinear(ctx: _Context, node: Node) -> None:
    x_ref = ctx.input(0)
    x = ctx.tensor(x_ref)
    if len(x.shape) != 4:
        raise ctx.error(f"its input has rank {len(x.shape)}; 4 expected")
    size = [int(v) for v in ctx.value(ctx.input(1), "size").reshape(-1)]
    if len(size) != 2 or min(size) <= 0:
        raise ctx.error(f"its size {size!r} must be two positive integers")
    align_corners = bool(node.attrs.get("align_corners", False))
    half_pixel = bool(node.attrs.get("half_pixel_centers", False))
    if align_corners and half_pixel:
        raise ctx.error("align_corners and half_pixel_centers cannot both be set")
    mode = "align_corners" if align_corners else "half_pixel" if half_pixel else "asymmetric"
    batch, _, _, channels = x.shape
    target = ctx.output(0, (batch, size[0], size[1], channels), np.float32, NCHW)
    source = ctx.name(x_ref, NCHW)
    if x.dtype != np.float32:
        # TF's ResizeBilinear always returns float32.
        source = ctx.add("Cast", [source], to=TensorProto.FLOAT)[0]
    ctx.add(
        "Resize",
        [source, "", "", ctx.int64s([batch, channels, size[0], size[1]], "sizes")],
        [target],
        mode="linear",
        coordinate_transformation_mode=mode,
    )


# -- element-wise -------------------------------------------------------------------------------


def _broadcast(ctx: _Context, a: TensorRef, b: TensorRef) -> tuple[tuple[int, ...], str]:
    """The broadcast shape of ``a`` and ``b`` and the layout to compute them in."""
    shape_a, shape_b = ctx.tensor(a).shape, ctx.tensor(b).shape
    try:
        shape = tuple(np.broadcast_shapes(shape_a, shape_b))
    except ValueError:
        raise ctx.error(f"its inputs' shapes {list(shape_a)} and {list(shape_b)} do not broadcast") from None
    layout = NHWC
    if len(shape) == 4 and (ctx.is_nchw(a) or ctx.is_nchw(b)):
        # In NCHW, a run-time operand must be 4-D (or a scalar): a constant can be reshaped, a
        # lower-rank run-time tensor could not be broadcast the same way.
        if all(ctx.tensor(r).value is not None or len(ctx.tensor(r).shape) in (0, 4) for r in (a, b)):
            layout = NCHW
    return shape, layout


def _binary(onnx_op: str, boolean: bool = False) -> Translator:
    def translate(ctx: _Context, node: Node) -> None:
        a, b = ctx.input(0), ctx.input(1)
        shape, layout = _broadcast(ctx, a, b)
        dtype = np.dtype(np.bool_) if boolean else ctx.tensor(a).dtype
        operands = [ctx.operand(a, layout, len(shape)), ctx.operand(b, layout, len(shape))]
        ctx.add(onnx_op, operands, [ctx.output(0, shape, dtype, layout)])

    return translate


def _floor_mod_names(ctx: _Context, a: str, b: str, dtype: np.dtype, target: str | None) -> str:
    """``a mod b`` with the sign of ``b`` (TF FloorMod) into ``target`` (a fresh name if None)."""
    outputs = None if target is None else [target]
    if np.issubdtype(dtype, np.integer):
        # ONNX Mod with fmod=0 on integers has Python's semantics: the result takes b's sign.
        return ctx.add("Mod", [a, b], outputs, fmod=0)[0]
    # Floats: C fmod (sign of a), then add b where the result is non-zero with a sign unlike b's.
    remainder = ctx.add("Mod", [a, b], fmod=1)[0]
    zero = ctx.scalar(0, dtype)
    nonzero = ctx.add("Not", [ctx.add("Equal", [remainder, zero])[0]])[0]
    signs_differ = ctx.add("Xor", [ctx.add("Less", [remainder, zero])[0], ctx.add("Less", [b, zero])[0]])[0]
    fix = ctx.add("And", [nonzero, signs_differ])[0]
    return ctx.add("Where", [fix, ctx.add("Add", [remainder, b])[0], remainder], outputs)[0]


def _floor_mod(ctx: _Context, node: Node) -> None:
    a, b = ctx.input(0), ctx.input(1)
    shape, layout = _broadcast(ctx, a, b)
    dtype = ctx.tensor(a).dtype
    operands = [ctx.operand(a, layout, len(shape)), ctx.operand(b, layout, len(shape))]
    _floor_mod_names(ctx, operands[0], operands[1], dtype, ctx.output(0, shape, dtype, layout))


def _floor_div(ctx: _Context, node: Node) -> None:
    a, b = ctx.input(0), ctx.input(1)
    shape, layout = _broadcast(ctx, a, b)
    dtype = ctx.tensor(a).dtype
    left, right = ctx.operand(a, layout, len(shape)), ctx.operand(b, layout, len(shape))
    target = ctx.output(0, shape, dtype, layout)
    if np.issubdtype(dtype, np.integer):
        # ONNX Div truncates integers; a - floormod(a, b) is a multiple of b, so dividing it is exact.
        remainder = _floor_mod_names(ctx, left, right, dtype, None)
        ctx.add("Div", [ctx.add("Sub", [left, remainder])[0], right], [target])
    else:
        ctx.add("Floor", [ctx.add("Div", [left, right])[0]], [target])


def _unary(onnx_op: str | None, **attrs: object) -> Translator:
    """A shape- and layout-preserving op; ``None``: a TF activation handled by :func:`_activation`."""

    def translate(ctx: _Context, node: Node) -> None:
        ref = ctx.input(0)
        x = ctx.tensor(ref)
        layout = NCHW if ctx.is_nchw(ref) else NHWC
        source = ctx.name(ref, layout)
        target = ctx.output(0, x.shape, x.dtype, layout)
        if onnx_op is None:
            _activation(ctx, node.op, source, target, x.dtype, float(node.attrs.get("alpha", 0.2)), None)
        else:
            ctx.add(onnx_op, [source], [target], **attrs)

    return translate


def _cast(ctx: _Context, node: Node) -> None:
    ref = ctx.input(0)
    x = ctx.tensor(ref)
    dtype = _dtype(ctx, node, "DstT")
    layout = NCHW if ctx.is_nchw(ref) else NHWC
    ctx.add("Cast", [ctx.name(ref, layout)], [ctx.output(0, x.shape, dtype, layout)], to=_onnx_type(dtype))


# -- reductions and shapes ----------------------------------------------------------------------


def _axes(ctx: _Context, ref: TensorRef, rank: int, what: str = "axis") -> list[int]:
    values = [int(v) for v in ctx.value(ref, what).reshape(-1)]
    for value in values:
        if not -rank <= value < rank:
            raise ctx.error(f"its {what} {value} is out of range for rank {rank}")
    return sorted({v % rank for v in values}) if rank else []


def _reduce(onnx_op: str) -> Translator:
    def translate(ctx: _Context, node: Node) -> None:
        ref = ctx.input(0)
        x = ctx.tensor(ref)
        axes = _axes(ctx, ctx.input(1), len(x.shape), "reduction axes")
        keep = bool(node.attrs.get("keep_dims", False))
        shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if keep else [d for i, d in enumerate(x.shape) if i not in axes]
        layout = NCHW if keep and ctx.is_nchw(ref) else NHWC
        target = ctx.output(0, shape, x.dtype, layout)
        source = ctx.name(ref, layout)
        if not axes:
            # TF reduces nothing; ONNX with no axes would reduce everything.
            ctx.add("Identity", [source], [target])
            return
        onnx_axes = sorted(_nchw_axis(a) for a in axes) if layout == NCHW else axes
        ctx.add(onnx_op, [source], [target], axes=onnx_axes, keepdims=int(keep))

    return translate


def _concat(ctx: _Context, node: Node) -> None:
    count = int(node.attrs.get("N", len(node.inputs) - 1))
    refs = node.inputs[:count]
    if not refs or len(node.inputs) < count + 1:
        raise ctx.error(f"it needs {count} values and an axis")
    shapes = [ctx.tensor(r).shape for r in refs]
    rank = len(shapes[0])
    (axis,) = _axes(ctx, node.inputs[count], rank)
    for shape in shapes:
        if len(shape) != rank or any(d != shapes[0][i] for i, d in enumerate(shape) if i != axis):
            raise ctx.error(f"its inputs' shapes {[list(s) for s in shapes]} do not concatenate on axis {axis}")
    out_shape = list(shapes[0])
    out_shape[axis] = sum(shape[axis] for shape in shapes)
    layout = NCHW if rank == 4 and any(ctx.is_nchw(r) for r in refs) else NHWC
    names = [ctx.name(r, layout) for r in refs]
    onnx_axis = _nchw_axis(axis) if layout == NCHW else axis
    ctx.add("Concat", names, [ctx.output(0, out_shape, ctx.tensor(refs[0]).dtype, layout)], axis=onnx_axis)


def _reshape(ctx: _Context, node: Node) -> None:
    ref = ctx.input(0)
    x = ctx.tensor(ref)
    target = [int(v) for v in ctx.value(ctx.input(1), "shape").reshape(-1)]
    total = math.prod(x.shape)
    if target.count(-1) > 1 or any(v < -1 for v in target):
        raise ctx.error(f"its shape {target} is invalid")
    if -1 in target:
        known = math.prod(v for v in target if v != -1)
        if known == 0 or total % known:
            raise ctx.error(f"cannot reshape {list(x.shape)} to {target}")
        target = [total // known if v == -1 else v for v in target]
    if math.prod(target) != total:
        raise ctx.error(f"cannot reshape {list(x.shape)} to {target}")
    ctx.add("Reshape", [ctx.name(ref), ctx.int64s(target)], [ctx.output(0, target, x.dtype)])


def _expand_dims(ctx: _Context, node: Node) -> None:
    ref = ctx.input(0)
    x = ctx.tensor(ref)
    rank = len(x.shape)
    values = ctx.value(ctx.input(1), "axis").reshape(-1)
    if values.size != 1 or not -rank - 1 <= int(values[0]) <= rank:
        raise ctx.error(f"its axis {values.tolist()} must be one value in [{-rank - 1}, {rank}]")
    axis = int(values[0]) % (rank + 1)
    shape = list(x.shape)
    shape.insert(axis, 1)
    ctx.add("Unsqueeze", [ctx.name(ref), ctx.int64s([axis], "axes")], [ctx.output(0, shape, x.dtype)])


def _strided_slice_index(node: Node, begin: np.ndarray, end: np.ndarray, strides: np.ndarray) -> tuple:
    """TF's sparse slice spec as the equivalent NumPy index (slices, ints, None, Ellipsis)."""
    masks = {key: int(node.attrs.get(key, 0)) for key in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    index: list[object] = []
    for i in range(len(begin)):
        bit = 1 << i
        if masks["ellipsis_mask"] & bit:
            index.append(Ellipsis)
        elif masks["new_axis_mask"] & bit:
            index.append(None)
        elif masks["shrink_axis_mask"] & bit:
            index.append(int(begin[i]))
        else:
            start = None if masks["begin_mask"] & bit else int(begin[i])
            stop = None if masks["end_mask"] & bit else int(end[i])
            index.append(slice(start, stop, int(strides[i])))
    return tuple(index)


def _strided_slice(ctx: _Context, node: Node) -> None:
    ref = ctx.input(0)
    x = ctx.tensor(ref)
    begin = ctx.value(ctx.input(1), "begin").reshape(-1)
    end = ctx.value(ctx.input(2), "end").reshape(-1)
    strides = ctx.value(ctx.input(3), "strides").reshape(-1)
    if not len(begin) == len(end) == len(strides) or np.any(strides == 0):
        raise ctx.error("its begin, end and strides must have the same length and no zero stride")
    index = _strided_slice_index(node, begin, end, strides)
    if sum(item is Ellipsis for item in index) > 1:
        raise ctx.error("more than one ellipsis")
    try:
        out_shape = np.broadcast_to(np.zeros((), dtype=np.bool_), x.shape)[index].shape
    except IndexError as exc:
        raise ctx.error(f"slice {index!r} of shape {list(x.shape)}: {exc}") from None

    # Expand the ellipsis (or the implicit one at the end) over the remaining input axes.
    consuming = sum(isinstance(item, (int, slice)) for item in index)
    expanded: list[object] = []
    for item in index:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (len(x.shape) - consuming))
        else:
            expanded.append(item)
    if Ellipsis not in index:
        expanded.extend([slice(None)] * (len(x.shape) - consuming))

    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    in_axis = out_axis = 0
    for item in expanded:
        if item is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        dim = x.shape[in_axis]
        if isinstance(item, int):
            position = item + dim if item < 0 else item
            starts.append(position)
            ends.append(position + 1)
            axes.append(in_axis)
            steps.append(1)
            squeeze.append(in_axis)
        else:
            assert isinstance(item, slice)
            step = 1 if item.step is None else item.step
            if not (item.start is None and item.stop is None and step == 1):
                if step > 0:
                    starts.append(0 if item.start is None else item.start)
                    ends.append(_INT64_MAX if item.stop is None else item.stop)
                else:
                    starts.append(_INT64_MAX if item.start is None else item.start)
                    ends.append(_INT64_MIN if item.stop is None else item.stop)
                axes.append(in_axis)
                steps.append(step)
            out_axis += 1
        in_axis += 1

    # Slice the sliced axes, drop the shrunk ones, insert the new ones: each stage that applies
    # takes the previous one's output, and the last writes the node's output.
    stages: list[tuple[str, list[str]]] = []
    if axes:
        stages.append(("Slice", [ctx.int64s(starts, "starts"), ctx.int64s(ends, "ends"), ctx.int64s(axes, "axes"), ctx.int64s(steps, "steps")]))
    if squeeze:
        stages.append(("Squeeze", [ctx.int64s(squeeze, "squeeze_axes")]))
    if unsqueeze:
        stages.append(("Unsqueeze", [ctx.int64s(unsqueeze, "unsqueeze_axes")]))
    if not stages:
        stages.append(("Identity", []))
    current = ctx.name(ref)
    target = ctx.output(0, out_shape, x.dtype)
    for position, (op, extra) in enumerate(stages):
        current = ctx.add(op, [current, *extra], [target] if position == len(stages) - 1 else None)[0]


def _gather(ctx: _Context, node: Node) -> None:
    params_ref, indices_ref = ctx.input(0), ctx.input(1)
    params, indices = ctx.tensor(params_ref), ctx.tensor(indices_ref)
    if int(node.attrs.get("batch_dims", 0)) != 0:
        raise ctx.error("batch_dims other than 0 is not supported")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ctx.error(f"its indices have dtype {indices.dtype}; integers expected")
    rank = len(params.shape)
    (axis,) = _axes(ctx, ctx.input(2), rank) if len(node.inputs) > 2 else (0,)
    shape = params.shape[:axis] + indices.shape + params.shape[axis + 1 :]
    ctx.add("Gather", [ctx.name(params_ref), ctx.name(indices_ref)], [ctx.output(0, shape, params.dtype)], axis=axis)


def _top_k(ctx: _Context, node: Node) -> None:
    ref = ctx.input(0)
    x = ctx.tensor(ref)
    k_values = ctx.value(ctx.input(1), "k").reshape(-1)
    if k_values.size != 1 or not x.shape or not 0 <= int(k_values[0]) <= x.shape[-1]:
        raise ctx.error(f"its k {k_values.tolist()} must be one value in [0, {x.shape[-1] if x.shape else 0}]")
    k = int(k_values[0])
    shape = x.shape[:-1] + (k,)
    values = ctx.output(0, shape, x.dtype)
    index_dtype = TF_DTYPES.get(str(node.attrs.get("index_type", "DT_INT32")), np.dtype(np.int32))
    indices = ctx.output(1, shape, index_dtype)
    wide = ctx.unique(f"{node.name}__indices_int64")
    # TF returns the top k largest in descending order whatever ``sorted`` says (it only allows more).
    ctx.add("TopK", [ctx.name(ref), ctx.int64s([k], "k")], [values, wide], axis=-1, largest=1, sorted=1)
    ctx.add("Cast", [wide], [indices], to=_onnx_type(index_dtype))


# -- fusions ------------------------------------------------------------------------------------

HARD_SWISH = "_RetouchHardSwish"  # not a TF op: what :func:`fuse_hard_swish` makes of the pattern


def _hard_swish(ctx: _Context, node: Node) -> None:
    """``scale * x * relu6(x + 3) / 6`` as ONNX HardSwish (times ``scale`` when it is not 1)."""
    ref = ctx.input(0)
    x = ctx.tensor(ref)
    layout = NCHW if ctx.is_nchw(ref) else NHWC
    target = ctx.output(0, x.shape, x.dtype, layout)
    scale = float(node.attrs["scale"])
    if scale == 1.0:
        ctx.add("HardSwish", [ctx.name(ref, layout)], [target])
    else:
        swished = ctx.add("HardSwish", [ctx.name(ref, layout)])[0]
        ctx.add("Mul", [swished, ctx.scalar(scale, x.dtype)], [target])


def fuse_hard_swish(graph: TFJSGraph) -> list[Node]:
    """The graph's nodes with each hard-swish subgraph replaced by one node.

    MobileNetV3's ``h_swish(x) = x * relu6(x + 3) / 6`` reaches a TF.js graph as four element-wise
    nodes, ``Mul(Mul(c, x), Relu6(Add(x, 3)))`` (TF's grappler moves the constant c = 1/6 next to
    x) or ``Mul(c, Mul(x, Relu6(Add(x, 3))))``. onnxruntime runs one HardSwish several times faster
    than the four (they break its blocked-layout convolution chain), so the pattern becomes
    ``HardSwish(x) * 6c``: equal to TF's up to float rounding, with c exactly as stored (6c is not
    exactly 1 when c was quantized). Only subgraphs whose inner results have no other use are
    fused.
    """
    by_name = {node.name: node for node in graph.nodes}
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for ref in node.inputs:
            uses[ref.node] = uses.get(ref.node, 0) + 1
    for output in graph.outputs:
        name = TensorRef.parse(output).node
        uses[name] = uses.get(name, 0) + 1

    def producer(ref: TensorRef, op: str) -> Node | None:
        node = by_name.get(ref.node)
        if node is None or node.op != op or ref.index != 0 or uses.get(node.name, 0) != 1:
            return None
        return node

    def scalar(ref: TensorRef) -> float | None:
        node = by_name.get(ref.node)
        value = graph.weights.get(ref.node) if node is not None and node.op == "Const" else None
        if value is None or value.size != 1 or value.dtype != np.float32:
            return None
        return float(value.reshape(()))

    def relu6_of_x_plus_3(ref: TensorRef) -> TensorRef | None:
        relu6 = producer(ref, "Relu6")
        add = producer(relu6.inputs[0], "Add") if relu6 is not None and relu6.inputs else None
        if add is None or len(add.inputs) != 2:
            return None
        for x, three in (add.inputs, add.inputs[::-1]):
            if scalar(three) == 3.0 and scalar(x) is None:
                return x
        return None

    def times_constant(ref: TensorRef) -> tuple[TensorRef, float] | None:
        mul = producer(ref, "Mul")
        if mul is None or len(mul.inputs) != 2:
            return None
        for x, c in (mul.inputs, mul.inputs[::-1]):
            value = scalar(c)
            if value is not None and scalar(x) is None:
                return x, value
        return None

    def match(node: Node) -> tuple[TensorRef, float] | None:
        if node.op != "Mul" or len(node.inputs) != 2:
            return None
        for left, right in (node.inputs, node.inputs[::-1]):
            # Mul(Mul(c, x), Relu6(Add(x, 3)))
            x = relu6_of_x_plus_3(right)
            scaled = times_constant(left) if x is not None else None
            if scaled is not None and scaled[0] == x:
                return x, scaled[1]
            # Mul(c, Mul(x, Relu6(Add(x, 3))))
            value = scalar(left)
            inner = producer(right, "Mul") if value is not None else None
            if inner is not None and len(inner.inputs) == 2:
                for a, b in (inner.inputs, inner.inputs[::-1]):
                    if relu6_of_x_plus_3(b) == a:
                        return a, value
        return None

    fused: list[Node] = []
    for node in graph.nodes:
        found = match(node)
        if found is None:
            fused.append(node)
        else:
            x, c = found
            fused.append(Node(name=node.name, op=HARD_SWISH, inputs=[x], attrs={"scale": float(np.float32(6 * c))}))
    return fused


TRANSLATORS: dict[str, Translator] = {
    # convolution, pooling, resizing (NCHW inside)
    "Conv2D": _conv2d,
    "_FusedConv2D": _fused_conv2d,
    "DepthwiseConv2dNative": _depthwise,
    "FusedDepthwiseConv2dNative": _fused_depthwise,
    "MaxPool": _pool("MaxPool"),
    "AvgPool": _pool("AveragePool"),
    "ResizeBilinear": _resize_bilinear,
    # element-wise
    "Add": _binary("Add"),
    "AddV2": _binary("Add"),
    "BiasAdd": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "RealDiv": _binary("Div"),
    "Maximum": _binary("Max"),
    "Minimum": _binary("Min"),
    "Equal": _binary("Equal", boolean=True),
    "Greater": _binary("Greater", boolean=True),
    "Less": _binary("Less", boolean=True),
    "FloorDiv": _floor_div,
    "FloorMod": _floor_mod,
    "Relu": _unary(None),
    "Relu6": _unary(None),
    "Elu": _unary(None),
    "LeakyRelu": _unary(None),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "Exp": _unary("Exp"),
    "Neg": _unary("Neg"),
    "Identity": _unary("Identity"),
    "Cast": _cast,
    # reductions and shapes
    "Mean": _reduce("ReduceMean"),
    "Max": _reduce("ReduceMax"),
    "ConcatV2": _concat,
    "Reshape": _reshape,
    "ExpandDims": _expand_dims,
    "StridedSlice": _strided_slice,
    "GatherV2": _gather,
    "TopKV2": _top_k,
    HARD_SWISH: _hard_swish,
}


def _order(graph: TFJSGraph, outputs: list[TensorRef]) -> list[Node]:
    """The nodes the outputs depend on, each after its inputs."""
    by_name = {node.name: node for node in graph.nodes}
    order: list[Node] = []
    state: dict[str, int] = {}  # 1: visiting, 2: done
    for output in outputs:
        if output.node not in by_name:
            raise ConversionError(f"cannot convert the TF.js graph: its output {str(output)!r} is not a node of the graph")
        stack: list[tuple[str, bool]] = [(output.node, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise ConversionError(f"cannot convert the TF.js graph: it has a cycle through {name!r}")
            state[name] = 1
            stack.append((name, True))
            for ref in reversed(by_name[name].inputs):
                if ref.node not in by_name:
                    raise ConversionError(f"cannot convert the TF.js graph: node {name!r} reads {str(ref)!r}, which no node produces")
                if state.get(ref.node) != 2:
                    if state.get(ref.node) == 1:
                        raise ConversionError(f"cannot convert the TF.js graph: it has a cycle through {ref.node!r}")
                    stack.append((ref.node, False))
    return order


def graph_to_onnx(
    graph: TFJSGraph,
    input_shapes: dict[str, Sequence[int]] | None = None,
    name: str = "tfjs_graph",
    doc: str = "",
    fuse: bool = True,
) -> onnx.ModelProto:
    """Translate ``graph`` into a checked opset-17 ONNX model.

    ``input_shapes`` overrides a placeholder's shape (every dimension must end up static).
    ``fuse``: replace hard-swish subgraphs by HardSwish (:func:`fuse_hard_swish`).
    Raises UnsupportedOp naming the first op without a translator, ConversionError for other problems.
    """
    if fuse:
        graph = replace(graph, nodes=fuse_hard_swish(graph))
    ctx = _Context(graph)
    outputs = [TensorRef.parse(output) for output in graph.outputs]
    order = _order(graph, outputs)
    unsupported = sorted({node.op for node in order if node.op not in TRANSLATORS and node.op not in ("Const", "Placeholder")})
    if unsupported:
        first = next(node for node in order if node.op in unsupported)
        raise UnsupportedOp(
            f"cannot convert the TF.js graph: op {first.op!r} (node {first.name!r}) is not supported by retouch's "
            f"TF.js-to-ONNX converter; unsupported ops in this graph: {', '.join(unsupported)}",
            {"ops": unsupported},
        )

    graph_inputs = []
    for node in order:
        ctx.current = node
        if node.op == "Const":
            if node.name not in graph.weights:
                raise ctx.error("its value is not in the weights manifest")
            value = graph.weights[node.name]
            ctx.tensors[TensorRef(node.name)] = _Tensor(shape=tuple(value.shape), dtype=value.dtype, value=value)
        elif node.op == "Placeholder":
            shape = list((input_shapes or {}).get(node.name) or node.attrs.get("shape") or [])
            if not shape or any(int(d) < 0 for d in shape):
                raise ctx.error(f"its shape {shape} is not static; pass input_shapes")
            dtype = _dtype(ctx, node, "dtype")
            graph_inputs.append(helper.make_tensor_value_info(node.name, _onnx_type(dtype), [int(d) for d in shape]))
            ctx.tensors[TensorRef(node.name)] = _Tensor(shape=tuple(int(d) for d in shape), dtype=dtype, names={NHWC: node.name})
        else:
            TRANSLATORS[node.op](ctx, node)
    ctx.current = None

    graph_outputs = []
    for ref in outputs:
        tensor = ctx.tensor(ref)
        name_nhwc = ctx.name(ref, NHWC)
        if tensor.value is not None or name_nhwc in {i.name for i in graph_inputs}:
            # A graph output needs a node producing it.
            name_nhwc = ctx.add("Identity", [name_nhwc], [ctx.unique(f"{ref}__output")])[0]
        graph_outputs.append(helper.make_tensor_value_info(name_nhwc, _onnx_type(tensor.dtype), list(tensor.shape)))

    onnx_graph = helper.make_graph(ctx.nodes, name, graph_inputs, graph_outputs, ctx.initializers, doc_string=doc)
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="retouch.convert.tfjs_to_onnx",
        producer_version=CONVERTER_VERSION,
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(f"the converted ONNX model does not pass onnx.checker: {exc}") from exc
    return model


def tfjs_model_to_onnx(model_json: Path, input_shapes: dict[str, Sequence[int]] | None = None) -> onnx.ModelProto:
    """Read the TF.js graph model at ``model_json`` (with its shards) and translate it to ONNX."""
    model_json = Path(model_json)
    graph = load_graph_model(model_json)
    doc = f"Converted from the TF.js graph model {model_json.name} by retouch's converter {CONVERTER_VERSION}."
    return graph_to_onnx(graph, input_shapes=input_shapes, name=model_json.stem, doc=doc)


def convert_tfjs_graph(model_json: Path, output: Path, input_shapes: dict[str, Sequence[int]] | None = None) -> None:
    """Convert the TF.js graph model at ``model_json`` into the ONNX file ``output``.

    The file is written as ``<output>.part`` and renamed into place, so ``output`` is either
    absent or complete.
    """
    output = Path(output)
    model = tfjs_model_to_onnx(model_json, input_shapes)
    part = output.with_name(output.name + ".part")
    try:
        with part.open("wb") as stream:
            stream.write(model.SerializeToString())
            stream.flush()
            os.fsync(stream.fileno())
        part.replace(output)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
