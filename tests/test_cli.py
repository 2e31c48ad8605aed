"""The command line end to end: the shipped model, the report, and every bad input."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from builders import chain_model
from onnx_lbyl.cli import main

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "resnet20_cifar10.onnx"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "onnx-lbyl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "onnx_lbyl.cli"]


def test_shipped_model_end_to_end(tmp_path):
    out, report = tmp_path / "small.onnx", tmp_path / "report.json"
    digest = _sha(SHIPPED)
    done = subprocess.run(
        [*_console_script(), str(SHIPPED), str(out), "--ratio", "0.3", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "layers found: 14 (9 chains, 5 groups), pruned: 14" in done.stdout
    assert f"written: {out}" in done.stdout
    assert "[14/14]" in done.stderr  # progress goes to stderr
    assert _sha(SHIPPED) == digest  # the input is never touched
    assert out.stat().st_size < SHIPPED.stat().st_size

    data = json.loads(report.read_text())
    assert data["chains_found"] == 14 and data["chains_pruned"] == 14
    assert data["parameters_after"] < data["parameters_before"]
    assert data["macs_after"] < data["macs_before"]
    assert data["options"]["method"] == "moments-greedy" and data["options"]["ratio"] == 0.3
    chains = [layer["channels_after"] for layer in data["layers"] if layer["kind"] == "chain"]
    # the default --round-to 8: floor(0.7 n) rounded up to 8, or to 4 (2) for layers under 32 (16) channels
    assert chains == [12] * 3 + [24] * 3 + [48] * 3
    streams = {layer["name"]: layer["channels_after"] for layer in data["layers"] if layer["kind"] == "group"}
    assert streams == {"/conv1/Conv": 12, "/layer2/layer2.0/conv2/Conv[0:8]": 6, "/layer2/layer2.0/conv2/Conv[24:32]": 6,
                       "/layer3/layer3.0/conv2/Conv[0:16]": 12, "/layer3/layer3.0/conv2/Conv[48:64]": 12}
    assert data["validation"]["checker"] and data["validation"]["runtime"]
    assert 0.0 <= data["validation"]["outputs"][0]["top1_agreement"] <= 1.0

    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert "lbyl_eval.preprocess" in props and props["onnx_lbyl.version"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (2, 10)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_quiet_prints_nothing_and_methods_run(tmp_path, capsys):
    for method in ("prune", "merge"):
        out = tmp_path / f"{method}.onnx"
        assert main([str(SHIPPED), str(out), "-r", "0.2", "--method", method, "--quiet"]) == 0
        assert out.exists()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "onnx-lbyl IN.onnx OUT.onnx --ratio 0.3" in capsys.readouterr().out
    assert main(["compress", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--ratio", "--method", "--criterion", "--seed", "--lambda1", "--lambda2", "--report", "--quiet",
                   "--calibration", "--layer-ratio", "--exclude", "--target-macs", "--allow-approximate", "--round-to",
                   "--statistics", "--calibration-fit"):
        assert option in text
    assert main(["--version"]) == 0


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = tmp_path / "good.onnx"
    good.write_bytes(SHIPPED.read_bytes())
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(SHIPPED.read_bytes()[:5000])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    unprunable = tmp_path / "unprunable.onnx"  # its only chain's Relu output is also a graph output
    rng = np.random.default_rng(0)
    onnx.save(chain_model(rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 3, 3)),
                          relu_also_to_output=True), str(unprunable))
    out = str(tmp_path / "out.onnx")
    return {
        "missing": ([str(tmp_path / "nope.onnx"), out], "input file not found"),
        "empty": ([str(empty), out], "input file is empty"),
        "truncated": ([str(truncated), out], "is not a readable ONNX model"),
        "not onnx": ([str(text), out], "is not a readable ONNX model"),
        "output is input": ([str(good), str(good)], "output path is the input file"),
        "ratio one": ([str(good), out, "--ratio", "1"], "ratio must be a number in [0, 1)"),
        "ratio negative": ([str(good), out, "--ratio", "-0.1"], "ratio must be a number in [0, 1)"),
        "ratio nan": ([str(good), out, "--ratio", "nan"], "ratio must be a number in [0, 1)"),
        "ratio text": ([str(good), out, "--ratio", "abc"], "'abc' is not a valid float"),
        "nothing prunable": ([str(unprunable), out], "no prunable layer found"),
        "missing folder": ([str(good), str(tmp_path / "no" / "out.onnx")], "output folder does not exist"),
        "output is folder": ([str(good), str(tmp_path)], "output path is a directory"),
        "unknown method": ([str(good), out, "--method", "magic"], "Invalid value for '--method'"),
        "missing inputs": ([str(good), out, "--inputs", str(tmp_path / "none.npz")], "inputs file not found"),
        "bad layer ratio": ([str(good), out, "--layer-ratio", "layer1"], "PATTERN=RATIO"),
        "bad target": ([str(good), out, "--target-macs", "1.5"], "target MACs reduction must be a fraction in (0, 1)"),
        "bad rounding": ([str(good), out, "--round-to", "0"], "round-to must be a whole number >= 1"),
        "unreachable target": ([str(good), out, "--target-macs", "0.99", "--scope", "chains"], "out of reach"),
    }


BAD_CASES = [
    "missing", "empty", "truncated", "not onnx", "output is input", "ratio one", "ratio negative",
    "ratio nan", "ratio text", "nothing prunable", "missing folder", "output is folder",
    "unknown method", "missing inputs", "bad layer ratio", "bad target", "bad rounding", "unreachable target",
]


def test_every_bad_case_is_listed(tmp_path):
    assert sorted(_bad_inputs(tmp_path)) == sorted(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_exit_2_and_no_file(case, tmp_path, capsys):
    args, message = _bad_inputs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("onnx-lbyl: error: "), err
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temp file


def test_per_layer_options_and_rounding_on_the_command_line(tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    args = [str(SHIPPED), str(out), "-q", "--report", str(report), "--layer-ratio", "/layer3/*=0.5",
            "--exclude", "/layer1/layer1.0/*", "--round-to", "4", "--method", "prune"]
    assert main(args) == 0
    layers = {layer["name"]: layer["channels_after"] for layer in json.loads(report.read_text())["layers"]}
    assert layers["/layer1/layer1.0/conv1/Conv"] == 16  # excluded
    assert layers["/layer1/layer1.1/conv1/Conv"] == 12  # 11 rounded up to a multiple of 4
    assert layers["/layer3/layer3.0/conv1/Conv"] == 32  # per-layer ratio 0.5
