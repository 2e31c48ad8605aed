"""Models refused before any work (graph.unsupported): quantized ones, and ones whose layers
are all inside control-flow bodies; layers inside bodies are listed for the skip report."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_lbyl import CompressOptions, InputError, NothingToPruneError, compress
from onnx_lbyl.cli import main
from onnx_lbyl.graph.unsupported import quantized_ops, subgraph_layers

RNG = np.random.default_rng(0)


def _f32(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _const(name: str, value, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _model(nodes, inits, inputs=None, output_type=TensorProto.FLOAT, opset: int = 17) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    y = helper.make_tensor_value_info("y", output_type, ["N", 4, 8, 8])
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, [y], inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def qdq_model() -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(int8 weight)) -> Relu -> Conv -> y: what onnxruntime's QDQ quantizer writes."""
    inits = [_const("s", 0.02, np.float32), _const("zp", 0, np.int8),
             _const("w1q", RNG.integers(-127, 127, (6, 3, 3, 3)), np.int8), _const("ws", 0.01, np.float32),
             _f32("w2", (4, 6, 3, 3))]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w1q", "ws", "zp"], ["w1"]),
        helper.make_node("Conv", ["xd", "w1"], ["u"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["u"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, inits)


def qlinear_model() -> onnx.ModelProto:
    """x -> QuantizeLinear -> QLinearConv x2 -> DequantizeLinear -> y (QOperator format)."""
    inits = [_const("s", 0.02, np.float32), _const("zp", 0, np.uint8), _const("ws", 0.01, np.float32),
             _const("wzp", 0, np.uint8), _const("w1", RNG.integers(0, 255, (6, 3, 3, 3)), np.uint8),
             _const("w2", RNG.integers(0, 255, (4, 6, 3, 3)), np.uint8)]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "s", "zp", "w1", "ws", "wzp", "s", "zp"], ["uq"], pads=[1, 1, 1, 1]),
        helper.make_node("QLinearConv", ["uq", "s", "zp", "w2", "ws", "wzp", "s", "zp"], ["yq"], pads=[1, 1, 1, 1]),
        helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["y"]),
    ]
    return _model(nodes, inits)


def conv_integer_model() -> onnx.ModelProto:
    """uint8 x -> ConvInteger -> Cast -> y (dynamic quantization's Conv)."""
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 3, 8, 8])
    inits = [_const("w", RNG.integers(0, 255, (4, 3, 3, 3)), np.uint8), _const("xzp", 128, np.uint8)]
    nodes = [
        helper.make_node("ConvInteger", ["x", "w", "xzp"], ["acc"], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT),
    ]
    return _model(nodes, inits, inputs=[x])


