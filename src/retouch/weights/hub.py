"""Pulling the registry's hub entries with ``huggingface_hub``, pinned to a commit and checked.

These are the full engines' weights (OWLv2 and SAM, LaMa, bg-replace's diffusion checkpoints),
which no package registry carries. Each is an entry of :data:`retouch.weights.registry.WEIGHTS`
whose :class:`~retouch.weights.registry.HubSource` pins a repository, a full commit hash and the
files the engine loads; ``retouch models pull owlv2 sam`` fetches them into
``<weights>/hub/<name>/``. Whether one is pulled, and where, is :mod:`retouch.weights.store`'s
``is_installed`` and ``locate``, as for every other entry.

How a pull is checked. Before downloading, the hub is asked for each file's metadata at the pinned
commit (one HEAD request each, short timeout, no retries). For a file stored with Git LFS the hub
reports the sha256 of its content (the "linked etag"); for a small file kept in git itself it
reports the git blob id (sha1 of ``"blob <size>\\0" + content``). Each downloaded file must match
what the hub reported, and its size; otherwise nothing is kept. Files are downloaded into a
staging folder next to the model's folder and moved in only when all of them check out; the
sidecar ``.retouch-pulled.json`` (repository, revision, each file's size and sha256) is written
last, so a model folder without a valid sidecar never counts as pulled.

Offline (``HF_HUB_OFFLINE=1``, or the hub cannot be reached) a pull fails at once with
:class:`HubUnreachable`, whose message names the folder where the files can be put by hand and
the command that records them: ``retouch models pull --trust-local NAME`` (:func:`trust_local`)
hashes the files found there and writes the sidecar, marked as not checked against the hub.

``huggingface_hub`` is imported only when a pull runs (it is part of the optional ``full`` extra);
the metadata and download functions are parameters of :func:`pull`, so tests inject fakes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from retouch.config import Settings
from retouch.errors import WeightsMissing
from retouch.weights.install import WeightsInstallError
from retouch.weights.registry import COMMIT, HUB_SIDECAR, WeightFile
from retouch.weights.store import expand, file_sha256, hub_source, is_installed, weight_file, weight_path

# The pull's record in each model folder (the registry names it, the store reads it).
SIDECAR = HUB_SIDECAR
SIDECAR_VERSION = 1
# Seconds to wait for the hub's answer to a metadata request. Short: an unreachable hub should
# fail the pull at once, not after a minute of retries.
METADATA_TIMEOUT_S = 5.0
_HASH_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _hub_entry(name: str) -> WeightFile:
    """The registry entry ``name``, which must be a hub model; InvalidInput otherwise."""
    entry = weight_file(name)
    hub_source(entry)
    return entry


class HubPullError(WeightsInstallError):
    """A hub model could not be pulled, or what was downloaded is not what the hub says it is."""


class HubUnreachable(HubPullError):
    """The model hub cannot be reached from this machine (offline mode, no network, refused)."""


class FileMetadata(Protocol):
    """What the hub says about one file at one commit (``huggingface_hub.HfFileMetadata`` fits)."""

    commit_hash: str | None
    etag: str | None
    size: int | None


MetadataFetcher = Callable[[WeightFile, str, "str | None"], FileMetadata]
Downloader = Callable[[WeightFile, str, Path, "str | None"], "str | Path"]


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content, which the hub reports as the etag of a non-LFS file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manual_instructions(model: WeightFile, settings: Settings) -> str:
    folder = weight_path(model.name, settings)
    return (
        f"To install {model.name} by hand, copy the files {', '.join(model.source.files)} of {model.source.repo_id} at commit "
        f"{model.source.revision} into {folder}, then run `retouch models pull --trust-local {model.name}`, which hashes "
        f"them and writes the record {folder / SIDECAR} that marks the model as pulled."
    )


def unreachable_error(model: WeightFile, settings: Settings, reason: str, also: Iterable[WeightFile] = ()) -> HubUnreachable:
    """The error of a pull that cannot reach the hub: why, and how to put the files in place by hand
    (for ``model`` and for the models in ``also`` that the same pull would have fetched)."""
    models = [model, *also]
    instructions = " ".join(_manual_instructions(each, settings) for each in models)
    return HubUnreachable(
        f"this machine cannot reach the model hub to pull {', '.join(each.name for each in models)} ({reason}). {instructions}",
        {
            "model": model.name,
            "folder": str(weight_path(model.name, settings)),
            "repo_id": model.source.repo_id,
            "revision": model.source.revision,
            "reason": reason,
            "models": [
                {
                    "model": each.name,
                    "folder": str(weight_path(each.name, settings)),
                    "repo_id": each.source.repo_id,
                    "revision": each.source.revision,
                }
                for each in models
            ],
        },
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def offline_mode() -> bool:
    """Whether hub access is switched off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE), read now, not at import."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


