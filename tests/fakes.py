"""Fake models for the API tests, each named for the behaviour it tests. Real code paths around a trivial engine."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.errors import InvalidInput, WeightsMissing
from retouch.imaging.masks import invert_mask
from retouch.models.base import Model, ModelInput, ModelResult, RunContext, UnbuiltModel, image_field
from retouch.models import MODELS


class ImageOnlyInput(ModelInput):
    image: str = image_field("Any image.")


class FakeEngine:
    """Counts how often it is set up: engines must load once per worker process."""

    setups = 0
    lock = threading.Lock()

    def setup(self, device: str) -> None:
        time.sleep(0.2)
        with FakeEngine.lock:
            FakeEngine.setups += 1


class FakeModel(Model):
    Input: ClassVar[type[ModelInput]] = ImageOnlyInput

    def engine_name(self, settings: Settings) -> str:
        return "fake"

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        return FakeEngine()


class InvertInput(ModelInput):
    image: str = image_field("Any image.")
    samples: int = Field(default=1, ge=1, le=4, description="How many copies.")


class Invert(FakeModel):
    """Returns the photographic negative: the output depends on the input, pixel for pixel."""

    slug: ClassVar[str] = "fake-invert"
    Input: ClassVar[type[ModelInput]] = InvertInput

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, InvertInput)
        image = images["image"]
        inverted = image.copy()
        inverted[..., :3] = 255 - image[..., :3]
        return ModelResult(images=[inverted] * params.samples, metrics={"seed": 7})


class MaskEcho(FakeModel):
    """Returns its mask input inverted, fitted to the image: checks mask decoding and resizing."""

    slug: ClassVar[str] = "fake-mask-echo"
    mask_fields: ClassVar[tuple[str, ...]] = ("mask",)

    class Input(ModelInput):
        image: str = image_field("Any image.")
        mask: str = image_field("Any mask.")

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        return ModelResult(images=[invert_mask(images["mask"])])


class SlowInput(ModelInput):
    image: str = image_field("Any image.")
    seconds: float = Field(default=1.0, ge=0, le=30, description="How long to take.")


class Slow(FakeModel):
    slug: ClassVar[str] = "fake-slow"
    Input: ClassVar[type[ModelInput]] = SlowInput

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, SlowInput)
        time.sleep(params.seconds)
        return ModelResult(images=[images["image"]])


class ExcInPredict(FakeModel):
    """A bug in an engine: the request FAILS with a message naming its id, the worker lives on."""

    slug: ClassVar[str] = "fake-exc-in-predict"

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        raise RuntimeError("secret internal detail")


class RefusesInPredict(FakeModel):
    """A domain error while running: the request FAILS with the error's own message."""

    slug: ClassVar[str] = "fake-refuses-in-predict"

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        raise InvalidInput("nothing matching 'unicorn' was found")


class MissingWeights(FakeModel):
    slug: ClassVar[str] = "fake-missing-weights"

    def check_ready(self, settings: Settings) -> None:
        raise WeightsMissing("the weights of fake (fake.onnx) are not installed; run `retouch models install fake`")

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        raise AssertionError("never runs")


GATES_VARIABLE = "RETOUCH_TEST_GATES"


def gates_folder() -> Path:
    """Where the gated fakes look for their gate files (set by the test, inherited by worker processes)."""
    return Path(os.environ[GATES_VARIABLE])


def started_marks(gate: str) -> list[str]:
    """One entry per start of a gated job, the pid of the process that ran it: `<gate>.started.<pid>.<n>`."""
    return sorted(path.name.split(".")[2] for path in gates_folder().glob(f"{gate}.started.*"))


def release(gate: str) -> None:
    (gates_folder() / gate).touch()


class GatedInput(ModelInput):
    image: str = image_field("Any image.")
    gate: str = Field(pattern=r"^[a-z0-9-]{1,40}$", description="Name of the file whose creation lets it finish.")


def wait_for_gate(gate: str, between_looks: Callable[[], None]) -> None:
    """Mark a start of the gated job, then wait until its gate file exists, calling `between_looks`."""
    folder = gates_folder()
    (folder / f"{gate}.started.{os.getpid()}.{uuid.uuid4().hex[:6]}").touch()
    while not (folder / gate).exists():
        between_looks()
        time.sleep(0.02)


class BlocksUntilReleased(FakeModel):
    """Marks its start, then steps (progress 0.5, the point where a cancel takes effect) until its gate file
    exists; works across processes. Returns the image, and the pid that ran it as metrics.pid."""

    slug: ClassVar[str] = "fake-blocks-until-released"
    Input: ClassVar[type[ModelInput]] = GatedInput

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, GatedInput)
        wait_for_gate(params.gate, lambda: context.step(0.5))
        return ModelResult(images=[images["image"]], metrics={"pid": os.getpid()})


class HangsUntilReleased(FakeModel):
    """Never steps (so it cannot be cancelled) and waits for its gate: a hung engine, for deadlines."""

    slug: ClassVar[str] = "fake-hangs-until-released"
    Input: ClassVar[type[ModelInput]] = GatedInput

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, GatedInput)
        wait_for_gate(params.gate, lambda: None)
        return ModelResult(images=[images["image"]])


class CrashesItsWorker(FakeModel):
    """Kills the process it runs in, as a segfault in an engine would."""

    slug: ClassVar[str] = "fake-crashes-its-worker"

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        os._exit(3)


class CountsSteps(FakeModel):
    """Takes `steps` steps of `step_seconds`, reporting progress after each."""

    slug: ClassVar[str] = "fake-counts-steps"

    class Input(ModelInput):
        image: str = image_field("Any image.")
        steps: int = Field(default=10, ge=1, le=1000, description="How many steps.")
        step_seconds: float = Field(default=0.05, ge=0, le=5, description="How long each step takes.")

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        for step in range(params.steps):  # type: ignore[attr-defined]
            time.sleep(params.step_seconds)  # type: ignore[attr-defined]
            context.step((step + 1) / params.steps)  # type: ignore[attr-defined]
        return ModelResult(images=[images["image"]], metrics={"steps": params.steps})  # type: ignore[attr-defined]


class NotBuiltYet(UnbuiltModel):
    """A slug of a contract whose engine is not in this release: validated, then 501."""

    slug: ClassVar[str] = "fake-not-built-yet"
    Input: ClassVar[type[ModelInput]] = ImageOnlyInput


FAKE_MODELS: dict[str, Model] = {
    model.slug: model
    for model in (
        Invert(),
        MaskEcho(),
        Slow(),
        ExcInPredict(),
        RefusesInPredict(),
        MissingWeights(),
        BlocksUntilReleased(),
        HangsUntilReleased(),
        CrashesItsWorker(),
        CountsSteps(),
        NotBuiltYet(),
    )
}

# Without weights in the test's folder, background-eraser answers 503.
ALL_MODELS: dict[str, Model] = {**MODELS, **FAKE_MODELS}
