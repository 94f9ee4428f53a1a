"""Where weight files live on disk and whether they are there and intact.

A file copied from its source is installed when it exists with the registry's size. A file
derived at install time (converted) is installed when it exists and its sidecar
``<filename>.json`` matches: the sidecar must record the sha256 of every source member the
registry pins now, the converter and its current version, and the file's own size. Anything else
(an older converter version, another upstream release, a half-written file) counts as not
installed, so ``retouch models install`` makes it again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from retouch.config import Settings
from retouch.errors import InvalidInput, WeightsMissing
from retouch.weights.registry import CONVERTER_VERSIONS, WEIGHTS, NpmChunksSource, NpmPackageSource, WeightFile

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


def sidecar_path(name: str, settings: Settings) -> Path:
    """The path of the record written next to a derived weight file (``<filename>.json``)."""
    path = weight_path(name, settings)
    return path.with_name(path.name + ".json")


def sidecar_record(entry: WeightFile, size: int, sha256: str) -> dict[str, Any]:
    """What the sidecar of derived ``entry`` holds once a file of ``size`` and ``sha256`` is written."""
    source = entry.source
    assert isinstance(source, NpmPackageSource)
    return {
        "name": entry.name,
        "filename": entry.filename,
        "source": source.describe(),
        "members": dict(source.members),
        "converter": source.converter,
        "converter_version": CONVERTER_VERSIONS[source.converter],
        "size": size,
        "sha256": sha256,
    }


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object written beside installed weights (a sidecar), or None if absent or unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_sidecar(name: str, settings: Settings) -> dict[str, Any] | None:
    return read_record(sidecar_path(name, settings))


def install_problem(name: str, settings: Settings) -> str | None:
    """Why the weight file ``name`` is not usable ("is not installed", ...), or None when it is installed."""
    entry = weight_file(name)
    path = weight_path(name, settings)
    try:
        if not path.is_file():
            return "is not installed"
        size = path.stat().st_size
    except OSError:
        return "is not installed"
    if not entry.derived:
        return None if size == entry.size else "has the wrong size"
    source = entry.source
    assert isinstance(source, NpmPackageSource)
    record = _read_sidecar(name, settings)
    if record is None:
        return f"has no readable record {sidecar_path(name, settings).name} of how it was made"
    if record.get("members") != dict(source.members):
        return "was made from other source files than this version of retouch expects"
    if record.get("converter") != source.converter or record.get("converter_version") != CONVERTER_VERSIONS[source.converter]:
        return (
            f"was made by converter {record.get('converter')} {record.get('converter_version')}, "
            f"this version of retouch has {source.converter} {CONVERTER_VERSIONS[source.converter]}"
        )
    if record.get("size") != size:
        return "has the wrong size"
    return None


def is_installed(name: str, settings: Settings) -> bool:
    """Whether the file exists with the expected size (a derived file: and a matching sidecar).

    Cheap enough to call on every start; a full digest check is :func:`verify`.
    """
    return install_problem(name, settings) is None


def locate(name: str, settings: Settings) -> Path:
    """The path of the installed weight file ``name``; WeightsMissing naming the install command if absent."""
    entry = weight_file(name)
    path = weight_path(name, settings)
    problem = install_problem(name, settings)
    if problem is not None:
        needs = " (it needs Node.js and npm: apt-get install npm)" if isinstance(entry.source, NpmPackageSource | NpmChunksSource) else ""
        raise WeightsMissing(
            f"the weight file {entry.filename} of the {entry.engine} engine {problem} in {settings.weights_path}; "
            f"run `retouch models install {name}`{needs}"
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
    """Whether the installed file ``name`` is intact (reads the whole file).

    A copied file must have the registry's sha256; a derived one the sha256 its sidecar recorded.
    """
    if not is_installed(name, settings):
        return False
    entry = weight_file(name)
    if entry.derived:
        record = _read_sidecar(name, settings) or {}
        expected = record.get("sha256")
    else:
        expected = entry.sha256
    return file_sha256(weight_path(name, settings)) == expected
