"""The networks people export, built small by bench/zoo.py: chains found, pruned, skipped; and
the coverage table's own survey (bench/coverage.py) on one of them."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import zoo  # noqa: E402

# bench/coverage.py by path: `import coverage` could find coverage.py the package (pytest-cov)
_spec = importlib.util.spec_from_file_location("bench_coverage", BENCH / "coverage.py")
bench_coverage = sys.modules["bench_coverage"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_coverage)

from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.graph.chains import find_chains  # noqa: E402

SMALL = {"width": 0.125, "image": 32, "classes": 10}


def _chains(model, allow=()):
    return find_chains(gs.import_onnx(model), {i.name for i in model.graph.input}, frozenset(allow))


@pytest.mark.parametrize("fold_bn", [False, True], ids=["bn", "folded"])
def test_resnet50_prunes_both_internal_convs_of_every_bottleneck(fold_bn):
    model = zoo.build("resnet50", fold_bn=fold_bn, **SMALL)
    result = compress(model, CompressOptions(round_to=1, ratio=0.3, scope="chains"))
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
    result = compress(model, CompressOptions(round_to=1, ratio=0.3, allow_approximate=("maxpool",)))
    assert sum(1 for layer in result.report.layers if layer.approximations) == 5


def test_mobilenet_v2_expand_blocks_are_skipped_with_reasons():
    model = zoo.build("mobilenet_v2", **SMALL)
    chains, skipped = _chains(model, allow=("relu6",))
    assert [c.consumer.op for c in chains] == ["Gemm"]  # only the last 1x1 conv -> pool -> classifier
    assert sum("expand/depthwise/project" in s.reason for s in skipped) == 16


def test_keras_style_nhwc_cnn_and_mlp():
    keras = bench_coverage.keras_style_cnn()
    result = compress(keras, CompressOptions(round_to=1, ratio=0.3, scope="chains"))
    assert result.report.chains_found == 4
    assert result.report.validation.runtime
    mlp = compress(bench_coverage.mlp(), CompressOptions(round_to=1, ratio=0.5))
    assert [(layer.channels_before, layer.channels_after) for layer in mlp.report.layers] == [(300, 150), (100, 50)]
    assert np.isfinite(mlp.report.validation.outputs[0].relative_l2_error)


def test_coverage_survey_of_the_keras_style_cnn(tmp_path):
    entry = bench_coverage.Entry("keras", "numpy", build=bench_coverage.keras_style_cnn)
    row = bench_coverage.survey(entry, tmp_path, cli=False)
    assert row["units"] == row["chains"] == row["pruned"] == 4
    assert row["macs_reduction"] > 0.2 and row["macs_share_prunable"] == 1.0
    assert row["interface"]["ok"] and row["masked_reference"]["exact"]
    assert row["left_whole_reasons"] == {"reaches graph output '…'": 1}
    assert row["flags"] == []
    assert "| keras |" in bench_coverage.markdown_row(row)


def test_coverage_counts_reasons_without_names():
    kind = bench_coverage.reason_kind
    assert kind("read by LayerNormalization /0/0.1/LayerNormalization: normalises over the channels") == \
        "read by LayerNormalization: normalises over the channels"
    assert kind("Conv weight 'w' is shared with 2 other node(s)") == "Conv weight '…' is shared with N other node(s)"
    assert kind("combined in Add Add_12 along different axes") == "combined in Add along different axes"
