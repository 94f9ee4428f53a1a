"""The engine cache: one load per engine, parts shared by name, and a memory budget that unloads the
least recently used idle engines (never one in use, never a part that a loaded composite holds)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from retouch.config import Settings
from retouch.engines.cache import EngineCache
from retouch.models.base import Model, ModelInput, ModelResult, RunContext

MB = 1_000_000


class SizedEngine:
    """Says how much memory it holds, and records that it was closed when unloaded."""

    def __init__(self, name: str, megabytes: int, closed: list[str]) -> None:
        self.name = name
        self.memory_bytes = megabytes * MB
        self._closed = closed

    def setup(self, device: str) -> None:
        return None

    def close(self) -> None:
        self._closed.append(self.name)


class Composite:
    def __init__(self, part: SizedEngine) -> None:
        self.part = part
        self.memory_bytes = 1 * MB

    def setup(self, device: str) -> None:
        return None


class SizedModel(Model):
    slug: ClassVar[str] = "sized"
    Input: ClassVar[type[ModelInput]] = ModelInput

    def __init__(self, engine: str, megabytes: int, closed: list[str]) -> None:
        self._engine, self._megabytes, self._closed = engine, megabytes, closed

    def engine_name(self, settings: Settings) -> str:
        return self._engine

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        return SizedEngine(self._engine, self._megabytes, self._closed)

    def run(self, params: ModelInput, images: dict[str, np.ndarray], engine: Any, context: RunContext) -> ModelResult:
        raise AssertionError("not run here")


class CompositeModel(SizedModel):
    """Its engine holds a 100 MB part, "refiner", asked for by name."""

    def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
        return Composite(engines.shared("refiner", lambda: SizedEngine("refiner", 100, self._closed)))


def cache(tmp_path, budget_mb: int) -> EngineCache:
    return EngineCache(Settings(home=tmp_path), budget_bytes=budget_mb * MB)


def test_an_engine_loads_once_under_concurrent_first_uses(tmp_path):
    closed: list[str] = []
    engines = cache(tmp_path, 0)
    model = SizedModel("small", 1, closed)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(engines.get(model))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engines.loads == 1 and len({id(engine) for engine in got}) == 1


def test_past_the_budget_the_least_recently_used_idle_engine_is_unloaded(tmp_path):
    closed: list[str] = []
    engines = cache(tmp_path, 250)
    first, second, third = (SizedModel(name, 100, closed) for name in ("first", "second", "third"))
    engines.get(first)
    engines.get(second)
    engines.get(first)  # now `second` is the least recently used
    engines.get(third)
    assert engines.loaded() == ["first", "third"] and closed == ["second"]
    assert engines.total_bytes() <= 250 * MB
    engines.get(second)
    assert engines.loads == 4 and "first" in closed


def test_an_engine_in_use_is_never_unloaded(tmp_path):
    closed: list[str] = []
    engines = cache(tmp_path, 150)
    big, other = SizedModel("big", 100, closed), SizedModel("other", 100, closed)
    with engines.use(big):
        engines.get(other)
        # Over the budget, but `big` runs a job and `other` was just asked for: both stay for now.
        assert engines.loaded() == ["big", "other"] and closed == []
    # Once `big` is idle the budget holds again; `other`, used least recently, goes.
    assert engines.loaded() == ["big"] and closed == ["other"]


def test_a_part_goes_with_the_composites_that_hold_it(tmp_path):
    closed: list[str] = []
    engines = cache(tmp_path, 140)

    composite = CompositeModel("composite", 0, closed)
    engines.get(composite)
    assert engines.loaded() == ["composite", "refiner"]
    engines.get(SizedModel("newcomer", 50, closed))
    # The refiner was the least recently used; the composite holding it goes too, or it would keep it alive.
    assert engines.loaded() == ["newcomer"] and "refiner" in closed


def test_using_a_composite_keeps_its_parts(tmp_path):
    closed: list[str] = []
    engines = cache(tmp_path, 110)

    composite = CompositeModel("composite", 0, closed)
    with engines.use(composite):
        engines.get(SizedModel("newcomer", 50, closed))
        assert {"composite", "refiner"} <= set(engines.loaded())


def test_an_engine_bigger_than_the_budget_stays_loaded_between_its_jobs(tmp_path):
    """A diffusion pipeline larger than the budget alone is kept: unloading it after each job would reload it for the next."""
    closed: list[str] = []
    engines = cache(tmp_path, 50)
    huge = SizedModel("huge", 100, closed)
    for _ in range(3):
        with engines.use(huge):
            pass
    assert engines.loads == 1 and engines.loaded() == ["huge"] and closed == []
    # Another engine asked for: the idle huge one makes room.
    engines.get(SizedModel("small", 10, closed))
    assert engines.loaded() == ["small"] and closed == ["huge"]


def test_a_composite_that_declares_nothing_is_not_charged_for_the_parts_it_loaded(tmp_path):
    """Its size is the memory its load added, less what the parts loaded meanwhile count themselves.

    Measured in a fresh interpreter: the size is the growth of the process's resident memory, and in the
    test run's own process memory that earlier tests freed (the int8 derivation's gigabytes) is reused
    without growing it."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_engine_cache import composite_sizes
        print(json.dumps(composite_sizes({str(tmp_path)!r})))
        """
    )
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    sizes = json.loads(answer.stdout.strip().splitlines()[-1])
    assert sizes["allocates"] > 150 * MB and sizes["holder"] < 50 * MB


def composite_sizes(folder: str) -> dict[str, int]:
    """The sizes the cache gives a composite that declares nothing and the 200 MB part it loads."""

    class Allocates:
        def __init__(self) -> None:
            self.buffer = None

        def setup(self, device: str) -> None:
            self.buffer = np.ones(200 * MB, np.uint8)  # written, so resident

    class Holder:
        def __init__(self, part: Any) -> None:
            self.part = part

        def setup(self, device: str) -> None:
            pass

    class HolderModel(SizedModel):
        def create_engine(self, settings: Settings, engines: EngineCache) -> Any:
            return Holder(engines.shared("allocates", Allocates))

    engines = cache(Path(folder), 0)
    engines.get(HolderModel("holder", 0, []))
    return {name: entry.size for name, entry in engines._entries.items()}
