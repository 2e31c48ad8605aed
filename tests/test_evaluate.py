"""`onnx-lbyl eval`: scoring, preprocessing from metadata, comparison, one-line errors.

Everything here runs on the shipped ResNet-20 and small synthetic data written into
tmp_path, so a fresh clone (without the project's shared data sets) can run it. The
expected labels are the model's own predictions under a preprocessing computed here by
hand, so a test fails if eval feeds the model anything else.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.cli import main
from onnx_lbyl.evaluate import PREPROCESS_KEY, evaluate

MODEL = Path(__file__).resolve().parent.parent / "models" / "resnet20_cifar10.onnx"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


def predict(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    """Top-1 classes of a model on an already preprocessed float batch."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return np.argmax(session.run(None, {"input": x.astype(np.float32)})[0], axis=1)


def images(n: int = 40, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images: blocky, so the model's predictions vary across classes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, axis=2), 8, axis=3)


def metadata_labels(x: np.ndarray) -> np.ndarray:
    """Labels equal to the shipped model's predictions under its metadata preprocessing."""
    return predict(MODEL, (x.astype(np.float32) / 255 - MEAN) / STD)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def with_metadata(model: onnx.ModelProto, value: str | None) -> onnx.ModelProto:
    """A copy of `model` whose lbyl_eval.preprocess is `value` (removed when None)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    props = {p.key: p.value for p in model.metadata_props if p.key != PREPROCESS_KEY}
    if value is not None:
        props[PREPROCESS_KEY] = value
    del copy.metadata_props[:]
    onnx.helper.set_model_props(copy, props)
    return copy


@pytest.fixture
def npz(tmp_path) -> tuple[Path, np.ndarray]:
    """40 images whose first 10 labels are wrong on purpose: top-1 must be exactly 75%."""
    x = images()
    labels = metadata_labels(x)
    labels[:10] = (labels[:10] + 1) % 10
    path = tmp_path / "data.npz"
    np.savez(path, images=x, labels=labels)
    return path, labels


def test_eval_prints_top1_and_count(capsys, npz):
    code, out, err = run(capsys, "eval", MODEL, npz[0])
    assert code == 0, err
    assert "top-1: 75.00% (30/40)" in out
    assert "count: 40 images, 10 classes" in out
    assert "top-5:" in out
    assert "(model metadata)" in out


def test_compare_with_itself_agrees_completely(capsys, npz):
    code, out, err = run(capsys, "eval", MODEL, npz[0], "--compare", MODEL, "--batch-size", 16)
    assert code == 0, err
    assert "original top-1: 75.00%" in out
    assert "agreement: 100.00% (40/40" in out


def test_metadata_preprocess_is_read(tmp_path, capsys):
    """A model whose metadata asks for a different normalisation is fed exactly that one,
    and the same values given as options reproduce it on a model without metadata."""
    base = onnx.load(str(MODEL))
    x = images(seed=1)
    mean, std = [0.5, 0.25, 0.75], [0.5, 0.3, 0.2]
    labels = predict(base, (x / 255 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1)))
    data = tmp_path / "data.npz"
    np.savez(data, images=x, labels=labels)
    custom = tmp_path / "custom.onnx"
    onnx.save(with_metadata(base, json.dumps({"mean": mean, "std": std, "scale": "1/255"})), custom)
    bare = tmp_path / "bare.onnx"
    onnx.save(with_metadata(base, None), bare)

    code, out, err = run(capsys, "eval", custom, data, "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "top-1: 100.00% (40/40)" in out
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["preprocess"]["source"] == "model metadata"
    assert record["preprocess"]["mean"] == mean and record["preprocess"]["std"] == std
    assert record["top1"] == 1.0 and record["count"] == 40

    code, out, err = run(capsys, "eval", bare, data, "--mean", "0.5,0.25,0.75", "--std", "0.5,0.3,0.2",
                         "--scale", "1/255")
    assert code == 0, err
    assert "top-1: 100.00% (40/40)" in out and "(options)" in out

    result = evaluate(bare, data)  # no metadata, no options: x / 255 only
    assert result.preprocess["source"] == "defaults"
    assert result.preprocess["mean"] == [0.0] and result.preprocess["std"] == [1.0]


def test_float_images_are_taken_as_scaled(tmp_path):
    """Float data is already in [0, 1]: the metadata's 1/255 (a statement about raw pixels)
    is not applied to it again."""
    x = images(seed=2)
    data = tmp_path / "float.npz"
    np.savez(data, images=x.astype(np.float32) / 255, labels=metadata_labels(x))
    result = evaluate(MODEL, data)
    assert result.top1 == 1.0 and result.preprocess["scale"] == 1.0


def test_fixed_batch_dimension_pads_the_last_batch(tmp_path, npz):
    model = onnx.load(str(MODEL))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 7
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, fixed)
    result = evaluate(fixed, npz[0], batch_size=256)  # 40 = 5 * 7 + 5: the last batch is padded
    assert result.count == 40 and result.correct == 30
    assert result.predictions.shape == (40,)


def test_fewer_than_five_classes_has_no_top5(tmp_path, capsys):
    """A 3-class toy model (Flatten -> MatMul): top-5 is not defined, so it is not printed."""
    w = np.eye(4, 3, dtype=np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Flatten", ["input"], ["flat"]),
         onnx.helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "toy",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "toy.onnx"
    toy = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    toy.ir_version = 8  # what onnxruntime of any supported version loads
    onnx.save(toy, path)
    x = np.zeros((3, 1, 2, 2), dtype=np.uint8)
    for i in range(3):
        x[i, 0].flat[i] = 255
    np.savez(tmp_path / "toy.npz", images=x, labels=np.array([0, 1, 1]))
    code, out, err = run(capsys, "eval", path, tmp_path / "toy.npz")
    assert code == 0, err
    assert "top-1: 66.67% (2/3)" in out and "top-5" not in out
    assert evaluate(path, tmp_path / "toy.npz").top5 is None


def _bad_data(tmp_path: Path, case: str) -> Path:
    x = images(4)
    path = tmp_path / f"{case}.npz"
    if case == "missing":
        return tmp_path / "nothing-here.npz"
    if case == "no_labels":
        np.savez(path, images=x)
    elif case == "count_mismatch":
        np.savez(path, images=x, labels=np.zeros(3, dtype=np.int64))
    elif case == "wrong_size":
        np.savez(path, images=x[:, :, :28, :28], labels=np.zeros(4, dtype=np.int64))
    elif case == "nhwc":
        np.savez(path, images=x.transpose(0, 2, 3, 1), labels=np.zeros(4, dtype=np.int64))
    elif case == "label_out_of_range":
        np.savez(path, images=x, labels=np.array([0, 1, 2, 10]))
    elif case == "float_labels":
        np.savez(path, images=x, labels=np.zeros(4, dtype=np.float32))
    elif case == "not_npz":
        path.write_text("not an archive\n")
    return path


@pytest.mark.parametrize("case", ["missing", "no_labels", "count_mismatch", "wrong_size", "nhwc",
                                  "label_out_of_range", "float_labels", "not_npz"])
def test_bad_data_is_one_line_exit_2(tmp_path, capsys, case):
    code, out, err = run(capsys, "eval", MODEL, _bad_data(tmp_path, case))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("onnx-lbyl: error: "), err
    assert "top-1" not in out


@pytest.mark.parametrize("option", [["--mean", "0.1,0.2"], ["--std", "0"], ["--scale", "abc"],
                                    ["--batch-size", "0"], ["--compare", "missing.onnx"]])
def test_bad_options_are_one_line_exit_2(capsys, npz, option):
    code, out, err = run(capsys, "eval", MODEL, npz[0], *option)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("onnx-lbyl: error: "), err


def test_compress_keeps_preprocess_metadata(tmp_path, capsys, npz):
    """The preprocessing travels with the model: the pruned file carries the original's
    lbyl_eval.* metadata verbatim, so eval scores it the same way without options."""
    original = {p.key: p.value for p in onnx.load(str(MODEL)).metadata_props}
    assert PREPROCESS_KEY in original

    result = compress(str(MODEL), CompressOptions(round_to=1, ratio=0.3))
    props = {p.key: p.value for p in result.model.metadata_props}
    for key, value in original.items():
        assert props[key] == value

    pruned = tmp_path / "pruned.onnx"
    code, _, err = run(capsys, MODEL, pruned, "--ratio", "0.3", "-q")  # the main form still works
    assert code == 0, err
    assert {p.key: p.value for p in onnx.load(str(pruned)).metadata_props}[PREPROCESS_KEY] == original[PREPROCESS_KEY]
    code, out, err = run(capsys, "eval", pruned, npz[0], "--compare", MODEL)
    assert code == 0, err
    assert "(model metadata)" in out and "original top-1: 75.00%" in out and "agreement:" in out
    assert "warning" not in err


def _write_folder(root: Path, x: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    from PIL import Image

    for name in reversed(classes):  # creation order must not matter, only the sorted names
        (root / name).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(x, labels)):
        Image.fromarray(image.transpose(1, 2, 0)).save(root / classes[label] / f"{i:03d}.png")


def test_image_folder(tmp_path, capsys):
    pytest.importorskip("PIL")
    x = images(30, seed=3)
    labels = metadata_labels(x)
    classes = [f"class_{i:02d}" for i in range(10)]  # sorted by name = label index
    _write_folder(tmp_path / "data", x, labels, classes)
    (tmp_path / "data" / classes[0] / "notes.txt").write_text("not an image")
    code, out, err = run(capsys, "eval", MODEL, tmp_path / "data")
    assert code == 0, err
    assert "top-1: 100.00% (30/30)" in out


def test_image_folder_wrong_size_is_one_line_exit_2(tmp_path, capsys):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "data" / "a").mkdir(parents=True)
    Image.new("RGB", (28, 28)).save(tmp_path / "data" / "a" / "0.png")
    code, _, err = run(capsys, "eval", MODEL, tmp_path / "data")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "does not resize" in err


def test_image_folder_without_pillow_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "data" / "a").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    code, _, err = run(capsys, "eval", MODEL, tmp_path / "data")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "onnx-lbyl[images]" in err