_NETWORK_ERROR_NAMES = frozenset(
    {"OfflineModeIsEnabled", "TransportError", "NetworkError", "ConnectError", "TimeoutException", "LocalEntryNotFoundError"}
)


def _is_network_error(error: BaseException) -> bool:
    """Whether an exception means "the hub could not be reached" rather than "the hub said no".

    By class name as well as type, so that it holds for the HTTP clients of several
    huggingface_hub versions without importing them.
    """
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(error).__mro__)


def hub_metadata(entry: WeightFile, filename: str, endpoint: str | None) -> FileMetadata:
    """The hub's metadata of one file at the pinned commit: one HEAD request, short timeout, no retries."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    source = hub_source(entry)
    url = hf_hub_url(source.repo_id, filename, revision=source.revision, endpoint=endpoint)
    return get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S, endpoint=endpoint)


def hub_download(entry: WeightFile, filename: str, folder: Path, endpoint: str | None) -> str | Path:
    """Download one file at the pinned commit into ``folder``; returns the path it was written to."""
    from huggingface_hub import hf_hub_download

    source = hub_source(entry)
    return hf_hub_download(
        source.repo_id,
        filename,
        revision=source.revision,
        local_dir=folder,
        endpoint=endpoint,
        etag_timeout=METADATA_TIMEOUT_S,
    )


@dataclass(frozen=True)
class _Expected:
    size: int | None
    sha256: str | None
    git_sha1: str | None


def _expected(model: WeightFile, filename: str, metadata: FileMetadata) -> _Expected:
    """What the downloaded file must be, from the hub's metadata; HubPullError when it gives no checksum."""
    commit = (metadata.commit_hash or "").lower()
    if commit and commit != model.source.revision:
        raise HubPullError(f"the hub answered for {model.source.repo_id} {filename} with commit {commit}, not the pinned {model.source.revision}")
    etag = (metadata.etag or "").strip().strip('"').lower()
    etag = etag.removeprefix("w/")
    if _SHA256.fullmatch(etag):
        return _Expected(metadata.size, etag, None)
    if COMMIT.fullmatch(etag):
        return _Expected(metadata.size, None, etag)
    raise HubPullError(f"the hub reported no checksum for {model.source.repo_id} {filename} (etag {metadata.etag!r}); nothing was pulled")


def _check(model: WeightFile, filename: str, path: Path, expected: _Expected) -> str:
    """The file's sha256, after checking it against what the hub reported; HubPullError if it differs."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise HubPullError(f"{model.source.repo_id} {filename} downloaded with {size} bytes, the hub reported {expected.size}; nothing was pulled")
    sha256 = file_sha256(path)
    if expected.sha256 is not None and sha256 != expected.sha256:
        raise HubPullError(
            f"{model.source.repo_id} {filename} downloaded with sha256 {sha256}, the hub reported {expected.sha256}; nothing was pulled"
        )
    known = model.source.known_sha256.get(filename)
    if known is not None and sha256 != known:
        raise HubPullError(f"{model.source.repo_id} {filename} downloaded with sha256 {sha256}, retouch pins {known}; nothing was pulled")
    if expected.git_sha1 is not None and (actual := git_blob_sha1(path)) != expected.git_sha1:
        raise HubPullError(
            f"{model.source.repo_id} {filename} downloaded with git id {actual}, the hub reported {expected.git_sha1}; nothing was pulled"
        )
    return sha256


def _write_sidecar(folder: Path, record: dict[str, Any]) -> None:
    temporary = folder / (SIDECAR + ".tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, folder / SIDECAR)


def _record(model: WeightFile, files: dict[str, dict[str, Any]], source: str) -> dict[str, Any]:
    return {
        "version": SIDECAR_VERSION,
        "name": model.name,
        "repo_id": model.source.repo_id,
        "revision": model.source.revision,
        "license": model.license,
        "source": source,
        "files": files,
    }


def _install(model: WeightFile, staging: Path, settings: Settings, files: dict[str, dict[str, Any]]) -> Path:
    """Move checked files from ``staging`` into the model's folder, then write the sidecar."""
    folder = weight_path(model.name, settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SIDECAR).unlink(missing_ok=True)  # the folder is not "pulled" while files change
    for filename in model.source.files:
        target = folder / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / filename, target)
    _write_sidecar(folder, _record(model, files, "hub"))
    return folder


