"""Engines are loaded once per worker process and stay loaded; concurrent first requests load once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from retouch.config import Settings
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
        name = model.engine_name(self._settings)
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        with self._lock_for(name):
            engine = self._engines.get(name)
            if engine is None:
                from retouch.engines.device import resolve_device

                started = time.perf_counter()
                engine = model.create_engine(self._settings)
                engine.setup(resolve_device(self._settings.device))
                self._engines[name] = engine
                self.loads += 1
                logger.info("engine %s loaded in %.2f s", name, time.perf_counter() - started)
        return engine

    def loaded(self) -> list[str]:
        return sorted(self._engines)
