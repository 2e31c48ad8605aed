"""Parameter and multiply-accumulate counts, the two sizes a user compares before and after.

MACs are per sample (the batch dimension is left out) and counted for Conv, Gemm and
MatMul, which is where almost all of a CNN's arithmetic is. They need the output shapes, so
the model goes through ONNX shape inference first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx


@dataclass(frozen=True)
class ModelCost:
    parameters: int
    macs: int


def model_cost(model: onnx.ModelProto) -> ModelCost:
    graph = model.graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    parameters = int(sum(int(np.prod(dims)) for dims in weights.values()))
    shapes = _known_shapes(model)
    macs = 0
    for node in graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        per_sample = int(np.prod(out[1:])) if len(out) > 1 else 1
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            # each output element reads C_in/group * kernel inputs
            macs += per_sample * int(np.prod(weights[node.input[1]][1:]))
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            w = weights[node.input[1]]
            if len(w) == 2:
                inner = w[1] if (node.op_type == "Gemm" and _attr(node, "transB", 0)) else w[0]
                macs += per_sample * int(inner)
    return ModelCost(parameters, macs)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes whose every dimension past the first (the batch) is a known integer."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort here; validation runs it strictly
        inferred = model
    shapes: dict[str, tuple[int, ...]] = {}
    g = inferred.graph
    for info in list(g.value_info) + list(g.output) + list(g.input):
        tt = info.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if all(d is not None for d in dims[1:]):
            shapes[info.name] = tuple(d if d is not None else 1 for d in dims)
    return shapes
