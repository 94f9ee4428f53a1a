"""What every model (one per slug) is made of: a pydantic Input, its image fields, its engine and `run`."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retouch.config import Settings
from retouch.errors import Cancelled, EngineNotBuilt

if TYPE_CHECKING:
    from retouch.engines.cache import EngineCache

SEED_MAX = 999_999_999_999_999


class ModelInput(BaseModel):
    """Parameters every slug takes. Subclasses add their own; unknown names are refused."""

    # strict: "2" is not an integer and 1 is not a boolean (JSON types must match); multipart fields
    # are typed as JSON would type them before validation.
    model_config = ConfigDict(extra="forbid", strict=True)

    base64: bool = Field(
        default=False,
        description="Answer with JSON holding the image as base64 instead of the image bytes.",
    )
    output_format: Literal["png", "jpeg", "webp"] | None = Field(
        default=None,
        description="Image format of the output. Default: PNG for masks and images with alpha, JPEG (quality 95) otherwise.",
    )


def image_field(description: str) -> Any:
    """A required image parameter: an http(s) URL, a base64 string or a data: URI (or a file part in multipart)."""
    return Field(
        description=f"{description} An http(s) URL, a base64 string or a data:image/...;base64, URI.",
        min_length=1,
        # Not only spaces: the schema says what the intake refuses.
        pattern=r"\S",
        json_schema_extra={"format": "image"},
    )


def seed_field() -> Any:
    return Field(default=-1, ge=-1, le=SEED_MAX, description="Random seed; -1 picks one (reported in metrics.seed).")


class RunContext:
    """What a running job offers its model: progress, cancellation and the deadline.

    The job system passes its own subclass; this base (never cancelled, progress ignored, no
    deadline) is what a direct caller such as a benchmark passes. Engines that work in steps take
    `step` as a plain callback, so they never see the job system.
    """

    #: `time.monotonic()` by which the job must have ended (infinity: none).
    deadline: float = math.inf

    def progress(self, fraction: float) -> None:
        """Report how far the job is, 0 to 1 (shown as `progress` on /status)."""

    def cancelled(self) -> bool:
        """Whether the request has been cancelled (or this worker no longer owns it)."""
        return False

    def step(self, fraction: float) -> None:
        """Report progress, then stop the job (raise Cancelled) if it has been cancelled."""
        self.progress(fraction)
        if self.cancelled():
            raise Cancelled()


@dataclass
class ModelResult:
    """What a model's `run` returns: its output images and the metrics it adds (detections, seed...)."""

    images: list[np.ndarray]
    metrics: dict[str, Any] = field(default_factory=dict)


class Model(ABC):
    """One slug of the contract. Subclasses set the class attributes and implement the abstract methods.

    `image_fields` are decoded to RGB(A) arrays, `mask_fields` to uint8 masks fitted to `image`.
    """

    slug: ClassVar[str]
    Input: ClassVar[type[ModelInput]]
    image_fields: ClassVar[tuple[str, ...]] = ("image",)
    mask_fields: ClassVar[tuple[str, ...]] = ()
    built: ClassVar[bool] = True
    summary: ClassVar[str] = ""

    @classmethod
    def all_image_fields(cls) -> tuple[str, ...]:
        return cls.image_fields + cls.mask_fields

    @abstractmethod
    def engine_name(self, settings: Settings) -> str:
        """Name of the engine this slug runs under these settings (reported as metrics.engine)."""

    def price_units(self, params: ModelInput) -> int:
        """How many times the slug's price a request costs (bg-replace: one per sample)."""
        return 1

    def check_ready(self, settings: Settings) -> None:
        """Raise WeightsMissing (503) when the engine cannot run, so that no job is queued for nothing."""

    def check_params(self, params: ModelInput, settings: Settings) -> None:
        """Refuse (InvalidInput, 400) parameters that are well-typed but that this engine cannot serve."""

    def check_images(self, params: ModelInput, images: dict[str, np.ndarray]) -> None:
        """Refuse (InvalidInput, 400) decoded images this model cannot work on, before a job is queued."""

    def weights_installed(self, settings: Settings) -> bool:
        try:
            self.check_ready(settings)
        except Exception:  # noqa: BLE001 - any reason it cannot run means "not installed" for the listing
            return False
        return True

    @abstractmethod
    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        """A new engine, not yet set up. Called once per worker process per engine name; a composite
        engine takes its parts from `engines.shared(name, factory)` so they are loaded once."""

    @abstractmethod
    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        """Run on decoded images; never sees HTTP, base64 or URLs. Engines that work in steps call
        `context.step(fraction)` between them (progress, and the point where a cancel takes effect)."""


class UnbuiltModel(Model):
    """A slug of the contract whose engine comes in a later release: its input is validated, then 501."""

    built: ClassVar[bool] = False

    def _refuse(self) -> EngineNotBuilt:
        return EngineNotBuilt(f"the engine of '{self.slug}' is not built in this release of retouch yet")

    def engine_name(self, settings: Settings) -> str:
        return "none"

    def check_ready(self, settings: Settings) -> None:
        raise self._refuse()

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        raise self._refuse()

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        raise self._refuse()
