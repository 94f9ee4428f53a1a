"""Markers by folder (unit, api, integration), so `pytest -m unit` runs the fast ones."""

from __future__ import annotations

from pathlib import Path

import pytest

_FOLDER_MARKERS = {"unit", "api", "integration"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, folder))
