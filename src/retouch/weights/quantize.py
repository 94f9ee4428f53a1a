"""The int8 U²-Net, derived at install time from the checked fp32 ``u2net.onnx``.

The installer makes it from the fp32 file whose sha256 it has just checked, so there is no second
file to host or trust: the same inputs and package versions give the same bytes, and the installer
records :data:`RECIPE_VERSION` with them. On CPU it runs about 2.5 times as fast as fp32, and its
masks differ from fp32's by about 0.004 alpha on average.

The recipe (docs/research/u2net-int8.md has the measurements behind each choice):

- opset 11 is converted to 13, which per-channel QDQ needs, then onnxruntime's ``quant_pre_process``
  folds the shape arithmetic that sizes every Resize;
- static QDQ quantization: int8 symmetric per-channel weights, uint8 activations, MinMax ranges from
  14 bundled scikit-image photos (:data:`CALIBRATION_PHOTOS`), calibrated in passes of 7;
- the tail stays float: the six one-channel side-output convs, their upsampling, the fusion conv and
  the sigmoids. One channel makes per-channel weights per-tensor, uint8 posterises their logits
  (one step is about 0.06 alpha near 0.5), and onnxruntime's int8 kernels are slower than fp32 there;
- bias correction: weight rounding, not activations, dominates the error, so each quantized conv's
  bias absorbs the mean output shift its rounded weights cause on the calibration photos. That
  halves the mean error. The rounding is recomputed here, and the written model is checked to hold
  exactly the weights that correction assumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper, version_converter
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

# RECIPE_VERSION (kept in the registry, which must not import onnxruntime's quantization tools) is
# recorded by the installer with the derived file: bump it whenever the recipe below changes.

# Files in scikit-image's skimage/data/ folder: real photographs, no synthetic pictures. The photos
# the tests evaluate on (chelsea, coffee, astronaut, camera, rocket, coins) are never among them.
# motorcycle_left and motorcycle_right are one scene, so both are here. The order is part of the recipe.
CALIBRATION_PHOTOS = (
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "clock_motion.png",
    "moon.png",
    "page.png",
    "text.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "cell.png",
    "microaneurysms.png",
)

# The calibrator keeps every activation of every image of a pass in memory, so it sees at most this
# many images at once (a pass of 7 peaks at about 3 GB). MinMax merges passes to exactly the one-pass result.
_CALIBRATION_PASS = 7

# onnxruntime's per-channel symmetric int8 weights use -127..127: scale = 2 * max|w| / 254.
_WEIGHT_LEVELS = 254.0
_WEIGHT_LIMIT = 127

# The fusion conv's weight in rembg's u2net.onnx and u2netp.onnx; the tail is found from it.
_FUSION_WEIGHT = "outconv.weight"


def _scikit_image_data_folder() -> Path:
    """skimage/data of the installed scikit-image, found without importing scikit-image."""
    from retouch.weights.install import WeightsInstallError

    spec = importlib.util.find_spec("skimage")
    if spec is None:
        raise WeightsInstallError(
            "the int8 U²-Net is calibrated on scikit-image's bundled photos, but scikit-image is not installed; run `pip install scikit-image`"
        )
    if spec.submodule_search_locations:
        package_folder = Path(next(iter(spec.submodule_search_locations)))
    else:
        package_folder = Path(spec.origin or "").parent
    return package_folder / "data"


def calibration_photos() -> list[np.ndarray]:
    """The calibration photos (:data:`CALIBRATION_PHOTOS`) as uint8 H x W x 3 RGB arrays, grey ones stacked.

    Raises WeightsInstallError, saying `pip install scikit-image`, when scikit-image or one of the files is missing.
    """
    from PIL import Image

    from retouch.weights.install import WeightsInstallError

    folder = _scikit_image_data_folder()
    photos = []
    for filename in CALIBRATION_PHOTOS:
        path = folder / filename
        if not path.is_file():
            raise WeightsInstallError(
                f"the int8 U²-Net is calibrated on scikit-image's bundled photo {filename}, but {path} does not exist; "
                "run `pip install scikit-image` (a full wheel, with its data folder)"
            )
        with Image.open(path) as image:
            # Pillow's RGB conversion repeats a grey value in all three channels and drops alpha.
            photos.append(np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)))
    return photos


def _fake_quantized_weight(weight: np.ndarray) -> np.ndarray:
    """``weight`` quantized as onnxruntime does it (per output channel, symmetric int8), then dequantized."""
    weight = weight.astype(np.float32)
    largest = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    scale = (2 * largest / _WEIGHT_LEVELS).astype(np.float32)
    scale[scale == 0] = 1.0
    scale = scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    return np.clip(np.round(weight / scale), -_WEIGHT_LIMIT, _WEIGHT_LIMIT) * scale


def _tail_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes from the side-output convs to the outputs: the side convs, the Resize ops that
    upsample them, the fusion Concat and conv, and every Sigmoid."""
    producers = {output: node for node in model.graph.node for output in node.output}
    fusion = next((node for node in model.graph.node if node.op_type == "Conv" and _FUSION_WEIGHT in node.input), None)
    if fusion is None:
        raise ValueError(f"the model has no Conv on {_FUSION_WEIGHT}; it is not rembg's U²-Net")
    concat = producers[fusion.input[0]]
    names = {fusion.name, concat.name}
    # Each branch of the fusion is a side conv's output, upsampled by a Resize except at full size.
    for branch in concat.input:
        node = producers[branch]
        while node.op_type != "Conv":
            names.add(node.name)
            node = producers[node.input[0]]
        names.add(node.name)
    return names | {node.name for node in model.graph.node if node.op_type == "Sigmoid"}


