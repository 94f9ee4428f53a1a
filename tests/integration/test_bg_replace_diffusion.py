"""bg-replace's diffusion engine end to end on the CPU, on tiny random-weight checkpoints built by the test.

The checkpoints (tests/tiny_diffusion.py) are written in the hub repositories' layout and recorded as
pulled, so the engine loads them with its real loading code; the subject's mask is the real U²-Net's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from images import b64, decode
from polling import poll
from skimage import data
from tiny_diffusion import install_tiny_checkpoints

from retouch.api.app import create_app
from retouch.config import Settings
from retouch.engines.diffusion import CHECKPOINTS, DiffusionEngine, Generation, subject_edges, working_size
from retouch.engines.schedulers import SCHEDULERS
from retouch.models import MODELS
from retouch.weights.registry import GROUPS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_settings(installed_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A weights folder holding the real U²-Net (linked) and the tiny diffusion checkpoints, recorded as pulled."""
    weights = tmp_path_factory.mktemp("weights")
    # The default U²-Net files and the int8 one's record of how it was made.
    for filename in ("u2net.onnx", "u2netp.onnx", "u2net.int8.onnx", "u2net.int8.onnx.json"):
        os.symlink(installed_weights_dir / filename, weights / filename)
    settings = Settings(
        home=tmp_path_factory.mktemp("home"), weights_dir=weights, bg_replace_resolution=64, min_free_bytes=0, auth=False
    )
    install_tiny_checkpoints(settings)
    return settings


@pytest.fixture(scope="module")
def engine(tiny_settings: Settings) -> DiffusionEngine:
    built = DiffusionEngine.from_settings(tiny_settings)
    built.setup("cpu")
    return built


def product_photo() -> tuple[np.ndarray, np.ndarray]:
    """A yellow box on a blue ground, and its mask (255 = the subject, soft along its edge)."""
    image = np.zeros((96, 128, 3), np.uint8)
    image[...] = (30, 120, 200)
    image[30:70, 40:90] = (250, 200, 10)
    mask = np.zeros((96, 128), np.uint8)
    mask[31:69, 41:89] = 255
    mask[30, 40:90] = mask[69, 40:90] = mask[30:70, 40] = mask[30:70, 89] = 128
    return image, mask


def generation(scheduler: str = "Euler", seeds: tuple[int, ...] = (1,), steps: int = 2, **overrides) -> Generation:
    values = {
        "prompt": "a sunny beach",
        "negative_prompt": "",
        "scheduler": scheduler,
        "num_inference_steps": steps,
        "guidance_scale": 7.5,
        "strength": 1.0,
        "cn_weight": 0.9,
        "ip_adapter_weight": 0.5,
        "seeds": seeds,
    }
    values.update(overrides)
    return Generation(**values)


REFERENCE = (np.random.default_rng(0).random((50, 60, 3)) * 255).astype(np.uint8)


def test_the_checkpoints_are_the_pinned_group():
    assert set(CHECKPOINTS.values()) == set(GROUPS["bg-replace"])


@pytest.mark.parametrize("samples", [1, 2])
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_scheduler_makes_every_sample_and_keeps_the_subject(engine: DiffusionEngine, scheduler: str, samples: int):
    image, mask = product_photo()
    steps: list[float] = []
    seeds = tuple(range(11, 11 + samples))
    outputs = engine.replace(image, mask, REFERENCE, generation(scheduler, seeds), on_step=steps.append)
    assert len(outputs) == samples
    subject = mask == 255
    for output in outputs:
        assert output.shape == image.shape and output.dtype == np.uint8
        assert np.array_equal(output[subject], image[subject])
        # The background was repainted: far from the old flat blue.
        assert np.abs(output[~subject].astype(int) - image[~subject]).mean() > 10
    assert steps and steps == sorted(steps) and steps[-1] == 1.0
    if samples == 2:
        assert not np.array_equal(outputs[0], outputs[1])


