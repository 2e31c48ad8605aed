"""Channel groups: the analysis, the exact cases of MATH.md §8 for the new constructs (a residual
stream, a depthwise hop, a Concat), and every construct of tests/graphs.py end to end."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphs import BUILDERS
from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.errors import InputError, NothingToPruneError
from onnx_lbyl.groups import analyse
from onnx_lbyl.groups.graph import attach_shapes
from onnx_lbyl.groups.spaces import ChannelSpaces
from onnx_lbyl.validate import run

REFUSED = {"if_subgraph", "quantized_qdq", "quantized_qlinear", "quantized_integer",
           "grouped_conv"}


def test_spaces_cut_and_tie_root_by_root():
    spaces = ChannelSpaces()
    a, b, c = spaces.new(8), spaces.new(4), spaces.new(4)
    assert spaces.unify((a,), (b, c))  # an Add of a tensor with a Concat of two: a is cut at 4
    assert [size for _rep, _off, size in spaces.occurrences((a,))] == [4, 4]
    assert spaces.find(spaces.leaves((a,))[0]) == spaces.find(b)
    assert spaces.find(spaces.leaves((a,))[1]) == spaces.find(c)
    assert not spaces.unify((a,), (b,))  # widths differ: nothing tied
    spaces.fix((c,), "why")
    assert spaces.fixed[spaces.find(c)] == ["why"]


def _model(nodes, inits, c_in=3, out="y", c_out=5, size=8, opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c_in, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", c_out, size, size])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv(name, x, w, b, y, k=3, group=1):
    return helper.make_node("Conv", [x, w, b], [y], name=name, pads=[k // 2] * 4, group=group)


def _proportional(rng, n, d, j=3, k=1, c=2.0):
    """Filters and biases where output channel j is exactly c > 0 times channel k."""
    w, b = rng.standard_normal((n, *d)), rng.standard_normal(n)
    w[j], b[j] = c * w[k], c * b[k]
    return w, b


def _outputs(model, seed=0):
    x = np.random.default_rng(seed).standard_normal((4, 3, 8, 8)).astype(np.float32)
    return run(model, {"x": x})[0]


def _exact(model, group, kept):
    result = compress(model, CompressOptions(round_to=1, ratio=0.0, layer_ratios=((group, 0.25),)))
    layer = next(layer for layer in result.report.layers if layer.name == group)
    assert layer.kind == "group" and layer.channels_after == kept
    assert layer.removed in ([1], [3])  # one of the proportional pair, at no cost
    before, after = _outputs(model), _outputs(result.model)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())


def test_residual_stream_with_a_multiple_is_restored_exactly():
    """A removed stream channel that is 2x a kept one, in every tensor of the stream: the stem and
    the block's last conv produce it, the block's first conv and the head read it."""
    rng = np.random.default_rng(0)
    w_stem, b_stem = _proportional(rng, 4, (3, 3, 3))
    w_b, b_b = _proportional(rng, 4, (4, 3, 3))
    inits = {"w_stem": w_stem, "b_stem": b_stem, "w_a": rng.standard_normal((4, 4, 3, 3)), "b_a": rng.standard_normal(4),
             "w_b": w_b, "b_b": b_b, "w_h": rng.standard_normal((5, 4, 1, 1)), "b_h": rng.standard_normal(5)}
    nodes = [_conv("stem", "x", "w_stem", "b_stem", "u0"), helper.make_node("Relu", ["u0"], ["s0"]),
             _conv("conv_a", "s0", "w_a", "b_a", "ua"), helper.make_node("Relu", ["ua"], ["ra"]),
             _conv("conv_b", "ra", "w_b", "b_b", "ub"), helper.make_node("Add", ["s0", "ub"], ["sum"]),
             helper.make_node("Relu", ["sum"], ["s1"]), _conv("head", "s1", "w_h", "b_h", "y", k=1)]
    model = _model(nodes, inits)
    _exact(model, "stem", 3)


def test_depthwise_hop_with_a_multiple_is_restored_exactly():
    """expand 1x1 -> Relu -> depthwise 3x3 -> Relu -> project: the depthwise filters go with the
    channels, the projection absorbs them."""
    rng = np.random.default_rng(1)
    w_e, b_e = _proportional(rng, 4, (3, 1, 1))
    w_d, b_d = rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4)
    w_d[3], b_d[3] = w_d[1], 2.0 * b_d[1]
    inits = {"w_e": w_e, "b_e": b_e, "w_d": w_d, "b_d": b_d, "w_p": rng.standard_normal((5, 4, 1, 1)),
             "b_p": rng.standard_normal(5)}
    nodes = [_conv("expand", "x", "w_e", "b_e", "u", k=1), helper.make_node("Relu", ["u"], ["a"]),
             _conv("dw", "a", "w_d", "b_d", "v", group=4), helper.make_node("Relu", ["v"], ["d"]),
             _conv("project", "d", "w_p", "b_p", "y", k=1)]
    model = _model(nodes, inits)
    _exact(model, "expand", 3)
    pruned = compress(model, CompressOptions(round_to=1, ratio=0.0, layer_ratios=(("expand", 0.25),))).model
    depthwise = next(n for n in pruned.graph.node if n.name == "dw")
    assert helper.get_attribute_value(next(a for a in depthwise.attribute if a.name == "group")) == 3


def test_concat_branch_with_a_multiple_is_restored_exactly():
    """Two branches joined by a Concat: the second branch's channels sit at offset 4 of the
    consumer's input, where the fold and the slicing must land."""
    rng = np.random.default_rng(2)
    w_b, b_b = _proportional(rng, 4, (3, 3, 3))
    inits = {"w_a": rng.standard_normal((4, 3, 3, 3)), "b_a": rng.standard_normal(4), "w_b": w_b, "b_b": b_b,
             "w_c": rng.standard_normal((5, 8, 3, 3)), "b_c": rng.standard_normal(5)}
    nodes = [_conv("conv_a", "x", "w_a", "b_a", "ua"), helper.make_node("Relu", ["ua"], ["a"]),
             _conv("conv_b", "x", "w_b", "b_b", "ub"), helper.make_node("Relu", ["ub"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["ab"], axis=1), _conv("conv_c", "ab", "w_c", "b_c", "y")]
    model = _model(nodes, inits)
    _exact(model, "conv_b", 3)


def test_resnet20_stream_groups_are_found():
    """The shipped ResNet-20: 9 block-internal chains and the residual streams, cut by the
    option-A shortcuts' channel padding into the stream proper and the padded channels."""
    model = onnx.load("models/resnet20_cifar10.onnx")
    graph = gs.import_onnx(model)
    attach_shapes(graph, model)
    groups = analyse(graph)
    prunable = [g for g in groups if g.prunable]
    assert len(prunable) == 14
    stream = next(g for g in prunable if g.name == "/conv1/Conv")
    assert stream.channels == 16 and len(stream.producers) == 10 and len(stream.reads) == 10
    padded = [g for g in prunable if g.edits]
    assert len(padded) == 4 and all(e.node.op == "Pad" for g in padded for e in g.edits)


@pytest.mark.parametrize("name", sorted(set(BUILDERS) - REFUSED))
def test_every_construct_prunes_and_runs(name):
    """Nothing removed: the same function; 30% removed: a model that runs with the original's
    inputs and output shapes and is narrower."""
    model = BUILDERS[name]()
    same = compress(model, CompressOptions(round_to=1, ratio=0.0))
    assert all(not layer.removed for layer in same.report.layers)
    result = compress(model, CompressOptions(round_to=1, ratio=0.3))
    assert result.report.validation.runtime
    assert result.report.macs_after < result.report.macs_before
    assert [i.name for i in result.model.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in result.model.graph.output] == [o.name for o in model.graph.output]


def test_what_cannot_be_narrowed_is_refused_with_its_reason():
    with pytest.raises(NothingToPruneError, match=r"grouped Conv conv2 \(group=2\)"):
        compress(BUILDERS["grouped_conv"](), CompressOptions(round_to=1, ratio=0.3))


def test_constant_node_weights_are_canonicalised_first():
    result = compress(BUILDERS["constant_weights"](), CompressOptions(round_to=1, ratio=0.3))
    assert any("Constant" in line for line in result.report.canonicalised)
    assert result.report.macs_after < result.report.macs_before


@pytest.mark.parametrize("name", ["quantized_qdq", "quantized_qlinear", "quantized_integer"])
def test_quantized_constructs_are_refused(name):
    with pytest.raises(InputError, match="quantized"):
        compress(BUILDERS[name](), CompressOptions(round_to=1, ratio=0.3))


def _conv_op_conv(middle, inits, opset, c_mid=4, out_size=8):
    """x -> conv1 (c_mid) -> `middle` nodes (from "c1" to "m") -> conv2 (5) -> y."""
    rng = np.random.default_rng(5)
    c_in2 = next((v.shape[1] for k, v in inits.items() if k == "w2"), c_mid)
    base = {"w1": rng.standard_normal((c_mid, 3, 3, 3)), "b1": rng.standard_normal(c_mid),
            "w2": rng.standard_normal((5, c_in2, 3, 3)), "b2": rng.standard_normal(5)}
    nodes = [_conv("conv1", "x", "w1", "b1", "c1"), *middle, _conv("conv2", "m", "w2", "b2", "y")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, out_size, out_size])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.int64 if k.startswith("i_") else np.float32), k)
         for k, v in {**base, **inits}.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _same_as_masked(model):
    """method=prune removes conv1's channels; the original with conv2's columns of those
    channels zeroed computes the same function when every rule is sound."""
    result = compress(model, CompressOptions(round_to=1, ratio=0.5, method="prune"))
    removed = next(layer.removed for layer in result.report.layers if layer.name == "conv1")
    assert removed
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    w2 = next(t for t in masked.graph.initializer if t.name == "w2")
    values = numpy_helper.to_array(w2).copy()
    values[:, removed] = 0
    w2.CopyFrom(numpy_helper.from_array(values, "w2"))
    np.testing.assert_allclose(_outputs(result.model), _outputs(masked), rtol=1e-4, atol=1e-5)
    return result


