"""Latency measurement and `--benchmark`: facts that hold on any machine (no timing thresholds)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from builders import chain_model, random_bn
from onnx_lbyl.cli import main
from onnx_lbyl.latency import compare_latency, measure_latency
from onnx_lbyl.validate import random_inputs


def _tiny(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv(3->8) -> BN -> Relu -> Conv(8->4) on 6x6 images: one prunable chain."""
    return chain_model(rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((4, 8, 3, 3)), bn=random_bn(rng, 8))


def test_measure_latency_counts_and_positive_times(tmp_path):
    model = _tiny(np.random.default_rng(0))
    feeds = random_inputs(model, 2)
    result = measure_latency(model, feeds, runs=4, warmup=1, threads=1)
    assert result.runs == 4 and len(result.runs_ms) == 4 and result.warmup == 1
    assert result.batch == 2 and result.threads == 1
    assert all(t > 0 for t in result.runs_ms)
    assert 0 < result.min_ms <= result.median_ms <= result.max_ms
    path = tmp_path / "tiny.onnx"  # a path and serialised bytes work as well as a ModelProto
    onnx.save(model, str(path))
    assert measure_latency(path, feeds, runs=1, warmup=0).runs == 1
    assert measure_latency(model.SerializeToString(), feeds, runs=2).runs == 2


def test_compare_latency_times_both_models():
    model = _tiny(np.random.default_rng(1))
    feeds = random_inputs(model, 3)
    result = compare_latency(model, model, feeds, runs=3, warmup=0)
    for side in (result.original, result.pruned):
        assert side.runs == 3 and len(side.runs_ms) == 3 and side.median_ms > 0 and side.batch == 3
    assert result.ratio == pytest.approx(result.pruned.median_ms / result.original.median_ms, rel=1e-3)


def test_bad_counts_are_refused():
    model = _tiny(np.random.default_rng(2))
    with pytest.raises(ValueError):
        measure_latency(model, random_inputs(model, 1), runs=0)


def test_benchmark_flag_adds_latency_to_report(tmp_path, capsys):
    src, out, report = tmp_path / "tiny.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(_tiny(np.random.default_rng(3)), str(src))
    assert main([str(src), str(out), "--ratio", "0.5", "--benchmark", "--report", str(report)]) == 0
    assert out.exists()
    data = json.loads(report.read_text())
    latency = data["latency"]
    for side in ("original", "pruned"):
        assert latency[side]["median_ms"] > 0 and latency[side]["runs"] == len(latency[side]["runs_ms"]) >= 1
        assert latency[side]["batch"] == data["validation"]["batch"]
    assert latency["ratio"] > 0
    assert data["macs_after"] < data["macs_before"]  # the MACs ratio printed beside it
    text = capsys.readouterr().out
    assert "latency (onnxruntime CPU" in text and "MACs x" in text


def test_report_has_no_latency_without_the_flag(tmp_path):
    src, out, report = tmp_path / "tiny.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(_tiny(np.random.default_rng(4)), str(src))
    assert main([str(src), str(out), "--quiet", "--report", str(report)]) == 0
    assert json.loads(report.read_text())["latency"] is None
