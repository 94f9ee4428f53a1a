"""The registry of models, one per slug of the contract. Explicit: nothing registers itself on import."""

from __future__ import annotations

from retouch.models import automatic_mask_generator, background_eraser, bg_replace, inpaint_mask_maker, magic_eraser
from retouch.models.base import Model, ModelInput, ModelResult

MODELS: dict[str, Model] = {
    model.slug: model
    for model in (
        magic_eraser.MODEL,
        background_eraser.MODEL,
        automatic_mask_generator.MODEL,
        inpaint_mask_maker.MODEL,
        bg_replace.MODEL,
    )
}

__all__ = ["MODELS", "Model", "ModelInput", "ModelResult"]