def test_resize_with_axes_lists_sizes_of_those_axes_only():
    """Opset 18 Resize with axes=[2, 3]: its sizes hold H and W, no channel count to recount
    (the rule used to rewrite sizes[1], W, with the kept channel count)."""
    model = _conv_op_conv([helper.make_node("Relu", ["c1"], ["r1"]),
                           helper.make_node("Resize", ["r1", "", "", "i_sizes"], ["m"], mode="nearest", axes=[2, 3])],
                          {"i_sizes": [16, 16]}, opset=18, out_size=16)
    result = _same_as_masked(model)
    sizes = [numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name.startswith("i_sizes")]
    assert [list(s) for s in sizes] == [[16, 16]]


def test_resize_of_the_channel_axis_keeps_the_channels_whole():
    """scales [1, 2, 1, 1] doubles the channels: not channel-wise (the rule used to pass it on,
    and the pruned model did not run)."""
    model = _conv_op_conv([helper.make_node("Relu", ["c1"], ["r1"]),
                           helper.make_node("Resize", ["r1", "", "f_scales"], ["m"], mode="nearest")],
                          {"f_scales": [1, 2, 1, 1], "w2": np.ones((5, 8, 3, 3))}, opset=13)
    with pytest.raises(NothingToPruneError, match="resizes the channel axis"):
        compress(model, CompressOptions(round_to=1, ratio=0.3))


