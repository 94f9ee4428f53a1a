"""Fake models for the API tests, each named for the behaviour it tests. Real code paths around a trivial engine."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from retouch.config import Settings
from retouch.jobs.engine_cache import EngineCache
from retouch.errors import InvalidInput, WeightsMissing
from retouch.imaging.masks import invert_mask
from retouch.models.base import Model, ModelInput, ModelResult, image_field
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

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any) -> ModelResult:
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

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any) -> ModelResult:
        return ModelResult(images=[invert_mask(images["mask"])])


class SlowInput(ModelInput):
    image: str = image_field("Any image.")
    seconds: float = Field(default=1.0, ge=0, le=30, description="How long to take.")


class Slow(FakeModel):
    slug: ClassVar[str] = "fake-slow"
    Input: ClassVar[type[ModelInput]] = SlowInput

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any) -> ModelResult:
        assert isinstance(params, SlowInput)
        time.sleep(params.seconds)
        return ModelResult(images=[images["image"]])


class ExcInPredict(FakeModel):
    """A bug in an engine: the request FAILS with a message naming its id, the worker lives on."""

    slug: ClassVar[str] = "fake-exc-in-predict"

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any) -> ModelResult:
        raise RuntimeError("secret internal detail")


class RefusesInPredict(FakeModel):
    """A domain error while running: the request FAILS with the error's own message."""

    slug: ClassVar[str] = "fake-refuses-in-predict"

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any) -> ModelResult:
        raise InvalidInput("nothing matching 'unicorn' was found")


class MissingWeights(FakeModel):
    slug: ClassVar[str] = "fake-missing-weights"

    def check_ready(self, settings: Settings) -> None:
        raise WeightsMissing("the weights of fake (fake.onnx) are not installed; run `retouch models install fake`")

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any) -> ModelResult:
        raise AssertionError("never runs")


FAKE_MODELS: dict[str, Model] = {
    model.slug: model for model in (Invert(), MaskEcho(), Slow(), ExcInPredict(), RefusesInPredict(), MissingWeights())
}

# The real registry's unbuilt slugs answer 501; background-eraser answers 503 without weights.
ALL_MODELS: dict[str, Model] = {**MODELS, **FAKE_MODELS}
