"""Parameter and multiply-accumulate counts, the two sizes a user compares before and after.

MACs are per sample (the batch dimension is left out) and counted for every Conv and for
every Gemm and MatMul with a constant 2-D weight, which is where almost all of a CNN's
arithmetic is. They need the output shapes, so the model goes through ONNX shape inference
first, on a weightless copy (graph.shapes) whose inputs have the stated input shapes
(graph.input_shapes): the answer depends only on shapes, and passing the weights through
inference was the slowest part of a compression of a large model.

A layer whose output shape is still unknown makes the total unknown (None) rather than
silently smaller. Layers inside If/Loop/Scan bodies are not counted (graph.unsupported).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import InputError
from .unsupported import subgraph_layers
from .input_shapes import InputShapes
from .shapes import weightless

# Operators whose output holds exactly the elements of their first input, in some order: the
# input of a classifier head's Gemm/MatMul has as many elements per sample as what they read.
_SAME_ELEMENTS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Dropout", "Cast"})


@dataclass(frozen=True)
class ModelCost:
    parameters: int
    macs: int | None  # None: some layer's output shape is unknown, even at the stated input shapes
    unknown: tuple[str, ...] = ()  # those layers (first output names)


def model_cost(model: onnx.ModelProto, input_shapes: InputShapes = ()) -> ModelCost:
    """Parameters (elements of the initializers and Constant nodes) and per-sample MACs of
    Conv, Gemm and MatMul, at `input_shapes` (CompressOptions.input_shapes). Layers inside
    If/Loop/Scan bodies make the MACs unknown: which branch runs, or how often, is data."""
    parameters = int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
    parameters += int(sum(int(np.prod(dims)) for dims in _constant_shapes(model).values()))
    macs = node_macs(model, input_shapes)
    unknown = tuple(name for name, value in macs.items() if value is None)
    unknown += tuple(layer for layer, _where in subgraph_layers(model))
    return ModelCost(parameters, None if unknown else sum(macs.values()), unknown)


def node_macs(model: onnx.ModelProto, input_shapes: InputShapes = ()) -> dict[str, int | None]:
    """Per-sample MACs of every Conv, and of every Gemm and MatMul with a constant 2-D weight
    (an initializer or a Constant node), keyed by the node's first output name (unique,
    unlike node names); None for a layer whose shapes are not known."""
    constants = {t.name: tuple(t.dims) for t in model.graph.initializer}
    constants.update(_constant_shapes(model))
    shapes = _known_shapes(model, input_shapes)
    producers = {out: node for node in model.graph.node for out in node.output}
    macs: dict[str, int | None] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or not node.output:
            continue
        out = shapes.get(node.output[0])
        per_sample = None if out is None else (int(np.prod(out[1:])) if len(out) > 1 else 1)
        if node.op_type == "Conv":
            w = constants.get(node.input[1], shapes.get(node.input[1]))
            # each output element reads C_in/group * kernel inputs
            macs[node.output[0]] = None if per_sample is None or w is None else per_sample * int(np.prod(w[1:]))
            continue
        w = constants.get(node.input[1])
        if w is None or len(w) != 2:
            continue  # not a layer with a weight (e.g. attention's activation x activation)
        transposed = node.op_type == "Gemm" and _attr(node, "transB", 0)
        inner, features = (w[1], w[0]) if transposed else (w[0], w[1])
        if per_sample is not None:
            macs[node.output[0]] = per_sample * int(inner)
        elif node.op_type == "Gemm" and _attr(node, "transA", 0):
            macs[node.output[0]] = None
        else:  # output shape unknown (e.g. a Reshape to a computed shape): count its input's elements
            elements = _elements_per_sample(node.input[0], shapes, producers)
            macs[node.output[0]] = None if elements is None else elements * int(features)
    return macs


def target_node_macs(model: onnx.ModelProto, input_shapes: InputShapes = ()) -> dict[str, int]:
    """node_macs for --target-macs, which needs every layer's count: InputError if one is unknown."""
    macs = node_macs(model, input_shapes)
    unknown = [name for name, value in macs.items() if value is None]
    if unknown:
        others = f" (and {len(unknown) - 1} other layer(s))" if len(unknown) > 1 else ""
        hint = (" even at the stated input shapes" if input_shapes
                else "; give the input shapes with --input-shape NAME:d0,d1,...")
        raise InputError(f"--target-macs needs the model's MACs, which are unknown: the output shape of "
                         f"{unknown[0]!r}{others} is not known{hint}")
    return {name: int(value) for name, value in macs.items()}


def _elements_per_sample(name: str, shapes: dict[str, tuple[int, ...]], producers: dict[str, onnx.NodeProto]) -> int | None:
    for _ in range(len(producers) + 1):
        if name in shapes:
            return int(np.prod(shapes[name][1:]))
        node = producers.get(name)
        if node is None or node.op_type not in _SAME_ELEMENTS or not node.input:
            return None
        name = node.input[0]
    return None


def _constant_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Output name -> dims of the tensor of every Constant node of the main graph."""
    shapes = {}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    shapes[node.output[0]] = tuple(a.t.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def _known_shapes(model: onnx.ModelProto, input_shapes: InputShapes = ()) -> dict[str, tuple[int, ...]]:
    """Shapes whose every dimension past the first (the batch) is a known integer (>= 1:
    some exporters write -1 for a dynamic one).

    Inference propagates the values of shape computations (data_prop: Shape -> Gather ->
    Concat -> Reshape, as detection heads write them). What is still unknown then is inferred
    once more with every dynamic batch dimension at 1: a Reshape whose -1 depends on the batch
    (YOLO's (batch, 144, -1)) resolves only at a concrete batch. The first pass's shapes win,
    so a shape that a batch of 1 would change (a Squeeze without axes) is never taken from it."""
    shapes = _shapes_of(_inferred(model, input_shapes))
    if any(node.op_type in ("Conv", "Gemm", "MatMul") and node.output and node.output[0] not in shapes
           for node in model.graph.node):
        at_one = _shapes_of(_inferred(model, input_shapes, unit_batch=True))
        shapes.update({name: dims for name, dims in at_one.items() if name not in shapes})
    return shapes


def _inferred(model: onnx.ModelProto, input_shapes: InputShapes, unit_batch: bool = False) -> onnx.GraphProto:
    """The weightless copy after shape inference with data propagation (the model's own graph
    when inference fails: it is best effort here; validation runs it strictly)."""
    skeleton = weightless(model, input_shapes)
    if unit_batch:
        for info in skeleton.graph.input:
            dims = info.type.tensor_type.shape.dim
            if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
                dims[0].Clear()
                dims[0].dim_value = 1
    try:
        return onnx.shape_inference.infer_shapes(skeleton, data_prop=True).graph
    except Exception:
        return model.graph


def _shapes_of(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for info in list(graph.value_info) + list(graph.output) + list(graph.input):
        tt = info.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        if all(d is not None for d in dims[1:]):
            shapes[info.name] = tuple(d if d is not None else 1 for d in dims)
    return shapes