def test_the_same_seed_gives_the_same_pixels(engine: DiffusionEngine):
    image, mask = product_photo()
    first = engine.replace(image, mask, REFERENCE, generation("Euler a", (5, 6)))
    again = engine.replace(image, mask, REFERENCE, generation("Euler a", (5, 6)))
    other = engine.replace(image, mask, REFERENCE, generation("Euler a", (7,)))
    assert all(np.array_equal(one, two) for one, two in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_the_weights_change_the_result(engine: DiffusionEngine):
    image, mask = product_photo()
    base = engine.replace(image, mask, REFERENCE, generation())[0]
    for change in ({"ip_adapter_weight": 0.0}, {"cn_weight": 0.0}, {"prompt": "a snowy forest"}, {"strength": 0.6, "steps": 5}):
        steps = change.pop("steps", 2)
        assert not np.array_equal(engine.replace(image, mask, REFERENCE, generation(steps=steps, **change))[0], base), change


def test_a_strength_that_rounds_to_no_step_keeps_the_photo(engine: DiffusionEngine):
    image, mask = product_photo()
    steps: list[float] = []
    outputs = engine.replace(image, mask, REFERENCE, generation(steps=20, strength=0.01, seeds=(1, 2)), on_step=steps.append)
    assert len(outputs) == 2 and all(np.array_equal(output, image) for output in outputs) and steps == [1.0]


def test_working_size_and_the_control_image():
    assert working_size(1024, 1024, 1024) == (1024, 1024)
    height, width = working_size(3000, 4000, 1024)
    assert height % 64 == 0 and width % 64 == 0 and abs(height * width - 1024 * 1024) / (1024 * 1024) < 0.1
    assert working_size(10, 10, 64) == (64, 64)
    # A panorama: no side past twice the resolution, none under 64.
    assert working_size(1, 4096, 1024) == (64, 2048) and working_size(4096, 16, 1024) == (2048, 64)
    image, mask = product_photo()
    edges = subject_edges(image, mask)
    assert edges.shape == image.shape and set(np.unique(edges)) <= {0, 255}
    # The silhouette is drawn, the background stays black (free for the generator).
    assert edges[30, 60, 0] == 255 and edges[5, 5, 0] == 0 and edges[50, 60, 0] == 0


@pytest.fixture(scope="module")
def client(tiny_settings: Settings):
    settings = tiny_settings.model_copy(update={"bg_replace_engine": "auto"})
    with TestClient(create_app(settings, workers=1)) as test_client:
        yield test_client


def photo_and_subject(settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    from retouch.engines.u2net import U2NetEngine

    photo = np.ascontiguousarray(data.astronaut()[::4, ::4])
    masker = U2NetEngine.from_settings(settings)  # the weights the service runs (the default, u2net-int8)
    masker.setup("cpu")
    return photo, masker.predict(photo) == 255


def test_auto_picks_diffusion_once_pulled_and_the_service_runs_it(client, tiny_settings: Settings):
    photo, subject = photo_and_subject(tiny_settings)
    listing = {entry["slug"]: entry for entry in client.get("/v1/models").json()["models"]}
    assert listing["bg-replace"]["engine"] == "diffusion" and listing["bg-replace"]["weights_installed"] is True
    body = {
        "image": b64(photo),
        "ref_image": b64(REFERENCE),
        "prompt": "a beach",
        "samples": 2,
        "seed": 40,
        "num_inference_steps": 20,
        "output_format": "png",
    }
    submitted = client.post("/v2/bg-replace", json=body)
    assert submitted.status_code == 200, submitted.text
    request_id = submitted.json()["request_id"]
    seen: list[float] = []

    def ended(status: dict) -> bool:
        if status.get("progress") is not None:
            seen.append(status["progress"])
        return status["status"] in ("COMPLETED", "FAILED", "CANCELED")

    status = poll(client, request_id, ended, timeout=120)
    assert status["status"] == "COMPLETED", status
    assert seen == sorted(seen) and seen[-1] == 1.0
    result = client.get(f"/v2/requests/{request_id}").json()
    assert result["metrics"]["engine"] == "diffusion"
    assert result["metrics"]["seed"] == 40 and result["metrics"]["seeds"] == [40, 41]
    assert len(result["outputs"]) == 2 and result["output"] == result["outputs"][0]
    for index in range(2):
        output = decode(client.get(f"/v2/requests/{request_id}/output/{index}").content)
        assert output.shape == photo.shape
        assert np.array_equal(output[subject], photo[subject])
        assert np.abs(output[~subject].astype(int) - photo[~subject]).mean() > 10


def test_a_cancel_between_steps_ends_the_job_canceled(client, tiny_settings: Settings):
    photo, _ = photo_and_subject(tiny_settings)
    body = {"image": b64(photo), "ref_image": b64(REFERENCE), "prompt": "a beach", "num_inference_steps": 100, "samples": 4}
    request_id = client.post("/v2/bg-replace", json=body).json()["request_id"]
    running = poll(client, request_id, lambda status: (status.get("progress") or 0) > 0, timeout=60)
    assert running["status"] == "PROCESSING", running
    started = time.monotonic()
    assert client.delete(f"/v2/requests/{request_id}").status_code in (200, 202)
    status = poll(client, request_id, lambda status: status["status"] in ("COMPLETED", "FAILED", "CANCELED"), timeout=60)
    assert status["status"] == "CANCELED", status
    assert "cancel" in client.get(f"/v2/requests/{request_id}").json()["error"]
    # At the next step, not at the end of the hundred.
    assert running["progress"] < 0.5 and time.monotonic() - started < 10
    # The worker is free again: the next request runs.
    quick = {"image": b64(photo), "ref_image": b64(REFERENCE), "prompt": "a beach", "num_inference_steps": 20}
    assert client.post("/v1/bg-replace", json=quick).status_code == 200


def test_the_engine_setting_decides(tiny_settings: Settings):
    model = MODELS["bg-replace"]
    assert model.engine_name(tiny_settings.model_copy(update={"bg_replace_engine": "auto"})) == "diffusion"
    assert model.engine_name(tiny_settings.model_copy(update={"bg_replace_engine": "composite"})) == "composite"
    bare = Settings(home=tiny_settings.home, weights_dir=tiny_settings.home / "empty-weights", bg_replace_engine="auto")
    assert model.engine_name(bare) == "composite"
