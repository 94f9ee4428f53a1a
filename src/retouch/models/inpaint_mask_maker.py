"""inpaint-mask-maker: detection of the prompt's objects, their boxes refined to a mask."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from retouch.imaging.masks import draw_boxes, draw_overlay, grow_mask, invert_mask
from retouch.models import text_masks
from retouch.models.base import ModelInput, ModelResult, RunContext, image_field


class InpaintMaskMakerInput(ModelInput):
    image: str = image_field("The photo to find things in.")
    prompt: str = Field(min_length=1, max_length=500, description="What to detect, in words, e.g. 'white horse'.")
    confidence_thresh: float = Field(default=0.5, ge=0, le=1, description="Lowest detection confidence kept.")
    iou_thresh: float = Field(default=0.2, ge=0, le=1, description="Overlap above which non-maximum suppression drops a box.")
    return_mask: bool = Field(default=False, description="Return the mask; false returns the image with boxes and mask drawn over it.")
    invert_mask: bool = Field(default=False, description="Invert the produced mask.")
    grow_mask: int = Field(default=10, ge=0, le=100, description="Dilate the produced mask by this many pixels.")


class InpaintMaskMaker(text_masks.TextMaskModel):
    slug: ClassVar[str] = "inpaint-mask-maker"
    Input: ClassVar[type[ModelInput]] = InpaintMaskMakerInput
    summary: ClassVar[str] = "Detection to mask (COCO detector + U²-Net offline; OWLv2 + SAM when installed)."

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, InpaintMaskMakerInput)
        image = images["image"]
        found = engine.segment(image, params.prompt, params.confidence_thresh, params.iou_thresh, on_step=context.step)
        mask = grow_mask(found.mask, params.grow_mask)
        if params.invert_mask:
            mask = invert_mask(mask)
        if params.return_mask:
            output = mask
        else:
            boxes = [detection.box for detection in found.detections]
            labels = [f"{detection.label} {detection.score:.2f}" for detection in found.detections]
            output = draw_boxes(draw_overlay(image, mask), boxes, labels)
        metrics = {"detections": [detection.as_metrics() for detection in found.detections], "model": "+".join(engine.model_files)}
        return ModelResult(images=[output], metrics=metrics)


MODEL = InpaintMaskMaker()
