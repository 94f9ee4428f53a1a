"""Read a TF.js graph model (``model.json`` and its binary weight shards) into plain Python and NumPy.

The format (TF.js ``graph-model``): ``modelTopology.node`` is a TensorFlow GraphDef in JSON, each
node with ``name``, ``op``, ``input`` (``"producer"``, ``"producer:1"`` for a second output,
``"^producer"`` for a control dependency) and ``attr`` (``AttrValue`` as JSON: strings are
base64). ``weightsManifest`` lists groups of shard files, concatenated in order, and the tensors
stored in them one after the other. A tensor may be stored quantized:

- ``float16``: IEEE half floats, widened to float32;
- ``uint8`` / ``uint16`` with ``scale`` and ``min``: ``value = q * scale + min`` in float32.

Both are what TF.js's own ``decodeWeights`` does, so the arrays here are the values TF.js computes with.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retouch.errors import RetouchError


class TFJSFormatError(RetouchError):
    """A TF.js model file is missing, malformed, or uses a feature this reader does not know."""


# Storage dtypes of the weights manifest and TF DataType enum names, to NumPy.
_MANIFEST_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("?"),
    "float16": np.dtype("<f2"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
}

TF_DTYPES: dict[str, np.dtype] = {
    "DT_FLOAT": np.dtype(np.float32),
    "DT_DOUBLE": np.dtype(np.float64),
    "DT_HALF": np.dtype(np.float16),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64),
    "DT_INT16": np.dtype(np.int16),
    "DT_INT8": np.dtype(np.int8),
    "DT_UINT8": np.dtype(np.uint8),
    "DT_UINT16": np.dtype(np.uint16),
    "DT_BOOL": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class TensorRef:
    """One output of a node: ``producer`` and its output ``index`` (``"name:1"`` in the JSON)."""

    node: str
    index: int = 0

    @classmethod
    def parse(cls, text: str) -> TensorRef:
        name, sep, index = text.rpartition(":")
        if sep and index.isdigit():
            return cls(name, int(index))
        return cls(text, 0)

    def __str__(self) -> str:
        return self.node if self.index == 0 else f"{self.node}:{self.index}"


@dataclass
class Node:
    """A graph node: its ``inputs`` (data inputs only, in order) and decoded ``attrs``."""

    name: str
    op: str
    inputs: list[TensorRef] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    control_inputs: list[str] = field(default_factory=list)


@dataclass
class TFJSGraph:
    """A TF.js graph model: nodes in file order, by name, the weights and the signature."""

    nodes: list[Node]
    weights: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def _decode_string(value: str) -> str:
    return base64.b64decode(value).decode("utf-8")


def _decode_shape(shape: dict[str, Any]) -> list[int] | None:
    if shape.get("unknownRank"):
        return None
    return [int(dim.get("size", -1)) for dim in shape.get("dim", [])]


def decode_attr(value: dict[str, Any]) -> Any:
    """One ``AttrValue`` from its JSON form: str, int, float, bool, dtype name, shape or a list of these."""
    if "s" in value:
        return _decode_string(value["s"])
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return _decode_shape(value["shape"])
    if "tensor" in value:
        # A Const node's value: its bytes are in the weights; only its dtype and shape are here.
        tensor = value["tensor"]
        return {"dtype": tensor.get("dtype"), "shape": _decode_shape(tensor.get("tensorShape", {}))}
    if "func" in value:
        return value["func"]
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [_decode_string(item) for item in items["s"]]
        if "i" in items:
            return [int(item) for item in items["i"]]
        if "f" in items:
            return [float(item) for item in items["f"]]
        if "b" in items:
            return [bool(item) for item in items["b"]]
        if "type" in items:
            return list(items["type"])
        if "shape" in items:
            return [_decode_shape(item) for item in items["shape"]]
        return []
    # An empty AttrValue ({}) is an empty list in the JSON of a GraphDef.
    return []


def decode_weights(specs: list[dict[str, Any]], data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a weights manifest group from its concatenated shard bytes, dequantized as TF.js does."""
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        name = spec["name"]
        shape = [int(dim) for dim in spec.get("shape", [])]
        count = math.prod(shape)
        dtype = spec["dtype"]
        quantization = spec.get("quantization")
        storage = quantization["dtype"] if quantization else dtype
        if storage not in _MANIFEST_DTYPES or dtype not in _MANIFEST_DTYPES:
            raise TFJSFormatError(f"weight {name!r} has dtype {storage!r}, which the TF.js reader does not support")
        stored = _MANIFEST_DTYPES[storage]
        size = count * stored.itemsize
        if offset + size > len(data):
            raise TFJSFormatError(
                f"the weight shards end before weight {name!r} ({offset + size} bytes needed, {len(data)} present)"
            )
        raw = np.frombuffer(data, dtype=stored, count=count, offset=offset)
        offset += size
        if quantization and storage == "float16":
            values = raw.astype(np.float32)
        elif quantization and storage in ("uint8", "uint16"):
            # TF.js computes q * scale + min in JavaScript numbers (float64), then stores it in a
            # Float32Array, or rounds it with Math.round (halves up) for an int32 tensor.
            values = raw.astype(np.float64) * float(quantization["scale"]) + float(quantization["min"])
            values = np.floor(values + 0.5).astype(np.int32) if dtype == "int32" else values.astype(np.float32)
        elif quantization:
            raise TFJSFormatError(f"weight {name!r} has quantization {storage!r}, which the TF.js reader does not support")
        else:
            values = raw.copy()
        weights[name] = values.astype(_MANIFEST_DTYPES[dtype], copy=False).reshape(shape)
    if offset != len(data):
        raise TFJSFormatError(f"the weight shards hold {len(data)} bytes, the manifest describes {offset}")
    return weights