def _input_channel_means(model: onnx.ModelProto, tensor_names: Sequence[str], input_name: str, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per channel, the mean of each of ``tensor_names`` in the float model over ``inputs`` and all positions."""
    from retouch.engines.device import available_cpu_cores

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    value_info = {value.name: value for value in onnx.shape_inference.infer_shapes(probe).graph.value_info}
    wanted = sorted(set(tensor_names) - {input_name})
    present = {output.name for output in probe.graph.output}
    probe.graph.output.extend(value_info[name] for name in wanted if name not in present)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = available_cpu_cores()
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    totals: dict[str, np.ndarray] = {}
    for tensor in inputs:
        values = dict(zip(wanted, session.run(wanted, {input_name: tensor}), strict=True))
        values[input_name] = tensor
        for name in set(tensor_names):
            mean = values[name].astype(np.float64).mean(axis=(0, 2, 3))
            totals[name] = totals[name] + mean if name in totals else mean
    return {name: total / len(inputs) for name, total in totals.items()}


def _correct_biases(model: onnx.ModelProto, convs: Sequence[onnx.NodeProto], means: dict[str, np.ndarray]) -> None:
    """In place: b -= sum over c, kh, kw of (DQ(Q(W)) - W)[o, c, kh, kw] * E[x_c], so that each conv's
    mean output over the calibration photos is what it was before its weights were rounded."""
    initialisers = {initialiser.name: initialiser for initialiser in model.graph.initializer}
    for node in convs:
        weight = numpy_helper.to_array(initialisers[node.input[1]])
        rounding = _fake_quantized_weight(weight).astype(np.float64) - weight.astype(np.float64)
        shift = rounding.sum(axis=(2, 3)) @ means[node.input[0]]
        bias = numpy_helper.to_array(initialisers[node.input[2]]).astype(np.float64)
        initialisers[node.input[2]].CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), node.input[2]))


def _check_rounding(quantized_path: Path, convs: Sequence[onnx.NodeProto], float_model: onnx.ModelProto) -> None:
    """Raise RuntimeError unless the quantized model holds, for every corrected conv, the weights the
    bias correction assumed (another onnxruntime could round or scale them differently)."""
    quantized = {initialiser.name: initialiser for initialiser in onnx.load(str(quantized_path)).graph.initializer}
    weights = {initialiser.name: initialiser for initialiser in float_model.graph.initializer}
    for node in convs:
        name = node.input[1]
        levels = numpy_helper.to_array(quantized[f"{name}_quantized"]).astype(np.float32)
        scale = numpy_helper.to_array(quantized[f"{name}_scale"]).reshape((-1,) + (1,) * (levels.ndim - 1))
        expected = _fake_quantized_weight(numpy_helper.to_array(weights[name]))
        if not np.allclose(levels * scale, expected, rtol=0, atol=1e-7):
            raise RuntimeError(f"onnxruntime {onnxruntime.__version__} quantized {name} differently from what the bias correction assumed")


class _CalibrationReader(CalibrationDataReader):
    """Feeds the prepared calibration inputs; ``set_range`` selects one pass of them."""

    def __init__(self, input_name: str, inputs: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.inputs = inputs
        self.set_range(0, len(inputs))

    def __len__(self) -> int:
        return len(self.inputs)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.inputs[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._pending, None)
        return None if tensor is None else {self.input_name: tensor}


def _pass_size(count: int) -> int:
    """The largest number of images per calibration pass, up to the memory cap, that divides ``count``
    (onnxruntime's strided calibration wants equal passes)."""
    return next(size for size in range(min(_CALIBRATION_PASS, count), 0, -1) if count % size == 0)


@contextlib.contextmanager
def _temporary_files_in(folder: Path) -> Iterator[None]:
    """Point tempfile's default folder at ``folder`` for the duration: onnxruntime's quantization tools
    write their own copies of the model (about 180 MB each) there, with no option to say where."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def derive_u2net_int8(fp32_path: Path, output: Path, calibration_images: Sequence[np.ndarray] | None = None) -> str:
    """Write the int8 QDQ U²-Net made from ``fp32_path`` (rembg's u2net.onnx) to ``output``; return its sha256 (hex).

    ``calibration_images`` are RGB or RGBA uint8 arrays, prepared as the service prepares its input;
    the default is :func:`calibration_photos`, which the recipe is measured and versioned with.
    The same inputs and package versions give the same bytes (the registry pins the digest that
    onnxruntime 1.32.0, onnx 1.23.2 and numpy 2.4.6 give for rembg's file). It takes 35 to 50 s and 3 GB of memory on
    2 cores. The intermediate files (several copies of the model, about 180 MB each) go to a temporary
    folder beside ``output``.
    """
    from retouch.engines.u2net import MODEL_SIDE, preprocess

    fp32_path, output = Path(fp32_path), Path(output)
    images = calibration_photos() if calibration_images is None else calibration_images
    if not images:
        raise ValueError("no calibration images")
    with tempfile.TemporaryDirectory(prefix=".u2net-int8-", dir=output.parent) as folder, _temporary_files_in(Path(folder)):
        work = Path(folder)
        # rembg's u2net.onnx is opset 11. Per-channel QDQ needs DequantizeLinear's axis (opset 13),
        # and quantize_static does not convert by itself.
        model = onnx.load(str(fp32_path))
        opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
        if opset < 13:
            model = version_converter.convert_version(model, 13)
        onnx.save(model, str(work / "opset13.onnx"))
        input_name = model.graph.input[0].name
        side = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value or MODEL_SIDE
        del model

        # Symbolic shape inference and onnxruntime's basic optimisation: with the input fixed at
        # 1 x 3 x 320 x 320, the Shape/Gather/Concat chains that size every Resize fold to constants.
        quant_pre_process(str(work / "opset13.onnx"), str(work / "prepared.onnx"))
        prepared = onnx.load(str(work / "prepared.onnx"))
        kept_float = _tail_nodes(prepared)

        inputs = [preprocess(image, side) for image in images]
        convs = [node for node in prepared.graph.node if node.op_type == "Conv" and node.name not in kept_float and len(node.input) > 2]
        means = _input_channel_means(prepared, [node.input[0] for node in convs], input_name, inputs)
        _correct_biases(prepared, convs, means)
        onnx.save(prepared, str(work / "prepared.onnx"))

        quantized = work / "int8.onnx"
        quantize_static(
            str(work / "prepared.onnx"),
            str(quantized),
            _CalibrationReader(input_name, inputs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # The int8 kernels on VNNI (and anything newer) need no 7-bit weights.
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(kept_float),
            calibrate_method=CalibrationMethod.MinMax,
            # Asymmetric activation ranges: a symmetric one would waste half of uint8 on ReLU outputs.
            extra_options={"CalibTensorRangeSymmetric": False, "CalibStridedMinMax": _pass_size(len(inputs))},
        )
        _check_rounding(quantized, convs, prepared)
        del prepared
        onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
        with quantized.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        os.replace(quantized, output)
    return digest
