"""A Reshape that flattens everything but the batch axis becomes `Flatten(axis=1)`.

Exporters spell "flatten before the classifier" in several ways: PyTorch's `x.view(x.size(0), -1)`
is `Shape -> Gather(0) -> Unsqueeze -> Concat(-1) -> Reshape`, Paddle2ONNX computes the target
from `Shape -> Cast -> Slice -> Concat`, and constant folding turns those into `Reshape(x, [-1, K])`.
The group analysis recognises one spelling (a channel becomes a block of K / C features of the
Gemm/MatMul that reads it); this pass gives it that one: `Flatten(axis=1)`.

A Reshape qualifies when its input's non-batch dimensions are static (product K) and its target
is [batch, K] for certain: a constant `[-1, K]`, `[0, -1]`, `[0, K]`, `[n, -1]` or `[n, K]` with n the
input's static batch size, or a target computed from shapes (followed symbolically) with the input's
batch dimension first (read with Shape from the input itself, or from a tensor whose first
dimension is the same symbol) and -1 or K second. The shape computation left without a reader
is removed.

`drop_noop_flatten` removes a Flatten(axis=1) whose input is already 2-D.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..graph.shapes import inferred_value_info
from ._graph import GraphIndex, attr, bypass, remove_dead_nodes


def _dims(value_info: onnx.ValueInfoProto):
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _symbolic(index: GraphIndex, name: str, shapes: dict, depth: int = 0) -> list | None:
    """The entries of a 1-D int tensor computed from shapes: ints, or ("dim", tensor, axis)
    for a dimension read with Shape. Follows Shape, Gather, Unsqueeze, Squeeze, Concat, Cast,
    Slice and constants; None for anything else."""
    value = index.value(name)
    if value is not None:
        return [int(v) for v in value.reshape(-1)] if value.dtype.kind in "iu" and value.ndim <= 1 else None
    node = index.producer.get(name)
    if node is None or depth > 16 or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        dims = shapes.get(node.input[0])
        if dims is None:
            return None
        rank = len(dims)
        start, end = attr(node, "start", 0), attr(node, "end", rank)
        return [("dim", node.input[0], i) for i in range(rank)][start:end]
    if op in ("Cast", "Unsqueeze", "Squeeze", "Identity"):
        return _symbolic(index, node.input[0], shapes, depth + 1)
    if op == "Concat":
        parts = [_symbolic(index, i, shapes, depth + 1) for i in node.input]
        return None if any(p is None for p in parts) else [e for p in parts for e in p]
    if op == "Gather":
        data, indices = _symbolic(index, node.input[0], shapes, depth + 1), index.value(node.input[1])
        if data is None or indices is None or attr(node, "axis", 0) != 0:
            return None
        try:
            return [data[int(i)] for i in indices.reshape(-1)]
        except IndexError:
            return None
    if op == "Slice" and len(node.input) >= 3:
        data = _symbolic(index, node.input[0], shapes, depth + 1)
        bounds = [index.value(i) if i else None for i in node.input[1:5]]
        if data is None or bounds[0] is None or bounds[1] is None:
            return None
        axes = bounds[2] if len(bounds) > 2 and bounds[2] is not None else np.array([0])
        steps = bounds[3] if len(bounds) > 3 and bounds[3] is not None else np.array([1])
        if axes.size != 1 or int(axes.reshape(-1)[0]) not in (0, -1):
            return None
        start, end, step = (int(v.reshape(-1)[0]) for v in (bounds[0], bounds[1], steps))
        return data[slice(start, end, step)]
    return None


def _is_flatten(index: GraphIndex, node: onnx.NodeProto, shapes: dict) -> bool:
    if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return False
    data = shapes.get(node.input[0])
    if data is None or len(data) < 2 or not all(isinstance(d, int) and d > 0 for d in data[1:]):
        return False
    features = int(np.prod(data[1:]))
    batch = data[0]
    target = index.value(node.input[1])
    if target is not None:
        target = [int(v) for v in target.reshape(-1)]
        if len(target) != 2 or target[1] not in (-1, features):
            return False
        if target[0] == 0:
            return not attr(node, "allowzero", 0)
        if target[0] == -1:
            return target[1] == features
        return isinstance(batch, int) and batch > 0 and target[0] == batch
    target = _symbolic(index, node.input[1], shapes)
    if target is None or len(target) != 2 or target[1] not in (-1, features):
        return False
    first = target[0]
    if isinstance(first, int):
        return (first == -1 and target[1] == features) or (first == 0 and not attr(node, "allowzero", 0))
    _, tensor, axis = first
    if tensor == node.input[0]:
        return axis == 0
    dims = shapes.get(tensor)  # the batch size read from another tensor with the same first dim
    return (dims is not None and axis < len(dims) and dims[axis] is not None and dims[axis] == batch
            and (isinstance(batch, str) or batch > 0))


def _shapes(model: onnx.ModelProto) -> dict | None:
    try:
        inferred = inferred_value_info(model)
    except Exception:  # noqa: BLE001 - shape inference failing only means no rewrite
        return None
    return {v.name: _dims(v) for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)}


def drop_noop_flatten(model: onnx.ModelProto) -> int:
    """Remove Flatten(axis=1) of a 2-D tensor (a no-op); returns how many."""
    if not any(n.op_type == "Flatten" for n in model.graph.node):
        return 0
    shapes = _shapes(model)
    if shapes is None:
        return 0
    index = GraphIndex(model.graph)
    done = 0
    for node in [n for n in model.graph.node if n.op_type == "Flatten" and n.domain in ("", "ai.onnx")]:
        dims = shapes.get(node.input[0])
        if dims is not None and len(dims) == 2 and attr(node, "axis", 1) in (1, -1) and bypass(index, node):
            done += 1
    return done


def reshape_to_flatten(model: onnx.ModelProto) -> int:
    """Turn flattening Reshapes into Flatten(axis=1); returns how many."""
    if not any(n.op_type == "Reshape" for n in model.graph.node):
        return 0
    shapes = _shapes(model)
    if shapes is None:
        return 0
    index = GraphIndex(model.graph)
    done = 0
    for node in model.graph.node:
        if not _is_flatten(index, node, shapes):
            continue
        shape_input = node.input[1]
        node.op_type = "Flatten"
        del node.input[1:]
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute("axis", 1))
        done += 1
        index.refresh()
        remove_dead_nodes(index, [shape_input])
    return done
