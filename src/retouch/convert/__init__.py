"""Model format converters, built on the ``onnx`` package only (no TensorFlow).

- :mod:`retouch.convert.tfjs`: read a TF.js graph model (``model.json`` and its weight shards).
- :mod:`retouch.convert.tfjs_to_onnx`: translate it into an ONNX model
  (:func:`~retouch.convert.tfjs_to_onnx.convert_tfjs_graph`).

This package's ``__init__`` imports neither NumPy nor onnx, so that the weights store can read
:data:`TFJS_TO_ONNX_VERSION` cheaply.
"""

# Bump when the ONNX that the TF.js converter produces changes: converted weights record the
# version they were made with, and one made by another version counts as not installed.
TFJS_TO_ONNX_VERSION = "1"

__all__ = ["TFJS_TO_ONNX_VERSION"]
