"""What automatic-mask-generator and inpaint-mask-maker share: engine choice, prompt check, seeds."""

from __future__ import annotations

import secrets
from typing import Any

from retouch.config import Settings
from retouch.detection.vocabulary import parse_prompt
from retouch.engines.cache import EngineCache
from retouch.models.base import Model, ModelInput
from retouch.weights.store import is_installed, locate

COCO_ENGINE = "centernet+u2net"
OPEN_ENGINE = "owlv2+sam"
OPEN_WEIGHTS = ("owlv2", "sam")
IOU_DEFAULT = 0.5


def open_engine_installed(settings: Settings) -> bool:
    return all(is_installed(name, settings) for name in OPEN_WEIGHTS)


def engine_kind(settings: Settings) -> str:
    """'open' or 'coco' for RETOUCH_TEXT_MASK_ENGINE (auto: open when its weights are installed)."""
    if settings.text_mask_engine == "auto":
        return "open" if open_engine_installed(settings) else "coco"
    return settings.text_mask_engine


def engine_name(settings: Settings) -> str:
    return OPEN_ENGINE if engine_kind(settings) == "open" else COCO_ENGINE


def check_ready(settings: Settings) -> None:
    if engine_kind(settings) == "open":
        for name in OPEN_WEIGHTS:
            locate(name, settings)
        return
    locate("centernet", settings)
    locate(settings.text_mask_refiner, settings)


def check_prompt(prompt: str, settings: Settings) -> None:
    """The offline engine refuses (400) a prompt without an object word it knows; the open one takes any."""
    if engine_kind(settings) == "coco":
        parse_prompt(prompt)


def create_engine(settings: Settings, engines: EngineCache) -> Any:
    if engine_kind(settings) == "open":
        from retouch.engines.open_vocabulary import OpenVocabularyEngine

        return OpenVocabularyEngine.from_settings(settings)
    from retouch.engines.centernet import CenterNetEngine
    from retouch.engines.coco_text_mask import CocoTextMaskEngine
    from retouch.engines.u2net import U2NetEngine

    detector = engines.shared("centernet", lambda: CenterNetEngine.from_settings(settings))
    refiner = engines.shared(settings.text_mask_refiner, lambda: U2NetEngine.from_settings(settings, settings.text_mask_refiner))
    return CocoTextMaskEngine(detector, refiner)


def resolve_seed(seed: int) -> int:
    """The seed reported in metrics.seed: the given one, or a random one for -1."""
    return seed if seed >= 0 else secrets.randbelow(1_000_000_000)


class TextMaskModel(Model):
    """A slug whose input has a `prompt` and whose engine is the text-to-mask engine chosen above."""

    def engine_name(self, settings: Settings) -> str:
        return engine_name(settings)

    def check_ready(self, settings: Settings) -> None:
        check_ready(settings)

    def check_params(self, params: ModelInput, settings: Settings) -> None:
        check_prompt(params.prompt, settings)  # type: ignore[attr-defined] - every text-mask Input has one

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        return create_engine(settings, engines)
