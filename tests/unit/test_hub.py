"""Pinned hub models: pull with fake metadata and downloads, the checks, the sidecar, and failing fast offline."""

from __future__ import annotations

from types import SimpleNamespace

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from retouch.config import Settings
from retouch.errors import InvalidInput, RetouchError, WeightsMissing
from retouch.weights import hub, store
from retouch.weights.hub import SIDECAR, HubPullError, HubUnreachable
from retouch.weights.registry import GROUPS, WEIGHTS, WeightFile

HUB_MODELS = {name: entry for name, entry in WEIGHTS.items() if entry.kind == "hub"}

LFS_FILES = {"model.safetensors"}


@dataclass
class FakeMetadata:
    commit_hash: str | None
    etag: str | None
    size: int | None


def _content(model: WeightFile, filename: str) -> bytes:
    return f"{model.source.repo_id}@{model.source.revision}:{filename}\n".encode() * (50 if filename in LFS_FILES else 1)


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Metadata as the hub reports it (sha256 etag for LFS files, git blob id for the others), and a downloader."""

    def __init__(self, served: dict[str, bytes] | None = None) -> None:
        self.served = served or {}  # filename -> bytes served instead of the true content
        self.metadata_calls: list[tuple[str, str]] = []
        self.downloads: list[tuple[str, str]] = []

    def metadata(self, model: WeightFile, filename: str, endpoint: str | None) -> FakeMetadata:
        self.metadata_calls.append((model.name, filename))
        data = _content(model, filename)
        etag = hashlib.sha256(data).hexdigest() if filename in LFS_FILES else _git_sha1(data)
        return FakeMetadata(commit_hash=model.source.revision, etag=f'"{etag}"', size=len(data))

    def download(self, model: WeightFile, filename: str, folder: Path, endpoint: str | None) -> Path:
        self.downloads.append((model.name, filename))
        path = folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.served.get(filename, _content(model, filename)))
        return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights")


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _leftovers(settings: Settings) -> list[str]:
    root = settings.weights_path / "hub"
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def test_pinned_models() -> None:
    bg_replace = {"sdxl-inpainting", "sdxl-vae-fp16-fix", "controlnet-canny-sdxl", "ip-adapter-sdxl"}
    assert set(HUB_MODELS) == {"owlv2", "sam", "lama"} | bg_replace
    assert set(GROUPS["bg-replace"]) == bg_replace
    assert HUB_MODELS["owlv2"].source.repo_id == "google/owlv2-base-patch16-ensemble"
    assert HUB_MODELS["sam"].source.repo_id == "facebook/sam-vit-base"
    assert HUB_MODELS["lama"].source.repo_id == "Carve/LaMa-ONNX" and HUB_MODELS["lama"].source.files == ("lama_fp32.onnx",)
    assert HUB_MODELS["sdxl-inpainting"].source.repo_id == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    assert HUB_MODELS["controlnet-canny-sdxl"].source.repo_id == "diffusers/controlnet-canny-sdxl-1.0"
    assert HUB_MODELS["ip-adapter-sdxl"].source.repo_id == "h94/IP-Adapter"
    for model in HUB_MODELS.values():
        assert len(model.source.revision) == 40 and int(model.source.revision, 16) >= 0
        assert model.license in {"apache-2.0", "openrail++", "mit"}
        assert set(model.source.known_sha256) <= set(model.source.files)
    for name in ("owlv2", "sam"):
        assert "model.safetensors" in HUB_MODELS[name].source.files and "config.json" in HUB_MODELS[name].source.files
        assert HUB_MODELS[name].engine == "owlv2+sam"


def test_a_pinned_sha256_is_checked_too(settings: Settings) -> None:
    """LaMa's file digest is pinned: a download the hub vouches for but of other bytes is refused."""
    import hashlib

    from retouch.weights.hub import HubPullError, pull

    content = b"not the real lama"
    digest = hashlib.sha256(content).hexdigest()
    model = HUB_MODELS["lama"]

    def metadata(hub_model, filename, endpoint):
        return SimpleNamespace(commit_hash=model.source.revision, etag=digest, size=len(content))

    def download(hub_model, filename, folder, endpoint):
        (folder / filename).write_bytes(content)
        return folder / filename

    with pytest.raises(HubPullError, match="retouch pins"):
        pull(["lama"], settings, metadata=metadata, download=download)
    assert not (settings.weights_path / "hub" / "lama" / ".retouch-pulled.json").exists()
    with pytest.raises(ValueError, match="full 40-hex commit"):
        replace(HUB_MODELS["sam"].source, revision="main")
    with pytest.raises(ValueError, match="plain relative"):
        replace(HUB_MODELS["sam"].source, files=("../config.json",))


