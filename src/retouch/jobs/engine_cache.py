"""Engines are loaded once per worker process and stay loaded; concurrent first requests load once.

Engines are kept by name, and a composite engine (the text-to-mask detector with its U²-Net
refiner) asks for its parts by name too, so a worker that serves several slugs holds one U²-Net.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from retouch.config import Settings

if TYPE_CHECKING:
    from retouch.models.base import Model

logger = logging.getLogger(__name__)


class EngineCache:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engines: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.loads = 0

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def get(self, model: Model) -> Any:
        """The engine of a model under the current settings, loaded and set up on first use."""
        return self.shared(model.engine_name(self._settings), lambda: model.create_engine(self._settings, self))

    def shared(self, name: str, factory: Callable[[], Any]) -> Any:
        """The engine called `name`, made by `factory` and set up the first time it is asked for."""
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        with self._lock_for(name):
            engine = self._engines.get(name)
            if engine is None:
                from retouch.engines.device import resolve_device

                started = time.perf_counter()
                engine = factory()
                engine.setup(resolve_device(self._settings.device))
                self._engines[name] = engine
                self.loads += 1
                logger.info("engine %s loaded in %.2f s", name, time.perf_counter() - started)
        return engine

    def loaded(self) -> list[str]:
        return sorted(self._engines)