def _body(name: str, prefix: str, inits=()) -> onnx.GraphProto:
    """A branch: t (outer scope) -> Conv -> Relu -> Conv -> out, reading outer-scope weights."""
    nodes = [
        helper.make_node("Conv", ["t", "bw1"], [f"{prefix}u"], name=f"{prefix}conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [f"{prefix}u"], [f"{prefix}a"]),
        helper.make_node("Conv", [f"{prefix}a", "bw2"], [f"{prefix}out"], name=f"{prefix}conv2", pads=[1, 1, 1, 1]),
    ]
    out = helper.make_tensor_value_info(f"{prefix}out", TensorProto.FLOAT, ["N", 4, 8, 8])
    return helper.make_graph(nodes, name, [], [out], list(inits))


def if_model(outer_chain: bool = False, dynamic_condition: bool = False) -> onnx.ModelProto:
    """x -> [Conv -> Relu -> Conv, if outer_chain] -> t -> If 'branch' (both branches: Conv ->
    Relu -> Conv) -> y. The condition is a constant, or with dynamic_condition a graph input."""
    inits = [_f32("bw1", (5, 4 if outer_chain else 3, 3, 3)), _f32("bw2", (4, 5, 3, 3))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    if dynamic_condition:
        inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    else:
        inits.append(_const("cond", True, np.bool_))
    nodes = []
    if outer_chain:
        inits += [_f32("w1", (6, 3, 3, 3)), _f32("w2", (4, 6, 3, 3))]
        nodes += [
            helper.make_node("Conv", ["x", "w1"], ["u"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["u"], ["a"], name="relu1"),
            helper.make_node("Conv", ["a", "w2"], ["t"], name="conv2", pads=[1, 1, 1, 1]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["x"], ["t"]))
    nodes.append(helper.make_node("If", ["cond"], ["y"], name="branch",
                                  then_branch=_body("then", "then_"), else_branch=_body("else", "else_")))
    return _model(nodes, inits, inputs)


def _refused(model: onnx.ModelProto, tmp_path, capsys) -> str:
    path, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(path))
    assert main([str(path), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("onnx-lbyl: error: "), err
    assert not out.exists()
    return err


@pytest.mark.parametrize("build, found", [
    (qdq_model, "2 DequantizeLinear, 1 QuantizeLinear"),
    (qlinear_model, "2 QLinearConv"),
    (conv_integer_model, "1 ConvInteger"),
])
def test_a_quantized_model_is_refused_with_exit_2(build, found, tmp_path, capsys):
    err = _refused(build(), tmp_path, capsys)
    assert "model is quantized (" in err and found in err
    assert "prune the float model, then quantize" in err


def test_quantized_operators_inside_subgraphs_count_too():
    model = if_model()
    body = model.graph.node[-1].attribute[0].g
    body.node.insert(0, helper.make_node("MatMulInteger", ["t", "t"], ["unused"]))
    assert quantized_ops(model) == {"MatMulInteger": 1}
    with pytest.raises(InputError, match="model is quantized"):
        compress(model, CompressOptions())


def test_layers_only_inside_an_if_are_refused_naming_it(tmp_path, capsys):
    err = _refused(if_model(dynamic_condition=True), tmp_path, capsys)
    assert "no prunable layers outside control flow" in err
    assert "4 Conv/Gemm/MatMul layer(s) are inside If 'branch', whose bodies onnx-lbyl does not prune" in err
    assert "'else_conv1' in If 'branch' (else_branch)" in err
    with pytest.raises(NothingToPruneError, match="If 'branch'"):
        compress(if_model(dynamic_condition=True), CompressOptions())


def test_subgraph_layers_lists_each_with_its_holder():
    assert subgraph_layers(if_model()) == [  # in the order of the If's attributes (sorted by name)
        ("else_conv1", "If 'branch' (else_branch)"), ("else_conv2", "If 'branch' (else_branch)"),
        ("then_conv1", "If 'branch' (then_branch)"), ("then_conv2", "If 'branch' (then_branch)"),
    ]
    # nested: a Loop whose body holds the If; its MatMul reads a weight of the outer graph
    model = if_model()
    if_node = model.graph.node.pop()
    cond_in = helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [])
    cond_out = helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), if_node,
         helper.make_node("MatMul", ["y", "mw"], ["scan_out"], name="loop_matmul")],
        "body", [i, cond_in], [cond_out, helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, None)])
    model.graph.initializer.append(_f32("mw", (8, 8)))
    model.graph.node.append(helper.make_node("Loop", ["", "cond"], ["ys"], name="repeat", body=loop_body))
    found = dict(subgraph_layers(model))
    assert found["then_conv1"] == "Loop 'repeat' (body) > If 'branch' (then_branch)"
    assert found["loop_matmul"] == "Loop 'repeat' (body)"


def test_a_chain_outside_the_if_is_still_pruned():
    result = compress(if_model(outer_chain=True), CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    assert result.report.layers[0].name == "conv1" and result.report.layers[0].channels_after == 3


def test_an_if_on_a_constant_is_folded_and_its_branch_pruned():
    """Canonicalisation inlines the branch a constant condition takes; its layers are then
    ordinary layers of the graph."""
    result = compress(if_model(outer_chain=True), CompressOptions(round_to=1, ratio=0.5))
    assert any("If" in line for line in result.report.canonicalised)
    assert [layer.name for layer in result.report.layers] == ["conv1", "branch_then_conv1", "conv2"]
    assert subgraph_layers(result.model) == []
    # the model as given has layers in the If's bodies: its MACs are unknown, not 0
    assert result.report.macs_before is None and result.report.macs_after > 0