def test_paths_and_unknown_names(settings: Settings) -> None:
    assert store.weight_path("owlv2", settings) == settings.weights_path / "hub" / "owlv2"
    assert store.sidecar_path("sam", settings) == settings.weights_path / "hub" / "sam" / SIDECAR
    with pytest.raises(InvalidInput, match="owlv2, sam"):
        store.weight_path("dino", settings)
    with pytest.raises(InvalidInput):
        hub.pull(["owlv2", "dino"], settings, metadata=FakeHub().metadata, download=FakeHub().download)


def test_pull_checks_every_file_and_writes_the_sidecar(settings: Settings) -> None:
    fake = FakeHub()
    assert not store.is_installed("owlv2", settings)
    folders = hub.pull(["owlv2", "sam", "owlv2"], settings, metadata=fake.metadata, download=fake.download)
    assert folders == [store.weight_path("owlv2", settings), store.weight_path("sam", settings)]
    # All metadata of a model is asked for before its first download.
    owlv2 = HUB_MODELS["owlv2"]
    assert fake.metadata_calls[: len(owlv2.source.files)] == [("owlv2", filename) for filename in owlv2.source.files]
    assert len(fake.downloads) == len(owlv2.source.files) + len(HUB_MODELS["sam"].source.files)
    for name in ("owlv2", "sam"):
        model = HUB_MODELS[name]
        assert store.is_installed(name, settings) and store.verify(name, settings)
        assert store.locate(name, settings) == store.weight_path(name, settings)
        record = json.loads(store.sidecar_path(name, settings).read_text())
        assert (record["repo_id"], record["revision"], record["source"]) == (model.source.repo_id, model.source.revision, "hub")
        for filename in model.source.files:
            data = (store.weight_path(name, settings) / filename).read_bytes()
            assert data == _content(model, filename)
            assert record["files"][filename] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert sorted(path.name for path in store.weight_path(name, settings).iterdir()) == sorted([*model.source.files, SIDECAR])
    assert _leftovers(settings) == ["owlv2", "sam"]  # no staging folder left behind

    downloads = len(fake.downloads)
    hub.pull(["sam"], settings, metadata=fake.metadata, download=fake.download)
    assert len(fake.downloads) == downloads  # already pulled: skipped
    hub.pull(["sam"], settings, metadata=fake.metadata, download=fake.download, force=True)
    assert len(fake.downloads) == downloads + len(HUB_MODELS["sam"].source.files)


@pytest.mark.parametrize(
    ("filename", "served", "message"),
    [
        ("model.safetensors", lambda data: data[:-1] + b"?", "sha256"),  # LFS file: sha256 against the hub's etag
        ("config.json", lambda data: data[:-1] + b"?", "git id"),  # git file: blob id against the hub's etag
        ("model.safetensors", lambda data: data + b"more", "bytes"),
    ],
)
def test_a_file_that_does_not_match_leaves_nothing(settings: Settings, filename: str, served, message: str) -> None:
    model = HUB_MODELS["sam"]
    fake = FakeHub({filename: served(_content(model, filename))})
    with pytest.raises(HubPullError, match=message) as caught:
        hub.pull(["sam"], settings, metadata=fake.metadata, download=fake.download)
    assert "nothing was pulled" in caught.value.message
    assert _leftovers(settings) == []
    assert not store.is_installed("sam", settings)


def test_a_failed_repull_keeps_no_sidecar_of_the_old_files(settings: Settings) -> None:
    hub.pull(["sam"], settings, metadata=FakeHub().metadata, download=FakeHub().download)
    bad = FakeHub({"model.safetensors": b"tampered"})
    with pytest.raises(HubPullError):
        hub.pull(["sam"], settings, metadata=bad.metadata, download=bad.download, force=True)
    assert store.is_installed("sam", settings) and store.verify("sam", settings)  # the old, verified files stay as they were
    assert _leftovers(settings) == ["sam"]


def test_metadata_of_another_commit_or_without_checksum_is_refused(settings: Settings) -> None:
    fake = FakeHub()

    def other_commit(model: WeightFile, filename: str, endpoint: str | None) -> FakeMetadata:
        return replace(fake.metadata(model, filename, endpoint), commit_hash="0" * 40)

    def no_checksum(model: WeightFile, filename: str, endpoint: str | None) -> FakeMetadata:
        return replace(fake.metadata(model, filename, endpoint), etag=None)

    with pytest.raises(HubPullError, match="not the pinned"):
        hub.pull(["sam"], settings, metadata=other_commit, download=fake.download)
    with pytest.raises(HubPullError, match="no checksum"):
        hub.pull(["sam"], settings, metadata=no_checksum, download=fake.download)
    assert fake.downloads == [] and _leftovers(settings) == []


