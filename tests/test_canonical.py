"""canonicalise(): one small model per pass, built here. Every test checks the structure after
canonicalisation, that onnxruntime gives the same outputs before and after, that the output is
deterministic (byte-identical on a second run), that the input model is untouched and that the
graph's inputs, outputs, opset and metadata are kept."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_lbyl.canonical import (cancel_transposes, canonicalise, fold_bias_add, fold_channel_scale,
                                 reshape_to_flatten)

RNG = np.random.default_rng(0)
IR = {11: 6, 13: 7, 17: 8, 21: 10}


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def const(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name))


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def model(nodes, inputs, outputs, inits=(), opset=17, metadata=None):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR.get(opset, 8))
    for key, value in (metadata or {}).items():
        m.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(m, full_check=True)
    return m


def ops(m):
    return collections.Counter(n.op_type for n in m.graph.node)


def run(m, feeds):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def feeds_for(m, batch=2):
    inits = {t.name for t in m.graph.initializer}
    feeds = {}
    for v in m.graph.input:
        if v.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else batch for d in v.type.tensor_type.shape.dim]
        feeds[v.name] = RNG.standard_normal(dims).astype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
    return feeds


def canon(m, tol=1e-5):
    """canonicalise(m) with the checks every test wants; returns (canonical model, log)."""
    before = m.SerializeToString()
    out, log = canonicalise(m)
    assert m.SerializeToString() == before, "the input model was modified"
    again, log2 = canonicalise(onnx.load_from_string(before))
    assert out.SerializeToString() == again.SerializeToString() and log == log2, "not deterministic"
    onnx.checker.check_model(out, full_check=True)
    assert [v.SerializeToString() for v in out.graph.input] == [v.SerializeToString() for v in m.graph.input]
    assert [v.SerializeToString() for v in out.graph.output] == [v.SerializeToString() for v in m.graph.output]
    assert list(out.opset_import) == list(m.opset_import)
    assert list(out.metadata_props) == list(m.metadata_props)
    assert not {n.domain for n in out.graph.node} - {""}, "non-standard ops"
    feeds = feeds_for(m)
    for a, b in zip(run(m, feeds), run(out, feeds)):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    return out, log


def conv_node(x, w, y, b=None, **attrs):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], pads=[1, 1, 1, 1], **attrs)


# ------------------------------------------------------------------ 1-3: generic (onnxscript)

def test_constant_nodes_become_initializers():
    """Paddle2ONNX style: weights, a Reshape target and Clip bounds as Constant nodes (value,
    value_float, value_ints); all become initializers, the Reshape of the bias is folded."""
    nodes = [
        const("w", f32(4, 3, 3, 3)),
        helper.make_node("Constant", [], ["lo"], value_float=0.0),
        helper.make_node("Constant", [], ["hi"], value_float=6.0),
        helper.make_node("Constant", [], ["bshape"], value_ints=[1, 4, 1, 1]),
        const("b", f32(4)),
        conv_node("x", "w", "c"),
        helper.make_node("Reshape", ["b", "bshape"], ["b4"]),
        helper.make_node("Add", ["c", "b4"], ["a"]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["y"]),
    ]
    m = model(nodes, [vi("x", ["N", 3, 6, 6])], [vi("y", ["N", 4, 6, 6])])
    out, log = canon(m)
    assert ops(out) == {"Conv": 1, "Clip": 1}
    conv = out.graph.node[0]
    inits = {t.name for t in out.graph.initializer}
    assert conv.input[1] in inits and conv.input[2] in inits
    assert any("Constant nodes became initializers" in line for line in log)
    assert any("folded into its bias" in line for line in log)


def test_constant_names_stay_unique():
    """Two Constant nodes in a graph that already has an initializer: every name stays unique."""
    nodes = [const("k", np.array(2.0, np.float32)), helper.make_node("Mul", ["x", "k"], ["m"]),
             const("k2", np.array(3.0, np.float32)), helper.make_node("Add", ["m", "k2"], ["a"]),
             helper.make_node("Mul", ["a", "k3"], ["y"])]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [init("k3", np.array(0.5, np.float32))])
    out, _ = canon(m)
    names = [t.name for t in out.graph.initializer]
    assert len(names) == len(set(names)) and ops(out)["Constant"] == 0


def test_identity_into_graph_output_keeps_the_name():
    nodes = [conv_node("x", "w", "c"), helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Identity", ["r"], ["y"])]
    m = model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 4, 5, 5])], [init("w", f32(4, 3, 3, 3))])
    out, log = canon(m)
    assert ops(out) == {"Conv": 1, "Relu": 1}
    assert out.graph.node[-1].output[0] == "y"


def test_identity_between_graph_input_and_output_stays():
    """Two names for one tensor (a graph input and a graph output): the Identity is needed."""
    m = model([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["z"])],
              [vi("x", [2, 3])], [vi("y", [2, 3]), vi("z", [2, 3])])
    out, log = canon(m)
    assert ops(out) == {"Identity": 1, "Relu": 1} and log == []


def test_noop_cast_dropout_transpose_reshape_go():
    nodes = [conv_node("x", "w", "c"),
             helper.make_node("Cast", ["c"], ["k"], to=TensorProto.FLOAT),
             helper.make_node("Dropout", ["k"], ["d"]),
             helper.make_node("Transpose", ["d"], ["t"], perm=[0, 1, 2, 3]),
             helper.make_node("Reshape", ["t", "same"], ["s"]),
             helper.make_node("Cast", ["s"], ["y"], to=TensorProto.INT64)]  # a real Cast stays
    m = model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 4, 5, 5], TensorProto.INT64)],
              [init("w", f32(4, 3, 3, 3)), init("same", np.array([1, 4, 5, 5], np.int64))])
    out, log = canon(m)
    assert ops(out) == {"Conv": 1, "Cast": 1}
    cast = out.graph.node[-1]
    assert cast.output[0] == "y" and cast.attribute[0].i == TensorProto.INT64


def test_dropout_in_training_mode_stays():
    nodes = [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"])]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])],
              [init("ratio", np.array(0.5, np.float32)), init("training", np.array(True))], opset=13)
    out, _ = canonicalise(m)
    assert ops(out) == {"Dropout": 1}


def test_shape_of_a_static_tensor_folds():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Reshape", ["r", "s"], ["y"])]
    out, _ = canon(model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])]))
    assert ops(out) == {"Relu": 1}


# ------------------------------------------------------------------ 4: bias Add

@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (4, 1, 1), ()])
@pytest.mark.parametrize("has_bias", [False, True])
def test_conv_bias_add_folds(shape, has_bias):
    inits = [init("w", f32(4, 3, 3, 3)), init("c", f32(*shape))]
    if has_bias:
        inits.append(init("b", f32(4)))
    nodes = [conv_node("x", "w", "u", "b" if has_bias else None), helper.make_node("Add", ["c", "u"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    m = model(nodes, [vi("x", ["N", 3, 5, 5])], [vi("y", ["N", 4, 5, 5])], inits)
    out, log = canon(m)
    assert ops(out) == {"Conv": 1, "Relu": 1}
    conv = out.graph.node[0]
    assert len(conv.input) == 3 and conv.output[0] == "a"
    assert log == ["1 per-channel Add/Sub after a Conv or Gemm folded into its bias"]


def test_conv_bias_add_left_when_not_channelwise_or_shared():
    """[C] on a 4-D Conv output broadcasts along the width, not the channels (here both are 4);
    an Add whose Conv output has another reader stays too."""
    nodes = [conv_node("x", "w", "u"), helper.make_node("Add", ["u", "per_width"], ["a"]),
             conv_node("x", "w2", "v"), helper.make_node("Add", ["v", "c"], ["p"]),
             helper.make_node("Mul", ["p", "v"], ["q"]), helper.make_node("Add", ["a", "q"], ["y"])]
    inits = [init("w", f32(4, 3, 3, 3)), init("w2", f32(4, 3, 3, 3)), init("per_width", f32(4)),
             init("c", f32(1, 4, 1, 1))]
    m = model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 4, 4, 4])], inits)
    out, log = canon(m)
    assert ops(out)["Add"] == 3 and log == []


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [False, True])
def test_gemm_bias_add_folds(trans_b, with_c):
    w = f32(5, 8) if trans_b else f32(8, 5)
    inits = [init("w", w), init("c", f32(5))] + ([init("gc", f32(1, 5))] if with_c else [])
    gemm = helper.make_node("Gemm", ["x", "w"] + (["gc"] if with_c else []), ["g"], transB=trans_b, beta=0.5)
    nodes = [gemm, helper.make_node("Add", ["g", "c"], ["y"])]
    m = model(nodes, [vi("x", ["N", 8])], [vi("y", ["N", 5])], inits)
    out, log = canon(m)
    assert ops(out) == {"Gemm": 1} and len(out.graph.node[0].input) == 3


# ------------------------------------------------------------------ 5: BN as arithmetic

def test_mul_add_after_conv_folds_into_weights_and_bias():
    nodes = [conv_node("x", "w", "u"), helper.make_node("Mul", ["u", "s"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    inits = [init("w", f32(4, 3, 3, 3)), init("s", RNG.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32)),
             init("t", f32(1, 4, 1, 1))]
    m = model(nodes, [vi("x", ["N", 3, 5, 5])], [vi("y", ["N", 4, 5, 5])], inits)
    out, log = canon(m)
    assert ops(out) == {"Conv": 1, "Relu": 1}
    assert "1 per-channel Mul/Div after a Conv folded into its weights" in log


def test_sub_mul_add_after_conv_with_bias_folds():
    nodes = [conv_node("x", "w", "u", "b"), helper.make_node("Sub", ["u", "mean"], ["s"]),
             helper.make_node("Mul", ["inv_std", "s"], ["m"]), helper.make_node("Add", ["m", "beta"], ["y"])]
    inits = [init("w", f32(4, 3, 3, 3)), init("b", f32(4)), init("mean", f32(4, 1, 1)),
             init("inv_std", RNG.uniform(0.5, 2, (4, 1, 1)).astype(np.float32)), init("beta", f32(4, 1, 1))]
    m = model(nodes, [vi("x", ["N", 3, 5, 5])], [vi("y", ["N", 4, 5, 5])], inits)
    out, log = canon(m)
    assert ops(out) == {"Conv": 1} and out.graph.node[0].output[0] == "y"


def test_div_after_depthwise_conv_folds():
    nodes = [helper.make_node("Conv", ["x", "w"], ["u"], group=3, pads=[1] * 4),
             helper.make_node("Div", ["u", "d"], ["y"])]
    inits = [init("w", f32(3, 1, 3, 3)), init("d", RNG.uniform(0.5, 2, (1, 3, 1, 1)).astype(np.float32))]
    out, _ = canon(model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 3, 5, 5])], inits))
    assert ops(out) == {"Conv": 1}


def test_arithmetic_after_anything_but_a_conv_stays():
    nodes = [conv_node("x", "w", "u"), helper.make_node("Relu", ["u"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["y"])]
    inits = [init("w", f32(4, 3, 3, 3)), init("s", f32(1, 4, 1, 1)), init("t", f32(1, 4, 1, 1))]
    out, log = canon(model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 4, 5, 5])], inits))
    assert ops(out) == {"Conv": 1, "Relu": 1, "Mul": 1, "Add": 1} and log == []


def test_shared_weight_is_not_scaled():
    """Two Convs share one weight: scaling it for one would change the other."""
    nodes = [conv_node("x", "w", "u"), helper.make_node("Mul", ["u", "s"], ["a"]),
             conv_node("x", "w", "v"), helper.make_node("Add", ["a", "v"], ["y"])]
    inits = [init("w", f32(4, 3, 3, 3)), init("s", f32(1, 4, 1, 1))]
    out, _ = canon(model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 4, 5, 5])], inits))
    assert ops(out)["Mul"] == 1


def test_batchnorm_node_survives():
    bn = [init(n, v) for n, v in [("g", RNG.uniform(0.5, 2, 4).astype(np.float32)), ("be", f32(4)),
                                  ("mu", f32(4)), ("var", RNG.uniform(0.5, 2, 4).astype(np.float32))]]
    nodes = [conv_node("x", "w", "u"), helper.make_node("BatchNormalization", ["u", "g", "be", "mu", "var"], ["z"]),
             helper.make_node("Relu", ["z"], ["r"]), conv_node("r", "w2", "y")]
    m = model(nodes, [vi("x", ["N", 3, 5, 5])], [vi("y", ["N", 2, 5, 5])],
              [init("w", f32(4, 3, 3, 3)), init("w2", f32(2, 4, 3, 3))] + bn, metadata={"k": "v"})
    out, log = canon(m)
    assert out.SerializeToString() == m.SerializeToString() and log == []  # nothing to do: an exact copy
    assert ops(out)["BatchNormalization"] == 1


# ------------------------------------------------------------------ 6: NHWC layout

def nhwc_model(residual=False, swish=False):
    """tf2onnx style: NHWC in and out, Transpose around each Conv, BN as Mul/Add in NHWC."""
    to_nchw, to_nhwc = dict(perm=[0, 3, 1, 2]), dict(perm=[0, 2, 3, 1])
    nodes = [helper.make_node("Transpose", ["x"], ["t0"], **to_nchw), conv_node("t0", "w0", "c0"),
             helper.make_node("Transpose", ["c0"], ["h0"], **to_nhwc),
             helper.make_node("Mul", ["h0", "s0"], ["m0"]), helper.make_node("Add", ["m0", "b0"], ["a0"])]
    if swish:
        nodes += [helper.make_node("Sigmoid", ["a0"], ["g0"]), helper.make_node("Mul", ["a0", "g0"], ["r0"])]
    else:
        nodes.append(helper.make_node("Relu", ["a0"], ["r0"]))
    nodes += [helper.make_node("Transpose", ["r0"], ["t1"], **to_nchw), conv_node("t1", "w1", "c1"),
              helper.make_node("Transpose", ["c1"], ["h1"], **to_nhwc), helper.make_node("Add", ["h1", "b1"], ["a1"])]
    last = "a1"
    if residual:
        nodes.append(helper.make_node("Add", ["a1", "r0"], ["sum"]))
        last = "sum"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    inits = [init("w0", f32(4, 3, 3, 3)), init("s0", RNG.uniform(0.5, 2, 4).astype(np.float32)), init("b0", f32(4)),
             init("w1", f32(4, 4, 3, 3)), init("b1", f32(4))]
    return model(nodes, [vi("x", ["N", 5, 5, 3])], [vi("y", ["N", 5, 5, 4])], inits, opset=13)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("swish", [False, True])
def test_nhwc_transposes_cancel(residual, swish):
    out, log = canon(nhwc_model(residual, swish))
    counts = ops(out)
    assert counts["Transpose"] == 2  # the graph input's and the graph output's layout are kept
    assert counts["Conv"] == 2 and counts["Mul"] == (1 if swish else 0)
    assert counts["Add"] == (1 if residual else 0)  # BN shift and conv bias folded; the residual stays
    first, last = out.graph.node[0], out.graph.node[-1]
    assert first.op_type == "Transpose" and first.input[0] == "x"
    assert last.op_type == "Transpose" and last.output[0] == "y"
    assert any("layout Transposes cancelled" in line for line in log)


def test_transpose_pair_around_non_elementwise_op_stays():
    """A Softmax over the last axis is not layout-agnostic: nothing moves across it."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), helper.make_node("Softmax", ["t"], ["s"], axis=-1),
             helper.make_node("Transpose", ["s"], ["y"], perm=[0, 3, 1, 2])]
    m = model(nodes, [vi("x", [1, 3, 4, 5])], [vi("y", [1, 3, 4, 5])], opset=13)
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(m)
    assert cancel_transposes(model_copy) == (0, 0)
    out, log = canon(m)
    assert ops(out)["Transpose"] == 2 and log == []


