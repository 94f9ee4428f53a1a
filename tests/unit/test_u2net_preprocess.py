"""U²-Net pre- and post-processing, the engine on a tiny self-built ONNX model, and device choice."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from retouch.config import Settings
from retouch.engines import ENGINES, U2NetEngine, available_cpu_cores, onnx_providers, resolve_device
from retouch.engines.u2net import postprocess, preprocess
from retouch.errors import InvalidInput, ServiceUnavailable, WeightsMissing

SIDE = 320
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def test_preprocess_uniform_colour_exact_values() -> None:
    image = np.empty((7, 5, 3), dtype=np.uint8)
    image[:] = (100, 150, 200)
    network_input = preprocess(image)
    assert network_input.shape == (1, 3, SIDE, SIDE)
    assert network_input.dtype == np.float32
    assert network_input.flags["C_CONTIGUOUS"]
    # Divided by the largest pixel (200), then ImageNet-normalised per channel.
    expected = [(100 / 200 - MEAN[0]) / STD[0], (150 / 200 - MEAN[1]) / STD[1], (200 / 200 - MEAN[2]) / STD[2]]
    for channel in range(3):
        np.testing.assert_allclose(network_input[0, channel], expected[channel], rtol=1e-6)


def test_preprocess_black_image_does_not_divide_by_zero() -> None:
    network_input = preprocess(np.zeros((4, 4, 3), dtype=np.uint8))
    assert np.isfinite(network_input).all()
    for channel in range(3):
        np.testing.assert_allclose(network_input[0, channel], -MEAN[channel] / STD[channel], rtol=1e-6)


@pytest.mark.parametrize("shape", [(2 * SIDE, 3 * SIDE, 3), (SIDE // 2, SIDE + 7, 3), (1000, 751, 3)])
def test_preprocess_is_rembgs_own(shape: tuple[int, int, int]) -> None:
    """The network input is rembg's, value for value: the masks depend on how the 320² input was resampled."""
    from PIL import Image
    from rembg.sessions.base import BaseSession

    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    image[: shape[0] // 3] //= 3  # not uniform noise only: a darker band

    class Layout:
        def get_inputs(self):
            return [type("Input", (), {"name": "input.1"})()]

    session = BaseSession.__new__(BaseSession)
    session.inner_session = Layout()
    expected = session.normalize(Image.fromarray(image), tuple(MEAN), tuple(STD), (SIDE, SIDE))["input.1"]
    np.testing.assert_allclose(preprocess(image), expected, rtol=0, atol=1e-6)


def test_preprocess_ignores_alpha() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, size=(50, 70), dtype=np.uint8)])
    np.testing.assert_array_equal(preprocess(rgba), preprocess(rgb))


