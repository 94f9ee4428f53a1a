"""background-eraser: the subject's mask, or the RGBA cut-out, from U²-Net."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.imaging.masks import grow_mask, invert_mask
from retouch.imaging.matting import cut_out_rgba
from retouch.models.base import Model, ModelInput, ModelResult, RunContext, image_field


class BackgroundEraserInput(ModelInput):
    image: str = image_field("The photo whose subject is kept.")
    return_mask: bool = Field(default=True, description="Return the mask (white = foreground); false returns the RGBA cut-out.")
    invert_mask: bool = Field(default=False, description="Invert the produced mask (select the background).")
    grow_mask: int = Field(default=0, ge=0, le=50, description="Dilate the produced mask by this many pixels.")


def segmentation_engine(settings: Settings, weights: str) -> Any:
    """The engine that runs the weight file `weights`: U²-Net (u2net, u2netp) or ISNet."""
    from retouch.weights.registry import WEIGHTS

    if WEIGHTS[weights].engine == "isnet":
        from retouch.engines.isnet import ISNetEngine

        return ISNetEngine.from_settings(settings)
    from retouch.engines.u2net import U2NetEngine

    return U2NetEngine.from_settings(settings, variant=weights)


class BackgroundEraser(Model):
    slug: ClassVar[str] = "background-eraser"
    Input: ClassVar[type[ModelInput]] = BackgroundEraserInput
    summary: ClassVar[str] = "Cut-out or mask of the subject (U²-Net; ISNet when installed and chosen)."

    def engine_name(self, settings: Settings) -> str:
        return settings.background_eraser_model

    def check_ready(self, settings: Settings) -> None:
        from retouch.weights.store import locate

        locate(settings.background_eraser_model, settings)

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        return segmentation_engine(settings, settings.background_eraser_model)

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, BackgroundEraserInput)
        image = images["image"]
        mask = engine.predict(image)
        mask = grow_mask(mask, params.grow_mask)
        if params.invert_mask:
            mask = invert_mask(mask)
        metrics = {"model": "+".join(engine.model_files)}
        if params.return_mask:
            return ModelResult(images=[mask], metrics=metrics)
        return ModelResult(images=[cut_out_rgba(image, mask)], metrics=metrics)


MODEL = BackgroundEraser()