# ------------------------------------------------------------------ 7: flatten, old IR, opsets

def test_pytorch_dynamic_flatten_becomes_flatten():
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape, dynamic batch."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Shape", ["p"], ["sh"]),
             helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0), helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["p", "target"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    inits = [init("zero", np.array(0, np.int64)), init("axes", np.array([0], np.int64)),
             init("minus1", np.array([-1], np.int64)), init("w", f32(5, 4)), init("b", f32(5))]
    out, log = canon(model(nodes, [vi("x", ["batch", 4, 3, 3])], [vi("y", ["batch", 5])], inits))
    assert ops(out) == {"GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}
    assert log == ["1 flattening Reshapes became Flatten(axis=1)"]


@pytest.mark.parametrize("target,flattens", [([-1, 12], True), ([0, -1], True), ([1, 12], True),
                                             ([1, -1], True), ([1, 3, 4], False), ([-1, 4], False)])
def test_constant_reshape_to_flatten(target, flattens):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "target"], ["y"])]
    out_shape = [1, 12] if len(target) == 2 and target[1] != 4 else ([3, 4] if target == [-1, 4] else [1, 3, 4])
    m = model(nodes, [vi("x", [1, 3, 2, 2])], [vi("y", out_shape)], [init("target", np.array(target, np.int64))])
    work = onnx.ModelProto()
    work.CopyFrom(m)
    assert reshape_to_flatten(work) == int(flattens)
    canon(m)