@pytest.mark.parametrize("shape", [(300, 451, 3), (1000, 100, 3), (100, 1000, 4), (1, 1, 3), (320, 320, 3)])
def test_preprocess_any_shape(shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    network_input = preprocess(image)
    assert network_input.shape == (1, 3, SIDE, SIDE)
    assert np.isfinite(network_input).all()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), "uint8 image array, got float32"),
        (np.zeros((8, 8), dtype=np.uint8), r"got shape \(8, 8\)"),
        (np.zeros((8, 8, 2), dtype=np.uint8), r"got shape \(8, 8, 2\)"),
        (np.zeros((0, 8, 3), dtype=np.uint8), r"got shape \(0, 8, 3\)"),
    ],
)
def test_preprocess_refuses_bad_images(image: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        preprocess(image)


def test_postprocess_min_max_normalises_channel_zero() -> None:
    output = np.zeros((1, 2, SIDE, SIDE), dtype=np.float32)
    output[0, 0] = 2.0
    output[0, 0, :, SIDE // 2 :] = 6.0
    output[0, 0, 0, 0] = 4.0
    output[0, 1] = 100.0  # other channels do not count
    mask = postprocess(output, (SIDE, SIDE))
    assert mask.dtype == np.uint8
    assert mask.shape == (SIDE, SIDE)
    assert mask[0, 0] == 128  # (4 - 2) / (6 - 2) * 255 = 127.5, rounded
    assert mask[1, 0] == 0
    assert (mask[:, SIDE // 2 :] == 255).all()


def test_postprocess_resizes_to_the_image_size() -> None:
    output = np.zeros((1, 1, SIDE, SIDE), dtype=np.float32)
    output[0, 0, :, SIDE // 2 :] = 1.0
    mask = postprocess(output, (480, 640))
    assert mask.shape == (480, 640)
    assert (mask[:, :300] == 0).all()
    assert (mask[:, 340:] == 255).all()
    assert np.all(np.diff(mask[0].astype(int)) >= 0)  # a linear ramp across the edge, no overshoot
    assert postprocess(output, (100, 900)).shape == (100, 900)
    assert postprocess(output, (1, 1)).shape == (1, 1)


def test_postprocess_flat_output_selects_nothing() -> None:
    mask = postprocess(np.full((1, 1, SIDE, SIDE), 0.3, dtype=np.float32), (10, 20))
    assert mask.shape == (10, 20)
    assert not mask.any()


def test_postprocess_refuses_a_wrong_layout() -> None:
    with pytest.raises(ValueError, match=r"1 x C x h x w, got shape \(320, 320\)"):
        postprocess(np.zeros((SIDE, SIDE), dtype=np.float32), (10, 10))


def _tiny_u2net(path: Path) -> Path:
    """An ONNX model with U²-Net's layout: a 1x1 convolution on red and a sigmoid, seven outputs.

    Output 0 is sigmoid(red); the other outputs are its negation, so a mask taken from the
    wrong output comes out inverted.
    """
    weight = helper.make_tensor("weight", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, 0.0, 0.0])
    nodes = [
        helper.make_node("Conv", ["input.1", "weight"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["d0"]),
        helper.make_node("Neg", ["d0"], ["negated"]),
    ]
    outputs = [helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, SIDE, SIDE])]
    for index in range(1, 7):
        nodes.append(helper.make_node("Identity", ["negated"], [f"d{index}"]))
        outputs.append(helper.make_tensor_value_info(f"d{index}", TensorProto.FLOAT, [1, 1, SIDE, SIDE]))
    graph = helper.make_graph(
        nodes,
        "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        outputs,
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_u2net(tmp_path_factory.mktemp("model") / "u2netp.onnx")


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> U2NetEngine:
    built = U2NetEngine(tiny_model, "u2netp")
    built.setup("cpu")
    return built


def _two_halves(height: int = 240, width: int = 400) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (230, 40, 40)
    image[:, width // 2 :] = (10, 120, 200)
    return image


def test_engine_reads_the_model_layout(engine: U2NetEngine) -> None:
    assert engine.ready
    assert engine.device == "cpu"
    assert engine.providers == ["CPUExecutionProvider"]
    assert (engine.input_name, engine.input_side, engine.output_name) == ("input.1", SIDE, "d0")
    assert ENGINES["u2net"] is U2NetEngine


def test_engine_predicts_from_the_first_output(engine: U2NetEngine) -> None:
    image = _two_halves()
    mask = engine.predict(image)
    assert mask.dtype == np.uint8
    assert mask.shape == (240, 400)
    assert (mask[:, :185] >= 254).all()  # LANCZOS rings by a grey level beside the edge
    assert (mask[:, 215:] <= 1).all()
    network_input = preprocess(image)
    expected = postprocess(1.0 / (1.0 + np.exp(-network_input[:, :1])), (240, 400))
    assert np.abs(mask.astype(int) - expected.astype(int)).max() <= 1


def test_engine_accepts_rgba(engine: U2NetEngine) -> None:
    image = _two_halves()
    rgba = np.dstack([image, np.zeros(image.shape[:2], dtype=np.uint8)])
    np.testing.assert_array_equal(engine.predict(rgba), engine.predict(image))


def test_engine_predicts_from_several_threads(engine: U2NetEngine) -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size=(100 + 17 * index, 150, 3), dtype=np.uint8) for index in range(6)]
    expected = [engine.predict(image) for image in images]
    results: list[np.ndarray | None] = [None] * len(images)

    def work(index: int) -> None:
        results[index] = engine.predict(images[index])

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected, strict=True):
        assert got is not None
        np.testing.assert_array_equal(got, want)


def test_setup_builds_the_session_once(tiny_model: Path) -> None:
    built = U2NetEngine(tiny_model, "u2netp")
    assert not built.ready
    with pytest.raises(RuntimeError, match="before setup"):
        built.predict(_two_halves())
    built.setup("auto")
    session = built._session
    built.setup("cpu")
    assert built._session is session


def test_engine_refuses_a_bad_image(engine: U2NetEngine) -> None:
    with pytest.raises(InvalidInput, match="uint8"):
        engine.predict(np.zeros((10, 10, 3), dtype=np.float64))


def test_unknown_variant_is_refused(tiny_model: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown U²-Net variant 'u3net'; use one of: u2net, u2net-int8, u2netp"):
        U2NetEngine(tiny_model, "u3net")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing, match="run `retouch models install u2net`"):
        U2NetEngine(tmp_path / "u2net.onnx").setup("cpu")


def test_corrupt_model_file(tmp_path: Path) -> None:
    path = tmp_path / "u2net.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ServiceUnavailable, match="onnxruntime could not load .*retouch models install u2net"):
        U2NetEngine(path).setup("cpu")


def test_from_settings_without_weights(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, weights_dir=tmp_path / "weights", background_eraser_model="u2netp")
    with pytest.raises(WeightsMissing, match=r"u2netp\.onnx.*`retouch models install u2netp`"):
        U2NetEngine.from_settings(settings)
    with pytest.raises(WeightsMissing, match="`retouch models install u2net`"):
        U2NetEngine.from_settings(settings, "u2net")


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ServiceUnavailable, match="device 'cuda' was requested but onnxruntime offers only CPUExecutionProvider"):
        resolve_device("cuda")
    with pytest.raises(InvalidInput, match="unknown device 'tpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cpu") == "cpu"


def test_onnx_providers() -> None:
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(InvalidInput, match="'auto'"):
        onnx_providers("auto")


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cpu_cores_follow_a_cgroup_v2_quota(tmp_path: Path) -> None:
    own = tmp_path / "cgroup" / "system.slice" / "retouch.service"
    own.mkdir(parents=True)
    (own / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/system.slice/retouch.service\n")
    assert available_cpu_cores(tmp_path / "cgroup", proc) == min(_affinity(), 2)
    (own / "cpu.max").write_text("max 100000\n")
    assert available_cpu_cores(tmp_path / "cgroup", proc) == _affinity()


def test_cpu_cores_in_a_container_root_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    assert available_cpu_cores(tmp_path, proc) == 1


def test_cpu_cores_follow_a_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpu_cores(tmp_path, tmp_path / "absent") == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpu_cores(tmp_path, tmp_path / "absent") == _affinity()


def test_cpu_cores_on_this_machine() -> None:
    cores = available_cpu_cores()
    assert cores >= 1
    assert cores <= _affinity()
