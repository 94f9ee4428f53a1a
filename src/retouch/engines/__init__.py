"""Inference engines. ``ENGINES`` maps an engine name (as in the weights registry) to its class.

Nothing here imports torch: every engine runs on onnxruntime.
"""

from retouch.engines.device import available_cpu_cores, onnx_providers, resolve_device
from retouch.engines.u2net import U2NetEngine

ENGINES: dict[str, type] = {
    "u2net": U2NetEngine,
}

__all__ = ["ENGINES", "U2NetEngine", "available_cpu_cores", "onnx_providers", "resolve_device"]