def test_initializer_listed_as_graph_input_is_left_alone():
    """Old IR: w is a default the caller may override; it stays an input, unfolded, and the bias
    Add whose constant is overridable is not folded either."""
    nodes = [helper.make_node("Reshape", ["w", "w_shape"], ["w4"]), helper.make_node("Conv", ["x", "w4"], ["c"]),
             helper.make_node("Add", ["c", "bias"], ["y"])]
    inits = [init("w", f32(12)), init("w_shape", np.array([4, 3, 1, 1], np.int64)), init("bias", f32(1, 4, 1, 1))]
    m = model(nodes, [vi("x", [1, 3, 4, 4]), vi("w", [12]), vi("bias", [1, 4, 1, 1])], [vi("y", [1, 4, 4, 4])],
              inits, opset=11)
    out, log = canon(m)
    assert ops(out) == {"Reshape": 1, "Conv": 1, "Add": 1} and log == []
    assert [v.name for v in out.graph.input] == ["x", "w", "bias"]


@pytest.mark.parametrize("opset", [11, 13, 17, 21])
def test_opsets(opset):
    """The Paddle-style quirks (Constant weights, Reshaped bias Add, Identity output) on each opset."""
    nodes = [const("w", f32(4, 3, 3, 3)), const("b", f32(4)), const("bshape", np.array([1, 4, 1, 1], np.int64)),
             conv_node("x", "w", "c"), helper.make_node("Reshape", ["b", "bshape"], ["b4"]),
             helper.make_node("Add", ["c", "b4"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Identity", ["r"], ["y"])]
    m = model(nodes, [vi("x", [-1, 3, 5, 5])], [vi("y", [-1, 4, 5, 5])], opset=opset, metadata={"a": "1", "b": "2"})
    out, _ = canon(m)
    assert ops(out) == {"Conv": 1, "Relu": 1}
    assert out.opset_import[0].version == opset


def test_fp16_conv_scale_and_bias():
    w = f32(4, 3, 3, 3).astype(np.float16)
    nodes = [conv_node("x", "w", "u"), helper.make_node("Mul", ["u", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["y"])]
    inits = [init("w", w), init("s", RNG.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float16)),
             init("t", f32(1, 4, 1, 1).astype(np.float16))]
    m = model(nodes, [vi("x", [1, 3, 5, 5], TensorProto.FLOAT16)], [vi("y", [1, 4, 5, 5], TensorProto.FLOAT16)], inits)
    out, _ = canon(m, tol=2e-2)
    assert ops(out) == {"Conv": 1}
    assert {t.data_type for t in out.graph.initializer} == {TensorProto.FLOAT16}


def test_passes_run_alone():
    """Each fold is a function of its own on a ModelProto (edited in place, count returned)."""
    nodes = [conv_node("x", "w", "u"), helper.make_node("Mul", ["u", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["y"])]
    inits = [init("w", f32(4, 3, 3, 3)), init("s", f32(1, 4, 1, 1)), init("t", f32(1, 4, 1, 1))]
    m = model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 4, 5, 5])], inits)
    assert fold_bias_add(m) == 0  # the Add follows a Mul, not the Conv
    assert fold_channel_scale(m) == 1 and fold_bias_add(m) == 1
    assert ops(m) == {"Conv": 1}
    onnx.checker.check_model(m, full_check=True)


