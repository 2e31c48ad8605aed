"""Chains beyond Conv->BN->Relu->Conv (MATH.md §7): MLPs, pooling, flattening into a
classifier, zero padding, bottlenecks; each found, pruned, run, and exact where the math is."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper

from builders import run
from onnx_lbyl import CompressOptions, NothingToPruneError, compress
from onnx_lbyl.graph.chains import find_chains

EXACT = CompressOptions(round_to=1, ratio=0.25, scope="chains", method="lbyl", lambda1=1.0, lambda2=0.0)


def text_model(text: str, weights: dict[str, np.ndarray], dtype: type = np.float32) -> onnx.ModelProto:
    """A model from ONNX text, with its initializers given as arrays."""
    model = onnx.parser.parse_model(text)
    for name, array in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(array, dtype), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def with_multiple(weight: np.ndarray, axis: int, bias: np.ndarray | None = None, c: float = 0.5):
    """Make output channel 3 (along `axis`) c times channel 0, with the smallest norm, so that
    ratio 0.25 of four channels removes exactly it and LBYL can restore it exactly."""
    w = np.moveaxis(np.array(weight, dtype=np.float64), axis, 0)
    w *= 2.0 / np.linalg.norm(w.reshape(w.shape[0], -1), axis=1).reshape(-1, *([1] * (w.ndim - 1)))
    w[3] = c * w[0]
    if bias is not None:
        bias = np.array(bias, dtype=np.float64)
        bias[3] = c * bias[0]
    return np.moveaxis(w, 0, axis), bias


def assert_exact(model: onnx.ModelProto, x: np.ndarray, removed: list[int] = [3]) -> None:
    result = compress(model, EXACT)
    assert [layer.removed for layer in result.report.layers] == [removed]
    original, pruned = run(model, x)[0], run(result.model, x)[0]
    np.testing.assert_allclose(pruned, original, rtol=1e-4, atol=1e-4)
    plain = run(compress(model, CompressOptions(round_to=1, ratio=0.25, scope="chains", method="prune")).model, x)[0]
    assert not np.allclose(plain, original, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_relu_gemm_mlp_is_exact(trans_b):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 6) if trans_b else (6, 4))
    w1, b1 = with_multiple(w1, 0 if trans_b else 1, rng.normal(0.5, 0.1, 4))
    w2 = rng.standard_normal((3, 4) if trans_b else (4, 3))
    model = text_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        mlp (float[N, 6] x) => (float[N, 3] y) {{
            h = Gemm <transB = {trans_b}> (x, w1, b1)
            a = Relu (h)
            y = Gemm <transB = {trans_b}> (a, w2, b2)
        }}""", {"w1": w1, "b1": b1, "w2": w2, "b2": rng.standard_normal(3)})
    assert_exact(model, rng.standard_normal((16, 6)))


def test_matmul_add_relu_matmul_is_exact():
    rng = np.random.default_rng(1)
    w1, b1 = with_multiple(rng.standard_normal((6, 4)), 1, rng.normal(0.5, 0.1, 4))
    model = text_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        mlp (float[N, 6] x) => (float[N, 3] y) {
            m = MatMul (x, w1)
            h = Add (m, b1)
            a = Relu (h)
            y = MatMul (a, w2)
        }""", {"w1": w1, "b1": b1, "w2": rng.standard_normal((4, 3))})
    assert_exact(model, rng.standard_normal((16, 6)))


@pytest.mark.parametrize("pool", ["AveragePool <kernel_shape = [2, 2], strides = [2, 2]>", "GlobalAveragePool"])
def test_conv_pool_flatten_gemm_classifier_is_exact(pool):
    rng = np.random.default_rng(2)
    w1, b1 = with_multiple(rng.standard_normal((4, 3, 3, 3)), 0, rng.normal(0.5, 0.1, 4))
    block = 9 if pool.startswith("AveragePool") else 1
    model = text_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 6, 6] x) => (float[N, 5] y) {{
            c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
            a = Relu (c)
            p = {pool} (a)
            f = Flatten <axis = 1> (p)
            y = Gemm <transB = 1> (f, w2, b2)
        }}""", {"w1": w1, "b1": b1, "w2": rng.standard_normal((5, 4 * block)), "b2": rng.standard_normal(5)})
    assert_exact(model, rng.standard_normal((2, 3, 6, 6)))


