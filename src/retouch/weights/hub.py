"""Model folders pulled from the model hub with ``huggingface_hub``, pinned to a commit and checked.

These are the open-vocabulary engine's weights (OWLv2 for boxes, SAM for masks). They are not on a
package registry, so they live apart from the registry of :mod:`retouch.weights.registry`: each
:class:`HubModel` pins a repository, a full commit hash and the files the engine loads, and
``retouch models pull owlv2 sam`` fetches them into ``<weights>/hub/<name>/``.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from retouch.config import Settings
from retouch.errors import InvalidInput, WeightsMissing
from retouch.weights.install import WeightsInstallError
from retouch.weights.registry import is_plain_relative_path
from retouch.weights.store import file_sha256, read_record

SIDECAR = ".retouch-pulled.json"
SIDECAR_VERSION = 1
# Seconds to wait for the hub's answer to a metadata request. Short: an unreachable hub should
# fail the pull at once, not after a minute of retries.
METADATA_TIMEOUT_S = 5.0
_HASH_CHUNK = 1 << 20
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubModel:
    """A model repository on the hub, pinned to one commit, and the files the engine loads from it."""

    name: str
    repo_id: str
    revision: str
    files: tuple[str, ...]
    license: str
    engine: str
    # sha256 of files whose digest is known ahead of the pull (checked as well as the hub's own report).
    known_sha256: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not _COMMIT.fullmatch(self.revision):
            raise ValueError(f"hub model {self.name}: revision must be a full 40-hex commit hash, got {self.revision!r}")
        if not self.files or len(set(self.files)) != len(self.files):
            raise ValueError(f"hub model {self.name}: files must be a non-empty list without duplicates")
        for filename in self.files:
            if not is_plain_relative_path(filename) or filename == SIDECAR:
                raise ValueError(f"hub model {self.name}: {filename!r} is not a plain relative file name")

    def describe(self) -> str:
        """A one-line description for ``retouch models list``."""
        return f"hub {self.repo_id}@{self.revision[:12]} ({len(self.files)} files, {self.license})"


# The revisions are commits of the two repositories that other projects pin for these same files
# (found in their public code); they could not be checked against the hub from the machine this was
# written on. Pinning a commit, not a branch, means a changed upstream model is not picked up until
# retouch pins it; the sha256 check of each file is against what the hub reports for that commit.
_MODELS = (
    HubModel(
        name="owlv2",
        repo_id="google/owlv2-base-patch16-ensemble",
        revision="cfd3195ba4ea9592eec887ded089f4c08eff231d",
        files=(
            "config.json",
            "preprocessor_config.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "added_tokens.json",
            "vocab.json",
            "merges.txt",
            "model.safetensors",
        ),
        license="apache-2.0",
        engine="owlv2+sam",
    ),
    HubModel(
        name="sam",
        repo_id="facebook/sam-vit-base",
        revision="70c1a07f894ebb5b307fd9eaaee97b9dfc16068f",
        files=("config.json", "preprocessor_config.json", "model.safetensors"),
        license="apache-2.0",
        engine="owlv2+sam",
    ),
    # big-lama exported to ONNX (fixed 512 x 512; image 0..1 and mask in, 0..255 out). The commit and
    # the file's sha256 are those another public project pins for this same file.
    HubModel(
        name="lama",
        repo_id="Carve/LaMa-ONNX",
        revision="c3c0c9e468934d62e79c329e35d82dd09ff8c444",
        files=("lama_fp32.onnx",),
        license="apache-2.0",
        engine="lama",
        known_sha256=MappingProxyType({"lama_fp32.onnx": "1faef5301d78db7dda502fe59966957ec4b79dd64e16f03ed96913c7a4eb68d6"}),
    ),
    # bg-replace's generative engine: SDXL inpainting (fp16 files; the VAE comes from the fp16-fix
    # repository, which does not overflow in half precision), the canny-edge SDXL ControlNet, and the
    # ViT-H IP-Adapter for SDXL with its image encoder. Commits and sha256 are those other public
    # projects pin for these same files.
    HubModel(
        name="sdxl-inpainting",
        repo_id="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        revision="115134f363124c53c7d878647567d04daf26e41e",
        files=(
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "text_encoder_2/config.json",
            "text_encoder_2/model.fp16.safetensors",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "tokenizer_2/merges.txt",
            "tokenizer_2/special_tokens_map.json",
            "tokenizer_2/tokenizer_config.json",
            "tokenizer_2/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
        ),
        license="openrail++",
        engine="diffusion",
        known_sha256=MappingProxyType(
            {
                "unet/diffusion_pytorch_model.fp16.safetensors": "6470840731e98cc16713ddf3ac7ee458c9fdbcb881a98c6727cd4a938f227d3f",
                "text_encoder/model.fp16.safetensors": "fc83cf401d930147807e7c44021c164bcc5508c9d4cc0ff35f4e354685ca9cd0",
                "text_encoder_2/model.fp16.safetensors": "a8622bd41f8d359df484fdf9de091edb9337a2fd747f0a5c9c320a62e24d1fd3",
            }
        ),
    ),
    HubModel(
        name="sdxl-vae-fp16-fix",
        repo_id="madebyollin/sdxl-vae-fp16-fix",
        revision="207b116dae70ace3637169f1ddd2434b91b3a8cd",
        files=("config.json", "diffusion_pytorch_model.safetensors"),
        license="mit",
        engine="diffusion",
        known_sha256=MappingProxyType(
            {"diffusion_pytorch_model.safetensors": "1b909373b28f2137098b0fd9dbc6f97f8410854f31f84ddc9fa04b077b0ace2c"}
        ),
    ),
    HubModel(
        name="controlnet-canny-sdxl",
        repo_id="diffusers/controlnet-canny-sdxl-1.0",
        revision="eb115a19a10d14909256db740ed109532ab1483c",
        files=("config.json", "diffusion_pytorch_model.fp16.safetensors"),
        license="openrail++",
        engine="diffusion",
    ),
    HubModel(
        name="ip-adapter-sdxl",
        repo_id="h94/IP-Adapter",
        revision="018e402774aeeddd60609b4ecdb7e298259dc729",
        files=(
            "sdxl_models/ip-adapter_sdxl_vit-h.safetensors",
            "models/image_encoder/config.json",
            "models/image_encoder/model.safetensors",
        ),
        license="apache-2.0",
        engine="diffusion",
        known_sha256=MappingProxyType(
            {
                "sdxl_models/ip-adapter_sdxl_vit-h.safetensors": "ebf05d918348aec7abb02a5e9ecef77e0aaea6914a5c4ea13f50d45eb1681831",
                "models/image_encoder/model.safetensors": "6ca9667da1ca9e0b0f75e46bb030f7e011f44f86cbfb8d5a36590fcd7507b030",
            }
        ),
    ),
)
HUB_MODELS: Mapping[str, HubModel] = MappingProxyType({model.name: model for model in _MODELS})
# Names that stand for every model one engine needs: `retouch models pull bg-replace`.
HUB_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"bg-replace": ("sdxl-inpainting", "sdxl-vae-fp16-fix", "controlnet-canny-sdxl", "ip-adapter-sdxl")}
)


class HubPullError(WeightsInstallError):
    """A hub model could not be pulled, or what was downloaded is not what the hub says it is."""


class HubUnreachable(HubPullError):
    """The model hub cannot be reached from this machine (offline mode, no network, refused)."""


class FileMetadata(Protocol):
    """What the hub says about one file at one commit (``huggingface_hub.HfFileMetadata`` fits)."""

    commit_hash: str | None
    etag: str | None
    size: int | None


MetadataFetcher = Callable[[HubModel, str, "str | None"], FileMetadata]
Downloader = Callable[[HubModel, str, Path, "str | None"], "str | Path"]


def hub_model(name: str) -> HubModel:
    """The hub model called ``name``; InvalidInput naming the known ones if there is none."""
    try:
        return HUB_MODELS[name]
    except KeyError:
        known = ", ".join([*sorted(HUB_MODELS), *(f"{group} (all of {', '.join(members)})" for group, members in HUB_GROUPS.items())])
        raise InvalidInput(f"unknown hub model {name!r}; known hub models are: {known}") from None


def expand(names: Iterable[str]) -> list[str]:
    """The hub model names, with each group name (``bg-replace``) replaced by its members, without repeats."""
    expanded: list[str] = []
    for name in names:
        expanded.extend(HUB_GROUPS.get(name, (name,)))
    return list(dict.fromkeys(expanded))


def hub_path(name: str, settings: Settings) -> Path:
    """The folder the hub model ``name`` is (or would be) pulled into: ``<weights>/hub/<name>``."""
    return settings.weights_path / "hub" / hub_model(name).name


def sidecar_path(name: str, settings: Settings) -> Path:
    return hub_path(name, settings) / SIDECAR


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file's content, which the hub reports as the etag of a non-LFS file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_sidecar(name: str, settings: Settings) -> dict[str, Any] | None:
    return read_record(sidecar_path(name, settings))


def pull_problem(name: str, settings: Settings) -> str | None:
    """Why the hub model ``name`` is not usable ("is not pulled", ...), or None when it is pulled.

    Cheap (sizes, no hashing): every pinned file is there with the size its sidecar recorded, and
    the sidecar is for the pinned repository and revision.
    """
    model = hub_model(name)
    folder = hub_path(name, settings)
    record = _read_sidecar(name, settings)
    if record is None:
        return "is not pulled" if not folder.is_dir() else f"has no readable record {SIDECAR} of a verified pull"
    if record.get("repo_id") != model.repo_id or record.get("revision") != model.revision:
        pulled = f"{record.get('repo_id')}@{record.get('revision')}"
        return f"was pulled from {pulled}, this version of retouch pins {model.repo_id}@{model.revision}"
    files = record.get("files")
    if not isinstance(files, dict) or set(files) != set(model.files):
        return "was pulled with another list of files than this version of retouch expects"
    for filename in model.files:
        entry = files[filename]
        try:
            size = (folder / filename).stat().st_size
        except OSError:
            return f"lacks its file {filename}"
        if not isinstance(entry, dict) or entry.get("size") != size:
            return f"has a file {filename} of another size than was pulled"
    return None


def is_pulled(name: str, settings: Settings) -> bool:
    """Whether every pinned file is present and a sidecar records a verified (or trusted) pull of them."""
    return pull_problem(name, settings) is None


def verify(name: str, settings: Settings) -> bool:
    """Whether the pulled files still have the sha256 their sidecar recorded (reads every file)."""
    if not is_pulled(name, settings):
        return False
    record = _read_sidecar(name, settings) or {}
    folder = hub_path(name, settings)
    return all(file_sha256(folder / filename) == record["files"][filename]["sha256"] for filename in hub_model(name).files)


def locate(name: str, settings: Settings) -> Path:
    """The folder of the pulled hub model ``name``; WeightsMissing naming the pull command if it is not pulled."""
    problem = pull_problem(name, settings)
    if problem is not None:
        model = hub_model(name)
        raise WeightsMissing(
            f"the {model.engine} engine's model {name} ({model.repo_id}) {problem} in {hub_path(name, settings)}; "
            f"run `retouch models pull {name}`"
        )
    return hub_path(name, settings)


def hub_file(name: str, settings: Settings) -> Path:
    """The path of a single-file hub model's file (LaMa); WeightsMissing naming the pull command if not pulled."""
    return locate(name, settings) / hub_model(name).files[0]