def test_resize_sizes_that_count_the_channels_are_recounted():
    model = _conv_op_conv([helper.make_node("Relu", ["c1"], ["r1"]),
                           helper.make_node("Resize", ["r1", "", "", "i_sizes"], ["m"], mode="nearest", axes=[1, 3, 2])],
                          {"i_sizes": [4, 16, 16]}, opset=18, out_size=16)
    result = _same_as_masked(model)
    sizes = [numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name.startswith("i_sizes")]
    assert [list(s) for s in sizes] == [[2, 16, 16]]


def _nhwc_softmax(axis):
    return [helper.make_node("Transpose", ["c1"], ["t"], perm=[0, 2, 3, 1]),
            helper.make_node("Softmax", ["t"], ["s"], axis=axis),
            helper.make_node("Transpose", ["s"], ["m"], perm=[0, 3, 1, 2])]


@pytest.mark.parametrize("opset", [11, 12])
def test_softmax_before_opset_13_normalises_from_its_axis_on(opset):
    """Softmax-11 flattens at `axis` (default 1) and normalises over every axis from there:
    NCHW's C, H and W by default; W and C of NHWC at axis 2. Pruning the channels changed every
    output (the rule took the default as -1 and only the axis itself as normalised)."""
    default = _conv_op_conv([helper.make_node("Softmax", ["c1"], ["m"])], {}, opset=opset)
    with pytest.raises(NothingToPruneError, match="normalises over the channels"):
        compress(default, CompressOptions(round_to=1, ratio=0.3))
    with pytest.raises(NothingToPruneError, match="normalises over the channels"):
        compress(_conv_op_conv(_nhwc_softmax(2), {}, opset=opset), CompressOptions(round_to=1, ratio=0.3))
    _same_as_masked(_conv_op_conv([helper.make_node("Softmax", ["c1"], ["m"], axis=2)], {}, opset=opset))  # H, W


def test_softmax_from_opset_13_normalises_over_its_axis_alone():
    _same_as_masked(_conv_op_conv(_nhwc_softmax(2), {}, opset=13))  # W of NHWC
    with pytest.raises(NothingToPruneError, match="normalises over the channels"):
        compress(_conv_op_conv([helper.make_node("Softmax", ["c1"], ["m"], axis=1)], {}, opset=13),
                 CompressOptions(round_to=1, ratio=0.3))