def _assert_unreachable_message(error: HubUnreachable, settings: Settings, name: str) -> None:
    folder = store.weight_path(name, settings)
    assert isinstance(error, RetouchError) and error.status_code == 503
    assert "cannot reach the model hub" in error.message
    assert str(folder) in error.message
    assert f"retouch models pull --trust-local {name}" in error.message
    assert SIDECAR in error.message and HUB_MODELS[name].source.revision in error.message
    assert error.details["folder"] == str(folder)


def test_offline_mode_fails_at_once_with_the_real_huggingface_hub(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(HubUnreachable) as caught:
        hub.pull(["owlv2", "sam"], settings)
    assert time.perf_counter() - started < 1.0
    _assert_unreachable_message(caught.value, settings, "owlv2")
    assert _leftovers(settings) == []


def test_offline_mode_set_in_huggingface_hub_itself(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachable):
        hub.pull(["sam"], settings)
    # And when the library refuses a request itself (the check the pull makes first bypassed):
    monkeypatch.setattr(hub, "offline_mode", lambda: False)
    started = time.perf_counter()
    with pytest.raises(HubUnreachable) as caught:
        hub.pull(["sam"], settings)
    assert time.perf_counter() - started < 2.0
    _assert_unreachable_message(caught.value, settings, "sam")


def test_an_unreachable_hub_fails_at_once(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    started = time.perf_counter()
    with pytest.raises(HubUnreachable) as caught:
        hub.pull(["sam"], settings, endpoint="http://127.0.0.1:9")  # nothing listens on the discard port
    assert time.perf_counter() - started < 3.0
    _assert_unreachable_message(caught.value, settings, "sam")
    assert _leftovers(settings) == []


def test_a_refused_request_is_not_reported_as_offline(settings: Settings) -> None:
    def refused(model: WeightFile, filename: str, endpoint: str | None) -> FakeMetadata:
        raise ValueError("404 Client Error: Entry Not Found")

    with pytest.raises(HubPullError, match="refused the metadata") as caught:
        hub.pull(["sam"], settings, metadata=refused, download=FakeHub().download)
    assert not isinstance(caught.value, HubUnreachable)


def test_the_default_functions_call_huggingface_hub_with_the_pinned_revision(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    fake = FakeHub()
    model = HUB_MODELS["sam"]
    heads: list[tuple[str, float]] = []
    downloads: list[dict[str, object]] = []

    def get_hf_file_metadata(url: str, timeout: float, endpoint: str | None) -> FakeMetadata:
        heads.append((url, timeout))
        return fake.metadata(model, url.rsplit("/", 1)[-1], endpoint)

    def hf_hub_download(repo_id: str, filename: str, **kwargs: object) -> str:
        downloads.append({"repo_id": repo_id, "filename": filename, **kwargs})
        return str(fake.download(model, filename, Path(str(kwargs["local_dir"])), None))

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", get_hf_file_metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    hub.pull(["sam"], settings, endpoint="http://hub.invalid")
    base = f"http://hub.invalid/{model.source.repo_id}/resolve/{model.source.revision}"
    assert [url for url, _ in heads] == [f"{base}/{name}" for name in model.source.files]
    assert all(timeout <= hub.METADATA_TIMEOUT_S for _, timeout in heads)
    assert [call["revision"] for call in downloads] == [model.source.revision] * len(model.source.files)
    assert all(call["repo_id"] == model.source.repo_id and call["endpoint"] == "http://hub.invalid" for call in downloads)
    assert store.verify("sam", settings)


def test_pull_problems_and_locate(settings: Settings) -> None:
    with pytest.raises(WeightsMissing, match=r"is not pulled .*retouch models pull owlv2"):
        store.locate("owlv2", settings)
    hub.pull(["sam"], settings, metadata=FakeHub().metadata, download=FakeHub().download)
    folder = store.weight_path("sam", settings)
    (folder / "config.json").write_bytes(b"{}")
    assert store.install_problem("sam", settings) == "has a file config.json of another size than was pulled"
    (folder / "config.json").unlink()
    assert store.install_problem("sam", settings) == "lacks its file config.json"
    record = json.loads((folder / SIDECAR).read_text())
    (folder / SIDECAR).write_text(json.dumps({**record, "revision": "1" * 40}))
    assert "this version of retouch pins" in store.install_problem("sam", settings)
    (folder / SIDECAR).write_text("not json")
    assert SIDECAR in store.install_problem("sam", settings)
    assert not store.is_installed("sam", settings) and not store.verify("sam", settings)


def test_verify_reads_the_files(settings: Settings) -> None:
    hub.pull(["sam"], settings, metadata=FakeHub().metadata, download=FakeHub().download)
    path = store.weight_path("sam", settings) / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + (b"x" if data[-1:] != b"x" else b"y"))  # same size, other bytes
    assert store.is_installed("sam", settings)
    assert not store.verify("sam", settings)


def test_trust_local_records_files_put_in_place_by_hand(settings: Settings) -> None:
    model = HUB_MODELS["sam"]
    folder = store.weight_path("sam", settings)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(WeightsMissing, match="lacks preprocessor_config.json, model.safetensors"):
        hub.trust_local("sam", settings)
    for filename in model.source.files:
        (folder / filename).write_bytes(_content(model, filename))
    assert hub.trust_local("sam", settings) == folder
    record = json.loads((folder / SIDECAR).read_text())
    assert record["source"] == "trusted-local" and record["revision"] == model.source.revision
    assert store.is_installed("sam", settings) and store.verify("sam", settings)


@pytest.fixture
def bg_replace_without_pinned_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bg-replace checkpoints as pinned, but without their known sha256: the fake hub serves other bytes."""
    for name in GROUPS["bg-replace"]:
        monkeypatch.setitem(WEIGHTS, name, replace(WEIGHTS[name], source=replace(WEIGHTS[name].source, known_sha256={})))


@pytest.mark.usefixtures("bg_replace_without_pinned_digests")
def test_the_bg_replace_group_pulls_its_four_checkpoints_with_their_subfolders(settings: Settings) -> None:
    fake = FakeHub()
    group = GROUPS["bg-replace"]
    folders = hub.pull(["bg-replace", "sdxl-inpainting"], settings, metadata=fake.metadata, download=fake.download)
    assert folders == [store.weight_path(name, settings) for name in group]
    for name in group:
        assert store.is_installed(name, settings) and store.verify(name, settings)
    assert (store.weight_path("sdxl-inpainting", settings) / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (store.weight_path("ip-adapter-sdxl", settings) / "models" / "image_encoder" / "model.safetensors").is_file()
    # Pulled already: a second pull fetches nothing.
    fake.downloads.clear()
    hub.pull(["bg-replace"], settings, metadata=fake.metadata, download=fake.download)
    assert fake.downloads == []


def test_the_bg_replace_pull_offline_fails_at_once_naming_every_folder(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(HubUnreachable) as caught:
        hub.pull(["bg-replace"], settings)
    assert time.perf_counter() - started < 1.0
    error = caught.value
    for name in GROUPS["bg-replace"]:
        model = HUB_MODELS[name]
        assert str(store.weight_path(name, settings)) in error.message and model.source.repo_id in error.message and model.source.revision in error.message
        assert f"retouch models pull --trust-local {name}" in error.message
    assert [entry["model"] for entry in error.details["models"]] == list(GROUPS["bg-replace"])
    assert _leftovers(settings) == []


def test_group_names_expand_and_unknown_names_list_the_groups(settings: Settings) -> None:
    assert store.expand(["lama", "bg-replace", "lama"]) == ["lama", *GROUPS["bg-replace"]]
    with pytest.raises(InvalidInput, match=r"bg-replace \(all of sdxl-inpainting"):
        store.weight_file("sdxl")


@pytest.mark.usefixtures("bg_replace_without_pinned_digests")
def test_a_hub_lost_partway_through_the_group_names_what_is_left(settings: Settings) -> None:
    fake = FakeHub()
    group = GROUPS["bg-replace"]

    def metadata(model: WeightFile, filename: str, endpoint: str | None) -> FakeMetadata:
        if model.name == group[1]:
            raise ConnectionError("connection refused")
        return fake.metadata(model, filename, endpoint)

    with pytest.raises(HubUnreachable) as caught:
        hub.pull(["bg-replace"], settings, metadata=metadata, download=fake.download)
    assert store.is_installed(group[0], settings)
    assert [entry["model"] for entry in caught.value.details["models"]] == list(group[1:])
    assert "connection refused" in caught.value.message
    for name in group[1:]:
        assert str(store.weight_path(name, settings)) in caught.value.message
