"""What a finished request gives back, and what an image parameter may be."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy
    from PIL import Image

    ImageInput = str | bytes | os.PathLike[str] | Image.Image | numpy.ndarray
else:
    ImageInput = Any


@dataclass
class Result:
    """A finished request: its images (encoded bytes: PNG, JPEG or WebP) and its metrics."""

    request_id: str | None
    images: list[bytes]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> bytes:
        return self.images[0]

    def to_pil(self, index: int = 0) -> Any:
        from PIL import Image

        return Image.open(io.BytesIO(self.images[index]))

    def to_numpy(self, index: int = 0) -> Any:
        import numpy as np

        return np.asarray(self.to_pil(index))

    def save(self, path: str | os.PathLike[str], index: int = 0) -> Path:
        target = Path(path)
        target.write_bytes(self.images[index])
        return target