@pytest.mark.parametrize("between", [
    "Identity (a)",
    "Dropout (a)",
    "Pad <mode = \"constant\"> (a, pads)",
    "AveragePool <kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [1, 1]> (a)",
])
def test_channelwise_ops_between_relu_and_conv_keep_it_exact(between):
    rng = np.random.default_rng(3)
    w1, b1 = with_multiple(rng.standard_normal((4, 3, 3, 3)), 0, rng.normal(0.5, 0.1, 4))
    model = text_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 6, 6] x) => (float[N, 5, 6, 6] y) {{
            pads = Constant <value = int64[8] {{0, 0, 1, 1, 0, 0, 1, 1}}> ()
            c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
            a = Relu (c)
            m = {between}
            y = Conv <pads = [{0 if 'Pad' in between else 1}, {0 if 'Pad' in between else 1}, {0 if 'Pad' in between else 1}, {0 if 'Pad' in between else 1}]> (m, w2)
        }}""", {"w1": w1, "b1": b1, "w2": rng.standard_normal((5, 4, 3, 3))})
    assert_exact(model, rng.standard_normal((2, 3, 6, 6)))


MAXPOOL_NET = """
    <ir_version: 8, opset_import: ["" : 17]>
    vgg (float[N, 3, 8, 8] x) => (float[N, 5, 4, 4] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w1)
        a = Relu (c)
        p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (a)
        y = Conv <pads = [1, 1, 1, 1]> (p, w2)
    }"""


def test_maxpool_is_skipped_unless_allowed_and_then_labelled_approximate():
    rng = np.random.default_rng(4)
    model = text_model(MAXPOOL_NET, {"w1": rng.standard_normal((4, 3, 3, 3)), "w2": rng.standard_normal((5, 4, 3, 3))})
    with pytest.raises(NothingToPruneError, match="MaxPool, which does not commute with sums"):
        compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    graph = gs.import_onnx(model)
    chains, _ = find_chains(graph, set(), allow=frozenset({"maxpool"}))
    assert len(chains) == 1 and chains[0].approximations == ("maxpool",)


def test_relu6_is_skipped_unless_allowed():
    rng = np.random.default_rng(5)
    model = text_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 6, 6] x) => (float[N, 5, 6, 6] y) {
            lo = Constant <value = float {0.0}> ()
            hi = Constant <value = float {6.0}> ()
            c = Conv <pads = [1, 1, 1, 1]> (x, w1)
            a = Clip (c, lo, hi)
            y = Conv <pads = [1, 1, 1, 1]> (a, w2)
        }""", {"w1": rng.standard_normal((4, 3, 3, 3)), "w2": rng.standard_normal((5, 4, 3, 3))})
    with pytest.raises(NothingToPruneError, match="Clip/ReLU6, which is not positively homogeneous"):
        compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    chains, _ = find_chains(gs.import_onnx(model), set(), allow=frozenset({"relu6"}))
    assert len(chains) == 1 and chains[0].approximations == ("relu6",)


def test_bottleneck_prunes_both_internal_convs_in_one_run():
    """1x1 -> 3x3 -> 1x1 with a residual: the 3x3 conv is consumer of the first chain and
    producer of the second, so its compensation is computed on its already-compensated weight."""
    rng = np.random.default_rng(6)
    bn = lambda n: {f"{k}": v for k, v in zip(("g", "b", "m", "v"), (rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)))}  # noqa: E731
    weights = {"wa": rng.standard_normal((8, 16, 1, 1)), "wb": rng.standard_normal((8, 8, 3, 3)),
               "wc": rng.standard_normal((16, 8, 1, 1))}
    for prefix, n in (("a", 8), ("b", 8)):
        weights.update({f"{prefix}{k}": v for k, v in bn(n).items()})
    model = text_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        block (float[N, 16, 6, 6] x) => (float[N, 16, 6, 6] y) {
            ua = Conv (x, wa)
            za = BatchNormalization (ua, ag, ab, am, av)
            ra = Relu (za)
            ub = Conv <pads = [1, 1, 1, 1]> (ra, wb)
            zb = BatchNormalization (ub, bg, bb, bm, bv)
            rb = Relu (zb)
            uc = Conv (rb, wc)
            s = Add (uc, x)
            y = Relu (s)
        }""", weights)
    result = compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    assert [(layer.name, layer.channels_after) for layer in result.report.layers] == [("wa", 4), ("wb", 4)]
    widths = {t.name: list(t.dims) for t in result.model.graph.initializer}
    assert widths["wa"] == [4, 16, 1, 1] and widths["wb"] == [4, 4, 3, 3] and widths["wc"] == [16, 4, 1, 1]
    assert run(result.model, rng.standard_normal((2, 16, 6, 6)))[0].shape == (2, 16, 6, 6)


# 26 is the newest opset onnxruntime 1.31 runs; onnx 1.23 defines 28, which onnxruntime
# refuses (the tool then says the original model does not run).
@pytest.mark.parametrize("opset", [11, 13, 17, 21, 26])
def test_opsets_from_11_to_the_newest_onnxruntime_runs(opset):
    rng = np.random.default_rng(7)
    w1, b1 = with_multiple(rng.standard_normal((4, 3, 3, 3)), 0, rng.normal(0.5, 0.1, 4))
    model = text_model(f"""
        <ir_version: 7, opset_import: ["" : {opset}]>
        net (float[N, 3, 6, 6] x) => (float[N, 5, 6, 6] y) {{
            c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
            a = Relu (c)
            y = Conv <pads = [1, 1, 1, 1]> (a, w2)
        }}""", {"w1": w1, "b1": b1, "w2": rng.standard_normal((5, 4, 3, 3))})
    assert_exact(model, rng.standard_normal((2, 3, 6, 6)))


def test_keras_style_nhwc_model_with_channels_last_flatten_is_exact():
    """tf2onnx: NHWC input transposed to NCHW, and transposed back before Flatten -> MatMul, so a
    channel's features are every C-th input of the Dense layer."""
    rng = np.random.default_rng(8)
    w1, b1 = with_multiple(rng.standard_normal((4, 3, 3, 3)), 0, rng.normal(0.5, 0.1, 4))
    model = text_model("""
        <ir_version: 8, opset_import: ["" : 13]>
        keras (float[N, 6, 6, 3] x) => (float[N, 5] y) {
            shape = Constant <value = int64[2] {0, -1}> ()
            t = Transpose <perm = [0, 3, 1, 2]> (x)
            c = Conv <pads = [1, 1, 1, 1]> (t, w1, b1)
            a = Relu (c)
            back = Transpose <perm = [0, 2, 3, 1]> (a)
            f = Reshape (back, shape)
            m = MatMul (f, w2)
            y = Add (m, b2)
        }""", {"w1": w1, "b1": b1, "w2": rng.standard_normal((36 * 4, 5)), "b2": rng.standard_normal(5)})
    assert_exact(model, rng.standard_normal((2, 6, 6, 3)))


