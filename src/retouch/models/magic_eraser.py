"""magic-eraser: fill the masked region so that nobody can tell. Its engines come with their own issue."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from retouch.models.base import ModelInput, UnbuiltModel, image_field, seed_field


class MagicEraserInput(ModelInput):
    image: str = image_field("The photo to erase from.")
    mask: str = image_field("What to remove: white = remove, black = keep. Resized to the image if it has its aspect ratio.")
    invert_mask: bool = Field(default=False, description="Invert the input mask first (white = keep).")
    grow_mask: int = Field(default=10, ge=0, le=100, description="Dilate the mask by this many pixels before filling.")
    seed: int = seed_field()


class MagicEraser(UnbuiltModel):
    slug: ClassVar[str] = "magic-eraser"
    Input: ClassVar[type[ModelInput]] = MagicEraserInput
    mask_fields: ClassVar[tuple[str, ...]] = ("mask",)
    summary: ClassVar[str] = "Fill the masked region (PatchMatch, or LaMa when installed)."


MODEL = MagicEraser()