def parse_node(raw: dict[str, Any]) -> Node:
    inputs: list[TensorRef] = []
    control: list[str] = []
    for text in raw.get("input", []):
        if text.startswith("^"):
            control.append(text[1:])
        else:
            inputs.append(TensorRef.parse(text))
    attrs = {key: decode_attr(value) for key, value in raw.get("attr", {}).items()}
    return Node(name=raw["name"], op=raw["op"], inputs=inputs, attrs=attrs, control_inputs=control)


def graph_from_json(model: dict[str, Any], weight_data: bytes | list[bytes]) -> TFJSGraph:
    """A graph from the parsed ``model.json`` and its weight bytes (one bytes per manifest group, or all of them)."""
    if model.get("format", "graph-model") != "graph-model":
        raise TFJSFormatError(f"the TF.js model has format {model.get('format')!r}; only 'graph-model' is supported")
    topology = model.get("modelTopology") or {}
    if "node" not in topology:
        raise TFJSFormatError("the TF.js model has no modelTopology.node: it is not a graph model")
    nodes = [parse_node(raw) for raw in topology["node"]]
    if topology.get("library", {}).get("function"):
        raise TFJSFormatError("the TF.js model has functions (control flow); the reader does not support them")
    groups = model.get("weightsManifest", [])
    weights: dict[str, np.ndarray] = {}
    if isinstance(weight_data, list):
        if len(weight_data) != len(groups):
            raise TFJSFormatError(f"{len(weight_data)} weight buffers for {len(groups)} manifest groups")
        for group, data in zip(groups, weight_data, strict=True):
            weights.update(decode_weights(group["weights"], data))
    else:
        weights.update(decode_weights([spec for group in groups for spec in group["weights"]], weight_data))

    signature = model.get("signature") or {}
    placeholders = [node.name for node in nodes if node.op == "Placeholder"]
    inputs = [TensorRef.parse(value.get("name", key)).node for key, value in signature.get("inputs", {}).items()] or placeholders
    outputs = [value.get("name", key) for key, value in signature.get("outputs", {}).items()]
    if not outputs:
        consumed = {ref.node for node in nodes for ref in node.inputs}
        outputs = [node.name for node in nodes if node.name not in consumed and node.op not in ("Const", "Placeholder")]
    metadata = {key: model[key] for key in ("generatedBy", "convertedBy", "userDefinedMetadata") if key in model}
    return TFJSGraph(nodes=nodes, weights=weights, inputs=inputs, outputs=outputs, metadata=metadata)


def load_graph_model(model_json: Path) -> TFJSGraph:
    """Read ``model_json`` and the shard files its manifest names (relative to its folder)."""
    model_json = Path(model_json)
    try:
        model = json.loads(model_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TFJSFormatError(f"cannot read the TF.js model {model_json}: {exc}") from exc
    buffers = []
    for group in model.get("weightsManifest", []):
        chunks = []
        for shard in group.get("paths", []):
            shard_path = model_json.parent / shard
            if Path(shard).is_absolute() or ".." in Path(shard).parts:
                raise TFJSFormatError(f"the TF.js model names a weight shard outside its folder: {shard!r}")
            try:
                chunks.append(shard_path.read_bytes())
            except OSError as exc:
                raise TFJSFormatError(f"cannot read the weight shard {shard_path}: {exc}") from exc
        buffers.append(b"".join(chunks))
    return graph_from_json(model, buffers)
