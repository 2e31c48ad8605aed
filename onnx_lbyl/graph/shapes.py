"""ONNX shape inference without carrying the weights through it.

`onnx.shape_inference.infer_shapes(model)` serialises the whole model, parses it in C++,
serialises the result and parses it back in Python: four passes over every weight byte, and
as many transient copies in memory, for an answer that depends only on the weights' shapes.
On ResNet-50 (100 MB) that is about 0.5 s and on VGG-16 (550 MB) about 3 s per call.

Here inference runs on a *weightless* copy: every large initializer is replaced by a graph
input of the same type and shape, which is all a Conv, Gemm or MatMul needs. Small
initializers (and every integer one) stay, because some operators read their values to get
a shape (Reshape's target, Slice's bounds, Clip's bounds...). The result is the same
shapes at a cost that does not grow with the size of the weights.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .input_shapes import InputShapes, shaped_inputs

# Initializers up to this many elements keep their values (they may be shape arguments).
SMALL = 1024
_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def weightless(model: onnx.ModelProto, input_shapes: InputShapes = ()) -> onnx.ModelProto:
    """A copy of `model` whose large float initializers are typed graph inputs instead, and
    whose real inputs have the stated `input_shapes` (graph.input_shapes.shaped_inputs)."""
    graph = model.graph
    skeleton = onnx.ModelProto()
    skeleton.ir_version = max(model.ir_version, 4)  # initializers need not be inputs from IR 4 on
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    g = skeleton.graph
    g.name = graph.name
    g.node.extend(graph.node)
    if input_shapes:
        shaped = {i.name: i for i in shaped_inputs(model, input_shapes)}
        g.input.extend(shaped.get(i.name, i) for i in graph.input)
    else:
        g.input.extend(graph.input)
    g.output.extend(graph.output)
    if input_shapes:  # shapes recorded at the declared input shapes are inferred afresh
        for output in g.output:
            if output.type.HasField("tensor_type"):
                output.type.tensor_type.ClearField("shape")
    else:
        g.value_info.extend(graph.value_info)
    g.sparse_initializer.extend(graph.sparse_initializer)
    declared = {i.name for i in graph.input}
    for tensor in graph.initializer:
        if tensor.data_type not in _FLOATS or int(np.prod(tensor.dims)) <= SMALL:
            g.initializer.append(tensor)
        elif tensor.name not in declared:
            g.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return skeleton


def inferred_value_info(model: onnx.ModelProto, input_shapes: InputShapes = (), **options) -> onnx.GraphProto:
    """The graph of the weightless copy, its inputs at `input_shapes`, after shape inference
    (`options` go to onnx.shape_inference.infer_shapes, e.g. strict_mode=True); its value_info
    and outputs hold the inferred shapes. Raises what infer_shapes raises."""
    return onnx.shape_inference.infer_shapes(weightless(model, input_shapes), **options).graph


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with the inferred value_info and output shapes, like
    onnx.shape_inference.infer_shapes(model) but without passing the weights through it.

    The model is modified in place and returned. Shape inference errors propagate.
    """
    inferred = inferred_value_info(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.output)
    return model
