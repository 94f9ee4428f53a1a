"""bg-replace: keep the subject of a photo, put it in a new background.

Two engines (RETOUCH_BG_REPLACE_ENGINE): `diffusion` repaints the background from `prompt` in the style
of `ref_image` (engines/diffusion.py, checkpoints pulled); `composite`, the offline default, lays the
cut-out over `ref_image` and generates nothing (engines/composite.py). Both take the subject's mask
from the background-eraser's U²-Net, or from the photo's own alpha when it is a cut-out already.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.engines.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from retouch.models.base import Model, ModelInput, ModelResult, RunContext, image_field, seed_field
from retouch.models.text_masks import resolve_seed

SchedulerName = Literal[tuple(SCHEDULERS)]  # type: ignore[valid-type] - the contract's names, listed once
# A photo whose alpha has at least this share of transparent pixels is a cut-out: its alpha is the subject.
CUT_OUT_SHARE = 0.01


class BgReplaceInput(ModelInput):
    image: str = image_field("The photo whose subject is kept.")
    ref_image: str = image_field("The picture whose style the new background follows (the composite engine's background itself).")
    prompt: str = Field(min_length=1, max_length=2000, description="The new background, in words (ignored by the composite engine).")
    negative_prompt: str = Field(default="", max_length=2000, description="What the background must not show (diffusion only).")
    samples: int = Field(default=1, ge=1, le=4, description="How many images to make (one seed each: seed, seed + 1, ...).")
    scheduler: SchedulerName = Field(default=DEFAULT_SCHEDULER, description="Diffusion sampler (diffusion only).")
    num_inference_steps: int = Field(default=25, ge=20, le=100, description="Denoising steps (diffusion only).")
    guidance_scale: float = Field(default=7.5, ge=1, le=25, description="How closely to follow the prompt (diffusion only).")
    seed: int = seed_field()
    strength: float = Field(default=1.0, ge=0, le=1, description="How much of the old background gives way: 1 replaces it, 0 keeps the photo.")
    cn_weight: float = Field(default=0.9, ge=0, le=1, description="ControlNet conditioning scale (diffusion only).")
    ip_adapter_weight: float = Field(
        default=0.5, ge=0, le=1, description="IP-Adapter scale: how much ref_image styles the background (diffusion only)."
    )


def diffusion_installed(settings: Settings) -> bool:
    """Whether the generative engine can run: its checkpoints pulled and torch with diffusers installed."""
    from retouch.weights.registry import GROUPS
    from retouch.weights.store import is_installed

    return all(is_installed(name, settings) for name in GROUPS["bg-replace"]) and all(
        importlib.util.find_spec(package) is not None for package in ("torch", "diffusers", "transformers")
    )


def subject_mask(image: np.ndarray, masker: Any) -> tuple[np.ndarray, bool]:
    """The subject (uint8, 255 = subject) and whether it is a cut-out's own alpha (taken as it is, its partial
    transparency included) rather than U²-Net's prediction (whose edge the engines refine)."""
    if image.shape[2] == 4 and np.count_nonzero(image[..., 3] < 255) >= CUT_OUT_SHARE * image[..., 3].size:
        return np.ascontiguousarray(image[..., 3]), True
    return masker.predict(image), False


class SubjectReplacer:
    """bg-replace's engine: the mask engine and the engine that replaces the background, both loaded as parts."""

    def __init__(self, masker: Any, replacer: Any) -> None:
        self.masker = masker
        self.replacer = replacer
        self.name = replacer.name

    def setup(self, device: str) -> None:
        """Nothing of its own to load: the cache set the parts up as they were made."""


class BgReplace(Model):
    slug: ClassVar[str] = "bg-replace"
    Input: ClassVar[type[ModelInput]] = BgReplaceInput
    image_fields: ClassVar[tuple[str, ...]] = ("image", "ref_image")
    summary: ClassVar[str] = "Subject kept, new background (offline composite; SDXL inpainting + ControlNet + IP-Adapter when pulled)."

    def engine_name(self, settings: Settings) -> str:
        if settings.bg_replace_engine == "auto":
            return "diffusion" if diffusion_installed(settings) else "composite"
        return settings.bg_replace_engine

    def price_units(self, params: ModelInput) -> int:
        assert isinstance(params, BgReplaceInput)
        return params.samples

    def check_ready(self, settings: Settings) -> None:
        from retouch.weights.store import locate

        locate(settings.background_eraser_model, settings)
        if self.engine_name(settings) == "diffusion":
            from retouch.engines.diffusion import FULL_EXTRA_HINT, DiffusionEngine
            from retouch.errors import ServiceUnavailable

            # Whether the packages are there, without importing them: an API process never loads torch.
            missing = [package for package in ("torch", "diffusers", "transformers") if importlib.util.find_spec(package) is None]
            if missing:
                raise ServiceUnavailable(f"bg-replace's diffusion engine needs {', '.join(missing)}; {FULL_EXTRA_HINT}")
            DiffusionEngine.from_settings(settings)

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        from retouch.models.background_eraser import segmentation_engine

        variant = settings.background_eraser_model
        masker = engines.shared(variant, lambda: segmentation_engine(settings, variant))
        if self.engine_name(settings) == "diffusion":
            from retouch.engines.diffusion import DiffusionEngine

            replacer = engines.shared("sdxl-pipeline", lambda: DiffusionEngine.from_settings(settings))
        else:
            from retouch.engines.composite import CompositeEngine

            replacer = CompositeEngine()
        return SubjectReplacer(masker, replacer)

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        assert isinstance(params, BgReplaceInput)
        image, reference = images["image"], images["ref_image"]
        seed = resolve_seed(params.seed)
        seeds = tuple(seed + index for index in range(params.samples))
        mask, is_cut_out = subject_mask(image, engine.masker)
        context.step(0.0)
        if engine.name == "diffusion":
            from retouch.engines.diffusion import Generation

            generation = Generation(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                scheduler=params.scheduler,
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale,
                strength=params.strength,
                cn_weight=params.cn_weight,
                ip_adapter_weight=params.ip_adapter_weight,
                seeds=seeds,
            )
            outputs = engine.replacer.replace(image, mask, reference, generation, on_step=context.step, refine=not is_cut_out)
        else:
            outputs = engine.replacer.replace(image, mask, reference, seeds, params.strength, on_step=context.step, refine=not is_cut_out)
        return ModelResult(images=outputs, metrics={"seed": seed, "seeds": list(seeds)})


MODEL = BgReplace()
