"""Parameter and multiply-accumulate counts, the two sizes a user compares before and after.

MACs are per sample (the batch dimension is left out) and counted for Conv, Gemm and
MatMul, which is where almost all of a CNN's arithmetic is. They need the output shapes, so
the model goes through ONNX shape inference first, on a weightless copy (graph.shapes): the
answer depends only on shapes, and passing the weights through inference was the slowest
part of a compression of a large model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .shapes import inferred_value_info


@dataclass(frozen=True)
class ModelCost:
    parameters: int
    macs: int


def model_cost(model: onnx.ModelProto) -> ModelCost:
    """Parameters (initializer elements) and per-sample MACs of Conv, Gemm and MatMul."""
    parameters = int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
    return ModelCost(parameters, sum(node_macs(model).values()))


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Per-sample MACs of every Conv, Gemm and MatMul with a constant weight and known output
    shape, keyed by the node's first output name (unique, unlike node names)."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    shapes = _known_shapes(model)
    macs: dict[str, int] = {}
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None or len(node.input) < 2 or node.input[1] not in weights:
            continue
        per_sample = int(np.prod(out[1:])) if len(out) > 1 else 1
        w = weights[node.input[1]]
        if node.op_type == "Conv":
            # each output element reads C_in/group * kernel inputs
            macs[node.output[0]] = per_sample * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and len(w) == 2:
            inner = w[1] if (node.op_type == "Gemm" and _attr(node, "transB", 0)) else w[0]
            macs[node.output[0]] = per_sample * int(inner)
    return macs


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes whose every dimension past the first (the batch) is a known integer."""
    try:
        g = inferred_value_info(model)
    except Exception:  # shape inference is best effort here; validation runs it strictly
        g = model.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for info in list(g.value_info) + list(g.output) + list(g.input):
        tt = info.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if all(d is not None for d in dims[1:]):
            shapes[info.name] = tuple(d if d is not None else 1 for d in dims)
    return shapes
