"""The networks people export, built small by bench/zoo.py: chains found, pruned, skipped."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import chain_coverage  # noqa: E402
import zoo  # noqa: E402

from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.graph.chains import find_chains  # noqa: E402

SMALL = {"width": 0.125, "image": 32, "classes": 10}


def _chains(model, allow=()):
    return find_chains(gs.import_onnx(model), {i.name for i in model.graph.input}, frozenset(allow))


@pytest.mark.parametrize("fold_bn", [False, True], ids=["bn", "folded"])
def test_resnet50_prunes_both_internal_convs_of_every_bottleneck(fold_bn):
    model = zoo.build("resnet50", fold_bn=fold_bn, **SMALL)
    result = compress(model, CompressOptions(ratio=0.3, scope="chains"))
    assert result.report.chains_found == 32  # 16 bottlenecks x (1x1 -> 3x3, 3x3 -> 1x1)
    assert result.report.validation.runtime
    assert result.report.macs_after < result.report.macs_before


def test_vgg16_bn_needs_the_maxpool_approximation_for_its_last_conv_of_each_stage():
    model = zoo.build("vgg16_bn", **SMALL)
    chains, skipped = _chains(model)
    assert len(chains) == 10  # 8 conv->conv + 2 classifier Gemm->Relu->Gemm
    assert sum("MaxPool" in s.reason for s in skipped) == 5
    chains, _ = _chains(model, allow=("maxpool",))
    assert len(chains) == 15
    flattened = [c for c in chains if c.consumer.op == "Gemm" and c.producer.op == "Conv"]
    assert len(flattened) == 1 and flattened[0].approximations == ("maxpool",)
    result = compress(model, CompressOptions(ratio=0.3, allow_approximate=("maxpool",)))
    assert sum(1 for layer in result.report.layers if layer.approximations) == 5


def test_mobilenet_v2_expand_blocks_are_skipped_with_reasons():
    model = zoo.build("mobilenet_v2", **SMALL)
    chains, skipped = _chains(model, allow=("relu6",))
    assert [c.consumer.op for c in chains] == ["Gemm"]  # only the last 1x1 conv -> pool -> classifier
    assert sum("expand/depthwise/project" in s.reason for s in skipped) == 16


def test_keras_style_nhwc_cnn_and_mlp():
    keras = chain_coverage.keras_style_cnn()
    result = compress(keras, CompressOptions(ratio=0.3, scope="chains"))
    assert result.report.chains_found == 4
    assert result.report.validation.runtime
    mlp = compress(chain_coverage.mlp(), CompressOptions(ratio=0.5))
    assert [(layer.channels_before, layer.channels_after) for layer in mlp.report.layers] == [(300, 150), (100, 50)]
    assert np.isfinite(mlp.report.validation.outputs[0].relative_l2_error)
