"""automatic-mask-generator: a text prompt to the mask of everything it names."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from retouch.errors import JobFailed
from retouch.imaging.masks import draw_overlay, grow_mask, invert_mask, is_empty
from retouch.imaging.matting import cut_out_rgba
from retouch.models import text_masks
from retouch.models.base import ModelInput, ModelResult, RunContext, image_field, seed_field


class AutomaticMaskGeneratorInput(ModelInput):
    image: str = image_field("The photo to find things in.")
    prompt: str = Field(min_length=1, max_length=500, description="What to select, in words, e.g. 'sofa' or 'dog and cat'.")
    threshold: float = Field(default=0.2, ge=0, le=1, description="Lowest detection confidence kept.")
    stop_on_empty_mask: bool = Field(default=False, description="Make an empty mask a FAILED request instead of an empty image.")
    invert_mask: bool = Field(default=False, description="Invert the produced mask.")
    return_mask: bool = Field(default=True, description="Return the mask; false returns the image with the mask drawn over it.")
    return_alpha: bool = Field(default=False, description="Return the image with the mask as its alpha channel.")
    grow_mask: int = Field(default=10, ge=0, le=100, description="Dilate the produced mask by this many pixels.")
    seed: int = seed_field()


class AutomaticMaskGenerator(text_masks.TextMaskModel):
    slug: ClassVar[str] = "automatic-mask-generator"
    Input: ClassVar[type[ModelInput]] = AutomaticMaskGeneratorInput
    summary: ClassVar[str] = "Text prompt to mask (COCO detector + U²-Net offline; OWLv2 + SAM when installed)."

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, AutomaticMaskGeneratorInput)
        image = images["image"]
        found = engine.segment(image, params.prompt, params.threshold, text_masks.IOU_DEFAULT, on_step=context.step)
        if params.stop_on_empty_mask and is_empty(found.mask):
            raise JobFailed(f"nothing matching '{params.prompt}' was found")
        mask = grow_mask(found.mask, params.grow_mask)
        if params.invert_mask:
            mask = invert_mask(mask)
        if params.return_alpha:
            output = cut_out_rgba(image, mask)
        elif params.return_mask:
            output = mask
        else:
            output = draw_overlay(image, mask)
        metrics = {
            "detections": [detection.as_metrics() for detection in found.detections],
            "seed": text_masks.resolve_seed(params.seed),
            "model": "+".join(engine.model_files),
        }
        return ModelResult(images=[output], metrics=metrics)


MODEL = AutomaticMaskGenerator()