def _manual_instructions(model: HubModel, settings: Settings) -> str:
    folder = hub_path(model.name, settings)
    return (
        f"To install {model.name} by hand, copy the files {', '.join(model.files)} of {model.repo_id} at commit "
        f"{model.revision} into {folder}, then run `retouch models pull --trust-local {model.name}`, which hashes "
        f"them and writes the record {folder / SIDECAR} that marks the model as pulled."
    )


def unreachable_error(model: HubModel, settings: Settings, reason: str, also: Iterable[HubModel] = ()) -> HubUnreachable:
    """The error of a pull that cannot reach the hub: why, and how to put the files in place by hand
    (for ``model`` and for the models in ``also`` that the same pull would have fetched)."""
    models = [model, *also]
    instructions = " ".join(_manual_instructions(each, settings) for each in models)
    return HubUnreachable(
        f"this machine cannot reach the model hub to pull {', '.join(each.name for each in models)} ({reason}). {instructions}",
        {
            "model": model.name,
            "folder": str(hub_path(model.name, settings)),
            "repo_id": model.repo_id,
            "revision": model.revision,
            "reason": reason,
            "models": [
                {"model": each.name, "folder": str(hub_path(each.name, settings)), "repo_id": each.repo_id, "revision": each.revision}
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


def hub_metadata(model: HubModel, filename: str, endpoint: str | None) -> FileMetadata:
    """The hub's metadata of one file at the pinned commit: one HEAD request, short timeout, no retries."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(model.repo_id, filename, revision=model.revision, endpoint=endpoint)
    return get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S, endpoint=endpoint)


def hub_download(model: HubModel, filename: str, folder: Path, endpoint: str | None) -> str | Path:
    """Download one file at the pinned commit into ``folder``; returns the path it was written to."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(
        model.repo_id,
        filename,
        revision=model.revision,
        local_dir=folder,
        endpoint=endpoint,
        etag_timeout=METADATA_TIMEOUT_S,
    )


@dataclass(frozen=True)
class _Expected:
    size: int | None
    sha256: str | None
    git_sha1: str | None


def _expected(model: HubModel, filename: str, metadata: FileMetadata) -> _Expected:
    """What the downloaded file must be, from the hub's metadata; HubPullError when it gives no checksum."""
    commit = (metadata.commit_hash or "").lower()
    if commit and commit != model.revision:
        raise HubPullError(
            f"the hub answered for {model.repo_id} {filename} with commit {commit}, not the pinned {model.revision}"
        )
    etag = (metadata.etag or "").strip().strip('"').lower()
    etag = etag[2:] if etag.startswith("w/") else etag
    if _SHA256.fullmatch(etag):
        return _Expected(metadata.size, etag, None)
    if _COMMIT.fullmatch(etag):
        return _Expected(metadata.size, None, etag)
    raise HubPullError(
        f"the hub reported no checksum for {model.repo_id} {filename} (etag {metadata.etag!r}); nothing was pulled"
    )


def _check(model: HubModel, filename: str, path: Path, expected: _Expected) -> str:
    """The file's sha256, after checking it against what the hub reported; HubPullError if it differs."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise HubPullError(
            f"{model.repo_id} {filename} downloaded with {size} bytes, the hub reported {expected.size}; nothing was pulled"
        )
    sha256 = file_sha256(path)
    if expected.sha256 is not None and sha256 != expected.sha256:
        raise HubPullError(
            f"{model.repo_id} {filename} downloaded with sha256 {sha256}, "
            f"the hub reported {expected.sha256}; nothing was pulled"
        )
    known = model.known_sha256.get(filename)
    if known is not None and sha256 != known:
        raise HubPullError(f"{model.repo_id} {filename} downloaded with sha256 {sha256}, retouch pins {known}; nothing was pulled")
    if expected.git_sha1 is not None and (actual := git_blob_sha1(path)) != expected.git_sha1:
        raise HubPullError(
            f"{model.repo_id} {filename} downloaded with git id {actual}, "
            f"the hub reported {expected.git_sha1}; nothing was pulled"
        )
    return sha256


def _write_sidecar(folder: Path, record: dict[str, Any]) -> None:
    temporary = folder / (SIDECAR + ".tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, folder / SIDECAR)


def _record(model: HubModel, files: dict[str, dict[str, Any]], source: str) -> dict[str, Any]:
    return {
        "version": SIDECAR_VERSION,
        "name": model.name,
        "repo_id": model.repo_id,
        "revision": model.revision,
        "license": model.license,
        "source": source,
        "files": files,
    }


def _install(model: HubModel, staging: Path, settings: Settings, files: dict[str, dict[str, Any]]) -> Path:
    """Move checked files from ``staging`` into the model's folder, then write the sidecar."""
    folder = hub_path(model.name, settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SIDECAR).unlink(missing_ok=True)  # the folder is not "pulled" while files change
    for filename in model.files:
        target = folder / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / filename, target)
    _write_sidecar(folder, _record(model, files, "hub"))
    return folder


def _pull_one(
    model: HubModel, settings: Settings, metadata: MetadataFetcher, download: Downloader, endpoint: str | None
) -> Path:
    if offline_mode():
        raise unreachable_error(model, settings, "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)")
    expected: dict[str, _Expected] = {}
    for filename in model.files:
        try:
            expected[filename] = _expected(model, filename, metadata(model, filename, endpoint))
        except HubPullError:
            raise
        except Exception as error:
            if _is_network_error(error):
                raise unreachable_error(model, settings, f"{type(error).__name__}: {error}") from error
            raise HubPullError(
                f"the hub refused the metadata of {model.repo_id} {filename} at {model.revision}: "
                f"{type(error).__name__}: {error}"
            ) from error
    root = settings.weights_path / "hub"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}.", suffix=".partial", dir=root))
    try:
        files: dict[str, dict[str, Any]] = {}
        for filename in model.files:
            try:
                written = Path(download(model, filename, staging, endpoint))
            except Exception as error:
                if _is_network_error(error):
                    raise unreachable_error(model, settings, f"{type(error).__name__}: {error}") from error
                raise HubPullError(
                    f"downloading {model.repo_id} {filename} failed: {type(error).__name__}: {error}"
                ) from error
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
    models = [hub_model(name) for name in expand(names)]
    metadata = metadata or hub_metadata
    download = download or hub_download
    wanted = [model for model in models if force or not is_pulled(model.name, settings)]
    if wanted and offline_mode():
        # At once, and for every model the pull needed: a group's user learns all that is to copy, not only the first.
        raise unreachable_error(wanted[0], settings, "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)", also=wanted[1:])
    folders = []
    for index, model in enumerate(models):
        if not force and is_pulled(model.name, settings):
            folders.append(hub_path(model.name, settings))
            continue
        try:
            folders.append(_pull_one(model, settings, metadata, download, endpoint))
        except HubUnreachable as error:
            # The hub went away (or never answered): say what is left to copy, this model and those after it.
            rest = [later for later in models[index + 1 :] if force or not is_pulled(later.name, settings)]
            if not rest:
                raise
            raise unreachable_error(model, settings, error.details["reason"], also=rest) from error
    return folders


def trust_local(name: str, settings: Settings) -> Path:
    """Record files a user put into the model's folder by hand as pulled (``pull --trust-local``).

    They cannot be checked against the hub (that is why they were copied by hand): the sidecar
    records their sha256 and ``"source": "trusted-local"``. WeightsMissing lists absent files.
    """
    model = hub_model(name)
    folder = hub_path(name, settings)
    missing = [filename for filename in model.files if not (folder / filename).is_file()]
    if missing:
        raise WeightsMissing(
            f"{folder} lacks {', '.join(missing)} of {model.repo_id}. {_manual_instructions(model, settings)}"
        )
    files = {
        filename: {"size": (folder / filename).stat().st_size, "sha256": file_sha256(folder / filename)}
        for filename in model.files
    }
    _write_sidecar(folder, _record(model, files, "trusted-local"))
    return folder
