"""magic-eraser: fill the masked region so that nobody can tell (PatchMatch, or LaMa when pulled)."""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from retouch.config import Settings
from retouch.errors import InvalidInput
from retouch.imaging.masks import grow_mask, invert_mask
from retouch.engines.cache import EngineCache
from retouch.models.base import Model, ModelInput, ModelResult, RunContext, image_field, seed_field


class MagicEraserInput(ModelInput):
    image: str = image_field("The photo to erase from.")
    mask: str = image_field("What to remove: white = remove, black = keep. Resized to the image if it has its aspect ratio.")
    invert_mask: bool = Field(default=False, description="Invert the input mask first (white = keep).")
    grow_mask: int = Field(default=10, ge=0, le=100, description="Dilate the mask by this many pixels before filling.")
    seed: int = seed_field()


def hole_of(params: MagicEraserInput, mask: np.ndarray) -> np.ndarray:
    """The region to fill: the input mask, inverted first if asked, then grown."""
    if params.invert_mask:
        mask = invert_mask(mask)
    return grow_mask(mask, params.grow_mask)


def lama_pulled(settings: Settings) -> bool:
    from retouch.weights.store import is_installed

    return is_installed("lama", settings)


class MagicEraser(Model):
    slug: ClassVar[str] = "magic-eraser"
    Input: ClassVar[type[ModelInput]] = MagicEraserInput
    mask_fields: ClassVar[tuple[str, ...]] = ("mask",)
    summary: ClassVar[str] = "Fill the masked region (PatchMatch, weight-free; LaMa when pulled)."

    def engine_name(self, settings: Settings) -> str:
        if settings.magic_eraser_engine == "auto":
            return "lama" if lama_pulled(settings) else "patchmatch"
        return settings.magic_eraser_engine

    def check_ready(self, settings: Settings) -> None:
        if self.engine_name(settings) == "lama":
            from retouch.weights.store import locate

            locate("lama", settings)

    def check_images(self, params: ModelInput, images: dict[str, np.ndarray]) -> None:
        assert isinstance(params, MagicEraserInput)
        hole = hole_of(params, images["mask"])
        if np.all(hole >= 128):
            raise InvalidInput(
                "the mask covers the whole image (after invert_mask and grow_mask): there is nothing left to fill from; "
                "leave some of the image unmasked"
            )

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        if self.engine_name(settings) == "lama":
            from retouch.engines.lama import LamaEngine

            return LamaEngine.from_settings(settings)
        from retouch.engines.patchmatch import PatchMatchEngine

        return PatchMatchEngine()

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, MagicEraserInput)
        image = images["image"]
        hole = hole_of(params, images["mask"])
        seed = params.seed if params.seed >= 0 else secrets.randbelow(1_000_000_000)
        if not np.any(hole >= 128):
            return ModelResult(images=[image.copy()], metrics={"seed": seed})
        filled = engine.predict(np.ascontiguousarray(image[..., :3]), hole, seed, on_step=context.step)
        if image.shape[2] == 4:
            filled = np.dstack([filled, image[..., 3]])
        return ModelResult(images=[filled], metrics={"seed": seed})


MODEL = MagicEraser()
