"""The benchmarks' fake models: `echo`, the image back by an engine that costs nothing, and `fixed`,
the same after a fixed 0.8 s (an engine of known capacity, about background-eraser's on two cores)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.models.base import Model, ModelInput, ModelResult, RunContext, image_field

SLUG = "echo"


class EchoInput(ModelInput):
    image: str = image_field("Any image.")


class _NoEngine:
    def setup(self, device: str) -> None:
        return None


class Echo(Model):
    slug: ClassVar[str] = SLUG
    Input: ClassVar[type[ModelInput]] = EchoInput

    def engine_name(self, settings: Settings) -> str:
        return "echo"

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        return _NoEngine()

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        return ModelResult(images=[images["image"]])


class Fixed(Echo):
    slug: ClassVar[str] = "fixed"
    seconds: ClassVar[float] = 0.8

    def engine_name(self, settings: Settings) -> str:
        return "fixed"

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        time.sleep(self.seconds)
        return ModelResult(images=[images["image"]])


MODELS: dict[str, Model] = {SLUG: Echo(), Fixed.slug: Fixed()}
