"""Models stored with external data, and models "too large for one protobuf" (issue 5).

The 2 GB threshold is lowered to a few KB, so a model of a few hundred KB built here takes
every large-model path: loading with its data file, checking and running from files,
staging the output beside its destination and moving it into place.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from builders import chain_model, random_bn
from onnx_lbyl import pipeline
from onnx_lbyl.cli import main
from onnx_lbyl.errors import ValidationError
from onnx_lbyl.graph import external
from onnx_lbyl.graph.external import write_external
from onnx_lbyl.options import CompressOptions
from onnx_lbyl.pipeline import compress

THRESHOLD = 4096  # bytes: the test model's weights (~150 KB) are far above it


@pytest.fixture
def large(monkeypatch):
    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", THRESHOLD)


def _model(batchnorm: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((64, 8, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((32, 64, 3, 3)).astype(np.float32)
    bn = random_bn(rng, 64) if batchnorm else None
    return chain_model(w1, w2, b1=rng.standard_normal(64), b2=rng.standard_normal(32), bn=bn)


def _save_external(model: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "in.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="in.onnx.data", size_threshold=1024)
    assert (folder / "in.onnx.data").stat().st_size > THRESHOLD
    assert path.stat().st_size < THRESHOLD  # the weights really are outside the model file
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _run(path_or_model, x: np.ndarray) -> np.ndarray:
    source = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "probe"])
def test_cli_writes_model_and_data_file_matching_compress(large, tmp_path, batchnorm):
    src, out_dir = tmp_path / "in", tmp_path / "out"
    src.mkdir(), out_dir.mkdir()
    path = _save_external(_model(batchnorm), src)
    before = _digests(src)
    expected = compress(path, CompressOptions(round_to=1, ratio=0.5))  # in memory, no output: nothing kept
    assert expected.staged is None
    assert _digests(src) == before

    out = out_dir / "out.onnx"
    assert main([str(path), str(out), "--ratio", "0.5", "--quiet"]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["out.onnx", "out.onnx.data"]
    assert _digests(src) == before  # the input files are never touched
    header = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in header.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"out.onnx.data"}
    onnx.checker.check_model(str(out), full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(str(out), x), _run(expected.model, x), rtol=1e-5, atol=1e-5)


def test_in_memory_large_model_is_validated_from_files(large, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray temporary file would show up here
    model = _model()
    result = compress(model, CompressOptions(round_to=1, ratio=0.5), output=tmp_path / "out.onnx")
    assert result.staged is not None and result.report.validation.runtime
    result.save(tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    x = np.zeros((1, 8, 6, 6), np.float32)
    np.testing.assert_allclose(_run(str(tmp_path / "out.onnx"), x), _run(result.model, x), rtol=1e-5, atol=1e-5)


def test_small_model_keeps_the_in_memory_path(tmp_path):
    out = tmp_path / "out.onnx"
    assert main([str(_save_external(_model(), tmp_path)), str(out), "--quiet"]) == 0
    assert not (tmp_path / "out.onnx.data").exists()  # small result: one file, weights inline
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "in.onnx.data", "out.onnx"]


def test_failed_validation_leaves_nothing(large, tmp_path, monkeypatch, capsys):
    src, out_dir = tmp_path / "in", tmp_path / "out"
    src.mkdir(), out_dir.mkdir()
    path = _save_external(_model(batchnorm=False), src)  # the probe writes scratch files too
    seen = []

    def failing_validate(*args, pruned_path=None, **kwargs):
        seen.append(Path(pruned_path))
        assert Path(pruned_path).is_file() and Path(str(pruned_path) + ".data").is_file()
        raise ValidationError("forced failure")

    monkeypatch.setattr(pipeline, "validate", failing_validate)
    assert main([str(path), str(out_dir / "out.onnx"), "--quiet"]) == 1
    assert "forced failure" in capsys.readouterr().err
    assert seen and seen[0].parent.parent == out_dir  # staged beside the output
    assert list(out_dir.iterdir()) == []


def test_failed_move_leaves_nothing(large, tmp_path, monkeypatch):
    real_replace = external.os.replace
    calls = []

    def replace(a, b):
        calls.append(b)
        if len(calls) == 2:  # the model file, after its data file went into place
            raise OSError(28, "No space left on device")
        real_replace(a, b)

    monkeypatch.setattr(external.os, "replace", replace)
    assert main([str(_save_external(_model(), tmp_path)), str(tmp_path / "out.onnx"), "--quiet"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "in.onnx.data"]


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_damaged_external_data_is_exit_2_one_line(large, tmp_path, capsys, damage):
    path = _save_external(_model(), tmp_path)
    data = tmp_path / "in.onnx.data"
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    assert main([str(path), str(tmp_path / "out.onnx"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onnx-lbyl: error: external data file") and "\n" not in err
    assert ("truncated" if damage == "truncated" else "not found") in err
    assert not (tmp_path / "out.onnx").exists()


def test_write_external_leaves_the_model_whole(tmp_path):
    model = _model()
    size = model.ByteSize()
    data = write_external(model, tmp_path / "m.onnx")
    assert data.name == "m.onnx.data" and model.ByteSize() == size  # raw_data still in memory
    assert not external.has_external_references(model)
    x = np.ones((1, 8, 6, 6), np.float32)
    np.testing.assert_array_equal(_run(str(tmp_path / "m.onnx"), x), _run(model, x))


def test_fp16_large_model(large, tmp_path):
    from onnx_lbyl.graph.external import tensor_nbytes

    model = _model()
    for tensor in model.graph.initializer:
        half = onnx.numpy_helper.to_array(tensor).astype(np.float16)
        tensor.CopyFrom(onnx.numpy_helper.from_array(half, tensor.name))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    assert tensor_nbytes(model.graph.initializer[0]) == 2 * int(np.prod(model.graph.initializer[0].dims))
    path = _save_external(model, tmp_path)
    out = tmp_path / "out.onnx"
    assert main([str(path), str(out), "--ratio", "0.5", "--quiet"]) == 0
    assert (tmp_path / "out.onnx.data").is_file()
    y = _run(str(out), np.zeros((1, 8, 6, 6), np.float16))
    assert y.dtype == np.float16 and np.all(np.isfinite(y))
