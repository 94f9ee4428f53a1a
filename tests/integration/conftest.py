"""Integration tests run on the real weight files (`installed_weights_dir`, in tests/conftest.py); a missing
file fails the run rather than skipping it."""

from __future__ import annotations

from pathlib import Path

import pytest

from retouch.config import Settings


@pytest.fixture(scope="session")
def weights_settings(installed_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose weights folder is the installed one and whose home is a fresh temporary folder."""
    return Settings(home=tmp_path_factory.mktemp("home"), weights_dir=installed_weights_dir)
