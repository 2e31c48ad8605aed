"""Which Convs the graph pass prunes, which it leaves alone, and why (MATH.md §7, §8)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from builders import chain_model, random_bn, run
from onnx_lbyl import CompressOptions, NothingToPruneError, compress

RESIDUAL_BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
block (float[N, 4, 6, 6] x) => (float[N, 4, 6, 6] y) {
    s = Conv <pads = [1, 1, 1, 1]> (x, w_stem)
    r = Relu (s)
    ua = Conv <pads = [1, 1, 1, 1]> (r, w_a)
    ra = Relu (ua)
    ub = Conv <pads = [1, 1, 1, 1]> (ra, w_b)
    y = Add (ub, r)
}
"""


def residual_block(rng: np.random.Generator) -> onnx.ModelProto:
    """A ResNet basic block: only the block-internal Conv (w_a) may lose channels."""
    model = onnx.parser.parse_model(RESIDUAL_BLOCK)
    for name in ("w_stem", "w_a", "w_b"):
        model.graph.initializer.append(
            numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_resnet_block_prunes_only_the_internal_conv():
    rng = np.random.default_rng(0)
    model = residual_block(rng)
    result = compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    report = result.report
    assert [layer.name for layer in report.layers] == ["w_a"]  # unnamed nodes go by weight
    assert report.layers[0].channels_after == 2
    reasons = {s.name: s.reason for s in report.skipped}
    assert "also feeds other nodes (Add, Conv)" in reasons["w_stem"]
    assert "followed by Add, not Relu" in reasons["w_b"]
    widths = {t.name: list(t.dims) for t in result.model.graph.initializer}
    assert {k: widths[k] for k in ("w_stem", "w_a", "w_b")} == {
        "w_stem": [4, 4, 3, 3], "w_a": [2, 4, 3, 3], "w_b": [4, 2, 3, 3]}
    x = rng.standard_normal((2, 4, 6, 6))
    assert run(result.model, x)[0].shape == (2, 4, 6, 6)


@pytest.mark.parametrize(
    "switch, reason",
    [
        ("weight1_as_input", "Conv weight 'w1' is a graph input"),
        ("share_weight1", "Conv weight 'w1' is shared with 1 other node(s)"),
        ("relu_also_to_output", "Relu output is a graph output"),
    ],
)
def test_unsafe_chains_are_left_alone_with_a_reason(switch, reason):
    rng = np.random.default_rng(1)
    model = chain_model(rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((5, 4, 3, 3)),
                        bn=random_bn(rng, 4), **{switch: True})
    with pytest.raises(NothingToPruneError, match="no prunable chain found") as caught:
        compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    assert reason in str(caught.value)


def test_grouped_conv_is_skipped():
    rng = np.random.default_rng(2)
    model = chain_model(rng.standard_normal((4, 1, 3, 3)), rng.standard_normal((5, 4, 3, 3)), group=4)
    with pytest.raises(NothingToPruneError, match=r"grouped/depthwise Conv \(group=4\)"):
        compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))


def test_pruned_shapes_bias_and_batchnorm_follow_the_kept_channels():
    rng = np.random.default_rng(3)
    model = chain_model(rng.standard_normal((10, 3, 3, 3)), rng.standard_normal((5, 10, 3, 3)),
                        b1=rng.standard_normal(10), b2=rng.standard_normal(5), bn=random_bn(rng, 10))
    result = compress(model, CompressOptions(round_to=1, ratio=0.3, scope="chains"))
    widths = {t.name: list(t.dims) for t in result.model.graph.initializer}
    assert widths["w1"] == [7, 3, 3, 3] and widths["b1"] == [7]
    assert all(widths[f"bn_{k}"] == [7] for k in ("gamma", "beta", "mean", "var"))
    assert widths["w2"] == [5, 7, 3, 3] and widths["b2"] == [5]
    assert result.report.parameters_after < result.report.parameters_before
    assert result.report.macs_after < result.report.macs_before


def test_at_least_one_channel_is_kept():
    rng = np.random.default_rng(4)
    model = chain_model(rng.standard_normal((2, 3, 3, 3)), rng.standard_normal((5, 2, 3, 3)))
    result = compress(model, CompressOptions(round_to=1, ratio=0.99, scope="chains"))
    assert result.report.layers[0].channels_after == 1


@pytest.mark.parametrize("criterion", ["l2", "random"])
def test_same_options_give_the_same_bytes(criterion):
    rng = np.random.default_rng(5)
    model = chain_model(rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((5, 8, 3, 3)),
                        bn=random_bn(rng, 8))
    options = CompressOptions(round_to=1, ratio=0.5, scope="chains", criterion=criterion, seed=7)
    first = compress(model, options).model.SerializeToString()
    assert compress(model, options).model.SerializeToString() == first


def test_the_input_model_object_is_not_modified():
    rng = np.random.default_rng(6)
    model = chain_model(rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((5, 8, 3, 3)),
                        bn=random_bn(rng, 8))
    before = model.SerializeToString()
    compress(model, CompressOptions(round_to=1, ratio=0.5, scope="chains"))
    assert model.SerializeToString() == before
