"""Engines are loaded once per worker process and shared by name, within a memory budget.

A composite engine (the text-to-mask detector with its U²-Net refiner) asks for its parts by name
through `shared`, so a worker that serves several slugs holds one U²-Net. Past the budget, the
least recently used engines that no job is using are unloaded: a worker that serves a multi-GB
diffusion pipeline beside the small engines cannot run out of memory by loading them all. An
engine's size is what it says (`memory_bytes`), else the growth of the process's resident memory
while it was set up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retouch.config import Settings

if TYPE_CHECKING:
    from retouch.models.base import Model

logger = logging.getLogger(__name__)

_BUDGET_SHARE = 0.8


def resident_bytes() -> int:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def default_budget(settings: Settings) -> int:
    """The budget in bytes: the setting, else 80% of this machine's memory (0: no limit known)."""
    if settings.engine_memory_budget is not None:
        return int(settings.engine_memory_budget)
    return int(machine_memory_bytes() * _BUDGET_SHARE)


@dataclass
class _Entry:
    engine: Any
    size: int
    parts: set[str] = field(default_factory=set)
    in_use: int = 0
    last_used: float = 0.0
    # perf_counter() when its load began.
    started: float = 0.0


class EngineCache:
    def __init__(self, settings: Settings, budget_bytes: int | None = None) -> None:
        self._settings = settings
        self.budget_bytes = default_budget(settings) if budget_bytes is None else budget_bytes
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.RLock()
        # The names of the engines being made on this thread, innermost last: a part asked for while
        # its composite is made is recorded as that composite's part.
        self._making = threading.local()
        self.loads = 0
        self.unloads = 0

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def get(self, model: Model) -> Any:
        """The engine of a model under the current settings, loaded and set up on first use."""
        return self.shared(model.engine_name(self._settings), lambda: model.create_engine(self._settings, self))

    @contextmanager
    def use(self, model: Model) -> Iterator[Any]:
        """The model's engine, kept loaded (never unloaded for the budget) until the block ends."""
        name = model.engine_name(self._settings)
        engine = self.get(model)
        with self._guard:
            names = self._with_parts(name)
            for each in names:
                self._entries[each].in_use += 1
        try:
            yield engine
        finally:
            with self._guard:
                for each in names:
                    entry = self._entries.get(each)
                    if entry is not None:
                        entry.in_use -= 1
                        entry.last_used = time.monotonic()
            # The engine just used is kept even alone over the budget: unloading it would reload it for the next request.
            self._enforce_budget(keep=name)

    def shared(self, name: str, factory: Callable[[], Any]) -> Any:
        """The engine called `name`, made by `factory` and set up the first time it is asked for."""
        if getattr(self._making, "stack", None):
            self._making.parts[-1].add(name)
        with self._guard:
            entry = self._entries.get(name)
            if entry is not None:
                entry.last_used = time.monotonic()
                return entry.engine
        with self._lock_for(name):
            with self._guard:
                entry = self._entries.get(name)
            if entry is None:
                entry = self._load(name, factory)
        self._enforce_budget(keep=name)
        return entry.engine

    def _load(self, name: str, factory: Callable[[], Any]) -> _Entry:
        from retouch.engines.device import resolve_device

        if not hasattr(self._making, "stack"):
            self._making.stack, self._making.parts = [], []
        self._making.stack.append(name)
        self._making.parts.append(set())
        started, resident_before = time.perf_counter(), resident_bytes()
        try:
            engine = factory()
            engine.setup(resolve_device(self._settings.device))
        finally:
            self._making.stack.pop()
            parts = self._making.parts.pop()
        declared = getattr(engine, "memory_bytes", None)
        if declared is not None:
            size = int(declared)
        else:
            # Parts loaded while this engine was made count themselves: the growth less theirs is its own.
            with self._guard:
                loaded_inside = sum(self._entries[part].size for part in parts if part in self._entries and self._entries[part].started >= started)
            size = max(0, resident_bytes() - resident_before - loaded_inside)
        entry = _Entry(engine=engine, size=size, parts=parts, last_used=time.monotonic(), started=started)
        with self._guard:
            self._entries[name] = entry
            self.loads += 1
        logger.info("engine %s loaded in %.2f s (%.0f MB)", name, time.perf_counter() - started, size / 1e6)
        return entry

    def _with_parts(self, name: str) -> list[str]:
        names, pending = [], [name]
        while pending:
            current = pending.pop()
            if current in names or current not in self._entries:
                continue
            names.append(current)
            pending.extend(self._entries[current].parts)
        return names

    def _holders(self, name: str) -> list[str]:
        """The composites that hold `name` as a part (directly or through another part)."""
        return [other for other in self._entries if other != name and name in self._with_parts(other)]

    def total_bytes(self) -> int:
        with self._guard:
            return sum(entry.size for entry in self._entries.values())

    def _enforce_budget(self, keep: str | None = None) -> None:
        if self.budget_bytes <= 0:
            return
        with self._guard:
            protected = set(self._with_parts(keep)) if keep is not None else set()
            while sum(entry.size for entry in self._entries.values()) > self.budget_bytes:
                idle = [
                    name
                    for name, entry in self._entries.items()
                    if name not in protected
                    and entry.in_use == 0
                    and not any(self._entries[holder].in_use for holder in self._holders(name))
                ]
                if not idle:
                    return
                victim = min(idle, key=lambda name: self._entries[name].last_used)
                # Unloading a part unloads the composites that hold it: they would keep it alive.
                for name in [*self._holders(victim), victim]:
                    entry = self._entries.pop(name, None)
                    if entry is None:
                        continue
                    self.unloads += 1
                    close = getattr(entry.engine, "close", None)
                    if callable(close):
                        close()
                    logger.info("engine %s unloaded to stay within the budget of %.0f MB", name, self.budget_bytes / 1e6)

    def loaded(self) -> list[str]:
        with self._guard:
            return sorted(self._entries)
