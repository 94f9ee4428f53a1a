"""automatic-mask-generator: a text prompt to the mask of what it names. Its engines come with their own issue."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from retouch.models.base import ModelInput, UnbuiltModel, image_field, seed_field


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


class AutomaticMaskGenerator(UnbuiltModel):
    slug: ClassVar[str] = "automatic-mask-generator"
    Input: ClassVar[type[ModelInput]] = AutomaticMaskGeneratorInput
    summary: ClassVar[str] = "Text prompt to mask."


MODEL = AutomaticMaskGenerator()
