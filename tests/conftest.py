"""Markers by folder (unit, api, integration, browser), so `pytest -m unit` runs the fast ones; the Redis the
tests share; the `backend` parameter that runs a behavioural test on both job backends; the folder of the
installed real weights (integration and browser tests)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import RedisServer

from retouch.config import Settings

_FOLDER_MARKERS = {"unit", "api", "integration", "browser"}

# Keys are on by default for an operator; the tests turn them off unless a test is about them (and
# ask for `auth=True`). Set in the environment, so that servers the tests start in processes agree.
os.environ.setdefault("RETOUCH_AUTH", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in _FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, folder))


def _weights_dir() -> Path:
    """Where `retouch models install` put them under the same environment (RETOUCH_WEIGHTS_DIR, RETOUCH_HOME)."""
    return Settings().weights_path


@pytest.fixture(scope="session")
def installed_weights_dir() -> Path:
    """The folder of the installed real weights (RETOUCH_WEIGHTS_DIR, else ~/.cache/retouch/weights).
    A missing file fails the run rather than skipping it."""
    from retouch.weights import WEIGHTS, install_problem

    settings = Settings(weights_dir=_weights_dir())
    problems = [f"{WEIGHTS[name].filename} {problem}" for name in ("u2net", "u2net-int8") if (problem := install_problem(name, settings))]
    if problems:
        pytest.fail(
            f"{'; '.join(problems)} in {settings.weights_path}: integration and browser tests need the real default weights; "
            "run `retouch models install` (or set RETOUCH_WEIGHTS_DIR to the folder that holds them)",
            pytrace=False,
        )
    return settings.weights_path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis that scripts/test started (RETOUCH_TEST_REDIS_URL), or one of this run's own."""
    given = os.environ.get("RETOUCH_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on the embedded backend (SQLite, files) and on Redis."""
    return request.param


@pytest.fixture
def backend_settings(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that select `backend`: on Redis, a key prefix of this test's own, so tests never meet."""
    if backend == "embedded":
        return {}
    url = request.getfixturevalue("redis_url")
    return {"queue_url": url, "redis_prefix": f"t{uuid.uuid4().hex[:12]}"}