def _pull_one(model: WeightFile, settings: Settings, metadata: MetadataFetcher, download: Downloader, endpoint: str | None) -> Path:
    if offline_mode():
        raise unreachable_error(model, settings, "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)")
    expected: dict[str, _Expected] = {}
    for filename in model.source.files:
        try:
            expected[filename] = _expected(model, filename, metadata(model, filename, endpoint))
        except HubPullError:
            raise
        except Exception as error:
            if _is_network_error(error):
                raise unreachable_error(model, settings, f"{type(error).__name__}: {error}") from error
            raise HubPullError(
                f"the hub refused the metadata of {model.source.repo_id} {filename} at {model.source.revision}: {type(error).__name__}: {error}"
            ) from error
    root = settings.weights_path / "hub"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", suffix=".partial", dir=root))
    try:
        files: dict[str, dict[str, Any]] = {}
        for filename in model.source.files:
            try:
                written = Path(download(model, filename, staging, endpoint))
            except Exception as error:
                if _is_network_error(error):
                    raise unreachable_error(model, settings, f"{type(error).__name__}: {error}") from error
                raise HubPullError(f"downloading {model.source.repo_id} {filename} failed: {type(error).__name__}: {error}") from error
            placed = staging / filename
            if written.resolve() != placed.resolve():
                placed.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(written, placed)
            files[filename] = {"size": placed.stat().st_size, "sha256": _check(model, filename, placed, expected[filename])}
        return _install(model, staging, settings, files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def pull(
    names: Iterable[str],
    settings: Settings,
    *,
    metadata: MetadataFetcher | None = None,
    download: Downloader | None = None,
    endpoint: str | None = None,
    force: bool = False,
) -> list[Path]:
    """Pull the hub models ``names`` (already pulled ones are skipped unless ``force``); their folders.

    ``metadata`` and ``download`` default to :func:`hub_metadata` and :func:`hub_download`
    (huggingface_hub); ``endpoint`` overrides the hub's address (default: huggingface_hub's own,
    which honours ``HF_ENDPOINT``). Raises :class:`HubUnreachable` at once when the hub cannot be
    reached, :class:`HubPullError` when a file is refused or does not match the hub's checksum
    (nothing of that model is kept then).
    """
    models = [_hub_entry(name) for name in expand(list(names))]
    metadata = metadata or hub_metadata
    download = download or hub_download
    wanted = [model for model in models if force or not is_installed(model.name, settings)]
    if wanted and offline_mode():
        # At once, and for every model the pull needed: a group's user learns all that is to copy, not only the first.
        raise unreachable_error(wanted[0], settings, "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)", also=wanted[1:])
    folders = []
    for index, model in enumerate(models):
        if not force and is_installed(model.name, settings):
            folders.append(weight_path(model.name, settings))
            continue
        try:
            folders.append(_pull_one(model, settings, metadata, download, endpoint))
        except HubUnreachable as error:
            # The hub went away (or never answered): say what is left to copy, this model and those after it.
            rest = [later for later in models[index + 1 :] if force or not is_installed(later.name, settings)]
            if not rest:
                raise
            raise unreachable_error(model, settings, error.details["reason"], also=rest) from error
    return folders


def trust_local(name: str, settings: Settings) -> Path:
    """Record files a user put into the model's folder by hand as pulled (``pull --trust-local``).

    They cannot be checked against the hub (that is why they were copied by hand): the sidecar
    records their sha256 and ``"source": "trusted-local"``. WeightsMissing lists absent files.
    """
    model = _hub_entry(name)
    folder = weight_path(name, settings)
    missing = [filename for filename in model.source.files if not (folder / filename).is_file()]
    if missing:
        raise WeightsMissing(f"{folder} lacks {', '.join(missing)} of {model.source.repo_id}. {_manual_instructions(model, settings)}")
    files = {filename: {"size": (folder / filename).stat().st_size, "sha256": file_sha256(folder / filename)} for filename in model.source.files}
    _write_sidecar(folder, _record(model, files, "trusted-local"))
    return folder