def test_depthwise_consumer_is_skipped_with_a_reason():
    rng = np.random.default_rng(9)
    model = text_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        mbv2 (float[N, 4, 6, 6] x) => (float[N, 4, 6, 6] y) {
            e = Conv (x, w_expand)
            a = Relu (e)
            d = Conv <group = 8, pads = [1, 1, 1, 1]> (a, w_dw)
            b = Relu (d)
            y = Conv (b, w_project)
        }""", {"w_expand": rng.standard_normal((8, 4, 1, 1)), "w_dw": rng.standard_normal((8, 1, 3, 3)),
               "w_project": rng.standard_normal((4, 8, 1, 1))})
    with pytest.raises(NothingToPruneError, match="grouped/depthwise"):
        compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    _, skipped = find_chains(gs.import_onnx(model), set())
    reasons = {s.node: s.reason for s in skipped}
    assert "expand/depthwise/project" in reasons["w_expand"]
    assert "grouped/depthwise Conv (group=8)" in reasons["w_dw"]


def test_fp16_initializers_are_solved_in_float64_and_written_back_in_fp16():
    rng = np.random.default_rng(10)
    w1, b1 = with_multiple(rng.standard_normal((4, 3, 3, 3)), 0, rng.normal(0.5, 0.1, 4))
    model = text_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        half (float16[N, 3, 6, 6] x) => (float16[N, 5, 6, 6] y) {
            c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
            a = Relu (c)
            y = Conv <pads = [1, 1, 1, 1]> (a, w2)
        }""", {"w1": w1, "b1": b1, "w2": rng.standard_normal((5, 4, 3, 3))}, np.float16)
    result = compress(model, EXACT)
    assert {t.data_type for t in result.model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float16)
    original, pruned = (run(m, x, np.float16)[0].astype(np.float32) for m in (model, result.model))
    np.testing.assert_allclose(pruned, original, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bias", [True, False])
def test_mean_compensation_reaches_a_matmul_consumer_with_or_without_its_add(bias):
    rng = np.random.default_rng(11)
    add = "y = Add (m, b2)" if bias else "y = Identity (m)"
    model = text_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        mlp (float[N, 6] x) => (float[N, 3] y) {{
            h = Gemm <transB = 1> (x, w1, b1)
            a = Relu (h)
            m = MatMul (a, w2)
            {add}
        }}""", {"w1": rng.standard_normal((8, 6)), "b1": rng.normal(1.0, 0.1, 8),
                "w2": rng.standard_normal((8, 3)), **({"b2": rng.standard_normal(3)} if bias else {})})
    result = compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains", method="prune-mean", statistics="probe"))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("Add") == 1
    assert run(result.model, rng.standard_normal((4, 6)))[0].shape == (4, 3)


def test_allowed_maxpool_chain_is_pruned_and_reported_approximate():
    rng = np.random.default_rng(12)
    model = text_model(MAXPOOL_NET, {"w1": rng.standard_normal((4, 3, 3, 3)), "w2": rng.standard_normal((5, 4, 3, 3))})
    result = compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains", allow_approximate=("maxpool",)))
    assert result.report.layers[0].approximations == ["maxpool"]
    assert "(approximate: maxpool)" in result.report.summary()
    assert run(result.model, rng.standard_normal((2, 3, 8, 8)))[0].shape == (2, 5, 4, 4)
