"""Weightless shape inference (graph.shapes) gives what onnx's full inference gives."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from builders import chain_model, random_bn
from onnx_lbyl.graph import shapes
from onnx_lbyl.graph.cost import model_cost


def _shapes(graph: onnx.GraphProto) -> dict[str, list]:
    return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in list(graph.value_info) + list(graph.output)}


def _chain_then_reshape() -> onnx.ModelProto:
    """A chain, then a Reshape whose target shape is an initializer (read by inference)."""
    rng = np.random.default_rng(0)
    model = chain_model(rng.standard_normal((40, 3, 3, 3)), rng.standard_normal((30, 40, 3, 3)),
                        bn=random_bn(rng, 40), height=8)
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat"))
    model.graph.node.append(helper.make_node("Reshape", ["y", "flat"], ["flat_y"]))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("flat_y", TensorProto.FLOAT, None))
    return model


def test_weightless_copy_keeps_shapes_and_drops_big_weights():
    model = _chain_then_reshape()
    skeleton = shapes.weightless(model)
    kept = {t.name for t in skeleton.graph.initializer}
    assert "flat" in kept and "bn_gamma" in kept  # small: may be read as values
    assert "w1" not in kept and "w2" not in kept  # 1080 and 10800 elements: now typed inputs
    inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in skeleton.graph.input}
    assert inputs["w2"] == [30, 40, 3, 3]
    assert skeleton.ByteSize() < model.ByteSize() / 5
    assert len(model.graph.initializer) == len(kept) + 2  # the input model is untouched


def test_inferred_shapes_match_full_inference():
    model = _chain_then_reshape()
    full = onnx.shape_inference.infer_shapes(model)
    light = shapes.infer_shapes(_chain_then_reshape())
    assert _shapes(light.graph) == _shapes(full.graph)
    assert _shapes(light.graph)["flat_y"] == ["batch", 30 * 8 * 8]
    assert model_cost(model).macs == (40 * 27 + 30 * 360) * 64
