"""Reports a user can act on: refusals write them too, `inspect` prints the same findings,
validation says what it ran on, --max-drift fails a run that moved too far, and repeatable
options take comma lists."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from builders import chain_model
import onnx_lbyl.validate as validate_module
from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.cli import main
from onnx_lbyl.pipeline import inspect
from test_unsupported_models import if_model, qlinear_model

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "resnet20_cifar10.onnx"


def _chain(tmp_path: Path, **switches) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "in.onnx"
    onnx.save(chain_model(rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((4, 8, 3, 3)), **switches), str(path))
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("onnx-lbyl: error: "), err
    return err


def test_a_refusal_writes_its_report_with_every_layer_and_reason(tmp_path, capsys):
    path, out, report = _chain(tmp_path, relu_also_to_output=True), tmp_path / "out.onnx", tmp_path / "r.json"
    assert main([str(path), str(out), "--report", str(report), "--input-shape", "x:1,3,6,6"]) == 2
    err = _one_error_line(capsys)
    # the most common reason, and the count of the others
    assert "2 layer(s) checked, 1 because reaches graph output 'a' (e.g. conv1)" in err
    assert "1 for 1 other reason(s), listed by --report" in err
    data = json.loads(report.read_text())
    assert data["outcome"] == "refused" and data["error"] == err.removeprefix("onnx-lbyl: error: ").strip()
    assert data["candidates"] == [] and data["layers"] == []
    reasons = {s["name"]: s["reason"] for s in data["skipped"]}
    assert set(reasons) == {"conv1", "conv2"}
    assert "graph output" in reasons["conv1"]
    assert all(s["macs"] > 0 for s in data["skipped"]) and data["macs_before"] > 0
    assert not out.exists()


@pytest.mark.parametrize("build, outcome", [
    (qlinear_model, "model is quantized"),
    (lambda: if_model(dynamic_condition=True), "no prunable layers outside control flow"),
])
def test_refusals_before_the_analysis_write_a_report_too(build, outcome, tmp_path, capsys):
    path, out, report = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(build(), str(path))
    assert main([str(path), str(out), "--report", str(report)]) == 2
    assert outcome in _one_error_line(capsys)
    data = json.loads(report.read_text())
    assert data["outcome"] == "refused" and outcome in data["error"]
    if "control flow" in outcome:  # the layers inside the If are each listed with where they are
        assert sum("inside If 'branch'" in s["reason"] for s in data["skipped"]) == 4


def test_a_report_path_that_is_a_directory_is_refused_before_any_work(tmp_path, capsys):
    path = _chain(tmp_path, relu_also_to_output=True)
    report = tmp_path / "r.json"
    report.mkdir()  # a directory: refused up front by the path checks, before any work
    assert main([str(path), str(tmp_path / "out.onnx"), "--report", str(report)]) == 2
    assert "directory" in _one_error_line(capsys)


def test_inspect_lists_candidates_and_what_stays_whole(tmp_path, capsys):
    json_path = tmp_path / "found.json"
    assert main(["inspect", str(SHIPPED), "--json", str(json_path)]) == 0
    text = capsys.readouterr().out
    assert "prunable: 14 (9 chains, 5 groups)" in text
    assert "/layer1/layer1.0/conv1/Conv" in text and "share" in text
    assert "left whole: 1" in text and "reaches graph output 'logits'" in text
    data = json.loads(json_path.read_text())
    assert data["outcome"] == "inspected" and len(data["candidates"]) == 14
    assert data["layers"] == [] and data["validation"] is None
    stream = next(c for c in data["candidates"] if c["name"] == "/conv1/Conv")
    assert stream["kind"] == "group" and stream["macs"] == data["macs_before"]  # the stream reaches every layer


def test_inspect_matches_what_compress_finds():
    found = inspect(SHIPPED)
    done = compress(SHIPPED, CompressOptions(ratio=0.1))
    assert [c.name for c in found.candidates] == [layer.name for layer in done.report.layers]
    assert [c.macs for c in found.candidates] == [layer.macs for layer in done.report.layers]
    assert [(s.name, s.reason) for s in found.skipped] == [(s.name, s.reason) for s in done.report.skipped]


def test_inspect_refuses_a_dynamic_shape_naming_the_option(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    model = onnx.load(str(SHIPPED))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"
    onnx.save(model, str(path))
    assert main(["inspect", str(path)]) == 2
    assert "--input-shape" in _one_error_line(capsys)
    assert main(["inspect", str(path), "--input-shape", "input:1,3,32,32"]) == 0


def test_validation_runs_on_synthetic_images_at_the_model_shape():
    result = compress(SHIPPED, CompressOptions(ratio=0.1, scope="chains"))
    validation = result.report.validation
    assert validation.inputs == "synthetic image"
    assert validation.shapes == {"input": [64, 3, 32, 32]}  # 64 CIFAR-sized images, never 1x1
    assert result.feeds["input"].shape == (64, 3, 32, 32)
    assert "on 64 synthetic image sample(s) (input: 64x3x32x32)" in result.report.summary()


def test_validation_uses_calibration_samples_then_the_given_inputs(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    calibrated = compress(SHIPPED, CompressOptions(ratio=0.1, scope="chains", calibration={"images": images}))
    assert calibrated.report.validation.inputs == "calibration"
    assert calibrated.report.validation.batch == 12
    given = tmp_path / "mine.npz"
    np.savez(given, input=rng.standard_normal((3, 3, 32, 32)).astype(np.float32))
    chosen = compress(SHIPPED, CompressOptions(ratio=0.1, scope="chains"), inputs=given)
    assert chosen.report.validation.inputs == "mine.npz" and chosen.report.validation.batch == 3


def test_max_drift_fails_the_run_writes_no_model_and_reports_the_drift(tmp_path, capsys):
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    assert main([str(SHIPPED), str(out), "--ratio", "0.3", "--max-drift", "0.001", "--report", str(report), "-q"]) == 1
    err = _one_error_line(capsys)
    assert "above --max-drift 0.001; nothing written" in err and "relative L2 on 64 synthetic image" in err
    assert not out.exists()
    data = json.loads(report.read_text())
    assert data["outcome"] == "failed validation" and data["validation"]["outputs"][0]["relative_l2_error"] > 0.001
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # nothing else left behind
    assert main([str(SHIPPED), str(out), "--ratio", "0.3", "--max-drift", "100", "-q"]) == 0
    assert out.exists()


def test_a_large_drift_warns_without_max_drift(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(validate_module, "DRIFT_WARNING", 0.0)
    assert main([str(SHIPPED), str(tmp_path / "out.onnx"), "--ratio", "0.3"]) == 0
    err = capsys.readouterr().err
    assert "onnx-lbyl: warning: output 'logits' drifted" in err and "--max-drift" in err


def test_a_ratio_the_rounding_undoes_says_so(tmp_path, capsys):
    """At --ratio 0.1 every ResNet-20 layer (16, 32, 64 wide) rounds back to its width."""
    assert main([str(SHIPPED), str(tmp_path / "out.onnx"), "--ratio", "0.1"]) == 0
    assert "onnx-lbyl: warning: nothing was removed: kept counts rounded up to multiples of 8" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_max_drift_must_be_a_finite_number(value, tmp_path, capsys):
    assert main([str(SHIPPED), str(tmp_path / "out.onnx"), "--max-drift", value]) == 2
    assert "max-drift must be a finite number >= 0" in _one_error_line(capsys)


def test_repeatable_options_take_comma_lists(tmp_path):
    reports = []
    for extra in (["--exclude", "/layer1/*,/layer2/*", "--allow-approximate", "relu6,maxpool"],
                  ["--exclude", "/layer1/*", "--exclude", "/layer2/*", "--allow-approximate", "relu6",
                   "--allow-approximate", "maxpool"]):
        report = tmp_path / f"r{len(reports)}.json"
        assert main([str(SHIPPED), str(tmp_path / "out.onnx"), "-q", "--scope", "chains", "--report", str(report),
                     *extra]) == 0
        reports.append(json.loads(report.read_text()))
    assert reports[0]["options"] == reports[1]["options"]
    assert reports[0]["options"]["exclude"] == ["/layer1/*", "/layer2/*"]
    kept = {layer["name"]: layer["channels_after"] for layer in reports[0]["layers"]}
    assert kept["/layer1/layer1.0/conv1/Conv"] == 16 and kept["/layer3/layer3.0/conv1/Conv"] == 48  # 44 rounded to 8


def test_a_wrong_item_in_a_comma_list_is_named(tmp_path, capsys):
    assert main([str(SHIPPED), str(tmp_path / "out.onnx"), "--allow-approximate", "relu6,relu7"]) == 2
    err = _one_error_line(capsys)
    assert "'relu7' is not one of maxpool, relu6" in err and "comma list" in err


def test_the_header_says_what_set_the_counts(tmp_path, capsys):
    assert main([str(SHIPPED), str(tmp_path / "out.onnx"), "--target-macs", "0.2", "--allocation", "uniform",
                 "--scope", "chains"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "target-macs=0.2 (uniform ratio" in header and "ratio=0.3" not in header
