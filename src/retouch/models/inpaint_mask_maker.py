"""inpaint-mask-maker: open-vocabulary detection, boxes refined to a mask. Its engines come with their own issue."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from retouch.models.base import ModelInput, UnbuiltModel, image_field


class InpaintMaskMakerInput(ModelInput):
    image: str = image_field("The photo to find things in.")
    prompt: str = Field(min_length=1, max_length=500, description="What to detect, in words, e.g. 'white horse'.")
    confidence_thresh: float = Field(default=0.5, ge=0, le=1, description="Lowest detection confidence kept.")
    iou_thresh: float = Field(default=0.2, ge=0, le=1, description="Overlap above which non-maximum suppression drops a box.")
    return_mask: bool = Field(default=False, description="Return the mask; false returns the image with boxes and mask drawn over it.")
    invert_mask: bool = Field(default=False, description="Invert the produced mask.")
    grow_mask: int = Field(default=10, ge=0, le=100, description="Dilate the produced mask by this many pixels.")


class InpaintMaskMaker(UnbuiltModel):
    slug: ClassVar[str] = "inpaint-mask-maker"
    Input: ClassVar[type[ModelInput]] = InpaintMaskMakerInput
    summary: ClassVar[str] = "Open-vocabulary detection to mask."


MODEL = InpaintMaskMaker()