def test_transpose_pair_into_graph_output_cancels():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Mul", ["r", "s"], ["m"]), helper.make_node("Transpose", ["m"], ["y"], perm=[0, 3, 1, 2])]
    m = model(nodes, [vi("x", [1, 3, 4, 5])], [vi("y", [1, 3, 4, 5])], [init("s", f32(3))], opset=13)
    out, _ = canon(m)
    assert ops(out) == {"Relu": 1, "Mul": 1} and out.graph.node[-1].output[0] == "y"
    scale = next(t for t in out.graph.initializer if t.name == out.graph.node[-1].input[1])
    assert list(scale.dims) == [1, 3, 1, 1]  # the NHWC [C] constant, permuted to NCHW


def test_same_output_in_another_process():
    """Deterministic across processes too (no dependence on string hashing)."""
    import subprocess
    import sys

    m = nhwc_model(residual=True, swish=True)
    here, _ = canonicalise(m)
    script = ("import sys, onnx; from onnx_lbyl.canonical import canonicalise; "
              "sys.stdout.buffer.write(canonicalise(onnx.load_from_string(sys.stdin.buffer.read()))[0].SerializeToString())")
    result = subprocess.run([sys.executable, "-c", script], input=m.SerializeToString(), capture_output=True,
                            env={**__import__("os").environ, "PYTHONHASHSEED": "12345"}, check=True)
    assert result.stdout == here.SerializeToString()


@pytest.mark.parametrize("to_output", [False, True])
def test_flatten_of_a_2d_tensor_goes(to_output):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["f"])]
    if to_output:
        nodes[-1].output[0] = "y"
    else:
        nodes.append(helper.make_node("Gemm", ["f", "w"], ["y"]))
    m = model(nodes, [vi("x", ["N", 3])], [vi("y", ["N", 3 if to_output else 2])], [init("w", f32(3, 2))])
    out, log = canon(m)
    assert ops(out)["Flatten"] == 0 and log == ["1 Flatten of an already 2-D tensor removed"]
