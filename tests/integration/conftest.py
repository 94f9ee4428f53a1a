"""Integration tests run on the real weight files; a missing file fails the run rather than skipping it."""

from __future__ import annotations

from pathlib import Path

import pytest

from retouch.config import Settings


def _weights_dir() -> Path:
    """Where `retouch models install` put them under the same environment (RETOUCH_WEIGHTS_DIR, RETOUCH_HOME)."""
    return Settings().weights_path


@pytest.fixture(scope="session")
def installed_weights_dir() -> Path:
    """The folder of the installed real weights (RETOUCH_WEIGHTS_DIR, else ~/.cache/retouch/weights)."""
    folder = _weights_dir()
    if not (folder / "u2net.onnx").is_file():
        pytest.fail(
            f"no u2net.onnx in {folder}: integration tests need the real weights; "
            "run `retouch models install` (or set RETOUCH_WEIGHTS_DIR to the folder that holds them)",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="session")
def weights_settings(installed_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose weights folder is the installed one and whose home is a fresh temporary folder."""
    return Settings(home=tmp_path_factory.mktemp("home"), weights_dir=installed_weights_dir)
