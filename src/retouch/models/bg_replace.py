"""bg-replace: keep the subject, put it in a new background. Its engines come with their own issue."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from retouch.models.base import ModelInput, UnbuiltModel, image_field, seed_field

SchedulerName = Literal[
    "DDIM",
    "DPM Multi",
    "DPM Single",
    "Euler a",
    "Euler",
    "Heun",
    "DPM2 a Karras",
    "DPM2 Karras",
    "LMS",
    "PNDM",
    "DDPM",
    "UniPC",
]


class BgReplaceInput(ModelInput):
    image: str = image_field("The photo whose subject is kept.")
    ref_image: str = image_field("The picture whose style the new background follows.")
    prompt: str = Field(min_length=1, max_length=2000, description="The new background, in words.")
    negative_prompt: str = Field(default="", max_length=2000, description="What the background must not show.")
    samples: int = Field(default=1, ge=1, le=4, description="How many images to make.")
    scheduler: SchedulerName = Field(default="DPM2 Karras", description="Diffusion sampler.")
    num_inference_steps: int = Field(default=25, ge=20, le=100, description="Denoising steps.")
    guidance_scale: float = Field(default=7.5, ge=1, le=25, description="How closely to follow the prompt.")
    seed: int = seed_field()
    strength: float = Field(default=1.0, ge=0, le=1, description="How much of the background is repainted.")
    cn_weight: float = Field(default=0.9, ge=0, le=1, description="ControlNet conditioning scale.")
    ip_adapter_weight: float = Field(default=0.5, ge=0, le=1, description="IP-Adapter scale (how much ref_image styles it).")


class BgReplace(UnbuiltModel):
    slug: ClassVar[str] = "bg-replace"
    Input: ClassVar[type[ModelInput]] = BgReplaceInput
    image_fields: ClassVar[tuple[str, ...]] = ("image", "ref_image")
    summary: ClassVar[str] = "Subject kept, new background."

    def price_units(self, params: ModelInput) -> int:
        assert isinstance(params, BgReplaceInput)
        return params.samples


MODEL = BgReplace()
