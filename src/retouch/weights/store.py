"""Where weight files live on disk and whether they are there and intact."""

from __future__ import annotations

import hashlib
from pathlib import Path

from retouch.config import Settings
from retouch.errors import InvalidInput, WeightsMissing
from retouch.weights.registry import WEIGHTS, WeightFile

_HASH_CHUNK = 1 << 20


def weight_file(name: str) -> WeightFile:
    """The registry entry called ``name``; InvalidInput naming the known ones if there is none."""
    try:
        return WEIGHTS[name]
    except KeyError:
        known = ", ".join(sorted(WEIGHTS))
        raise InvalidInput(f"unknown weights {name!r}; known weights are: {known}") from None


def weight_path(name: str, settings: Settings) -> Path:
    """The path the weight file ``name`` has (or would have) in the weights folder."""
    return settings.weights_path / weight_file(name).filename


def is_installed(name: str, settings: Settings) -> bool:
    """Whether the file exists with the expected size.

    Cheap enough to call on every start; a full digest check is :func:`verify`.
    """
    path = weight_path(name, settings)
    try:
        return path.is_file() and path.stat().st_size == weight_file(name).size
    except OSError:
        return False


def locate(name: str, settings: Settings) -> Path:
    """The path of the installed weight file ``name``; WeightsMissing naming the install command if absent."""
    entry = weight_file(name)
    path = weight_path(name, settings)
    if not is_installed(name, settings):
        state = "has the wrong size" if path.exists() else "is not installed"
        raise WeightsMissing(
            f"the weight file {entry.filename} of the {entry.engine} engine {state} in {settings.weights_path}; run `retouch models install {name}`"
        )
    return path


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(name: str, settings: Settings) -> bool:
    """Whether the installed file ``name`` has the expected size and sha256 (reads the whole file)."""
    if not is_installed(name, settings):
        return False
    return file_sha256(weight_path(name, settings)) == weight_file(name).sha256
