"""Small helpers shared by the tests: arrays to PNG/base64 and back."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))
