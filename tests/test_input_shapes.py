"""Models with dynamic input dimensions: --input-shape, the shape taken from calibration data,
and the refusal without either (graph.input_shapes); MACs counted at the stated shape, or
reported as unknown."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_lbyl import CompressOptions, InputError, compress
from onnx_lbyl.cli import main
from onnx_lbyl.graph.cost import model_cost, node_macs
from onnx_lbyl.graph.input_shapes import parse_input_shape, resolve_input_shapes
from onnx_lbyl.sources import synthetic_feeds
from onnx_lbyl.validate import random_inputs

H, W = 10, 12  # the stated spatial size; 3x3 convs with padding 1 keep it


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def dynamic_model(batch="batch", tail: list | None = None, rank: int = 4) -> onnx.ModelProto:
    """x [batch, 3, ?, ?] -> Conv(3->6, 3x3) -> Relu -> Conv(6->4, 3x3) -> y, and `tail`
    ((node, initializers) pairs after y; the last node's output, of `rank`, is the graph output)."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, "height", None])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["u"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["u"], ["a"], name="relu1"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    inits = [_init("w1", (6, 3, 3, 3), rng), _init("b1", (6,), rng), _init("w2", (4, 6, 3, 3), rng)]
    output = "y"
    for node, extra in tail or []:
        nodes.append(node)
        inits.extend(extra)
        output = node.output[0]
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, [None] * rank)
    model = helper.make_model(helper.make_graph(nodes, "dynamic", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# per sample at H x W: conv1 reads 3*3*3 inputs for each of 6*H*W outputs, conv2 6*3*3 for 4*H*W
MACS = 6 * H * W * 27 + 4 * H * W * 54


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(dynamic_model(), str(path))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("onnx-lbyl: error: "), err
    return err


BAD_SHAPES = {
    "letters": ("x:1,3,a,12", "must look like NAME:d0,d1,..."),
    "zero": ("x:1,3,0,12", "must look like NAME:d0,d1,..."),
    "negative": ("x:1,3,-10,12", "must look like NAME:d0,d1,..."),
    "no name": (":1,3,10,12", "must look like NAME:d0,d1,..."),
    "no colon": ("1,3,10,12", "must look like NAME:d0,d1,..."),
    "no dims": ("x:", "must look like NAME:d0,d1,..."),
    "unknown input": ("z:1,3,10,12", "'z' is not an input of the model (inputs: x)"),
    "initializer": ("w1:6,3,3,3", "'w1' is an initializer"),
    "rank": ("x:1,3,10", "rank 3, but input 'x' has rank 4 [batch, 3, height, ?]"),
    "fixed dim": ("x:1,4,10,12", "dimension 1 is 4, but the model fixes it at 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
def test_a_bad_input_shape_is_one_line_exit_2_naming_the_option(case, model_path, tmp_path, capsys):
    text, message = BAD_SHAPES[case]
    out = tmp_path / "out.onnx"
    assert main([str(model_path), str(out), "--input-shape", text]) == 2
    err = _one_line_error(capsys)
    assert "--input-shape" in err and message in err
    assert not out.exists()


def test_an_input_given_twice_is_refused(model_path, tmp_path, capsys):
    args = [str(model_path), str(tmp_path / "out.onnx"), "--input-shape", "x:1,3,10,12", "--input-shape", "x:1,3,8,8"]
    assert main(args) == 2
    assert "--input-shape gives input 'x' twice" in _one_line_error(capsys)


def test_a_fixed_batch_must_be_stated_as_it_is(tmp_path, capsys):
    path = tmp_path / "fixed.onnx"
    onnx.save(dynamic_model(batch=2), str(path))
    assert main([str(path), str(tmp_path / "out.onnx"), "--input-shape", "x:1,3,10,12"]) == 2
    assert "dimension 0 is 1, but the model fixes it at 2" in _one_line_error(capsys)


def test_names_may_hold_colons():
    assert parse_input_shape("input_1:0:1,224,224,3") == ("input_1:0", (1, 224, 224, 3))
    assert parse_input_shape("x:1,3,48,192") == ("x", (1, 3, 48, 192))


def test_without_a_shape_the_model_is_refused_with_a_message_that_names_the_option(model_path, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    assert main([str(model_path), str(out)]) == 2
    err = _one_line_error(capsys)
    assert "input 'x' has dynamic dimensions [batch, 3, height, ?]: give its shape with --input-shape x:1,3,H,W" in err
    assert not out.exists()
    with pytest.raises(InputError, match="--input-shape"):
        random_inputs(dynamic_model())  # never a silent 1x1


def test_with_a_shape_it_runs_there_and_counts_macs_at_it(model_path, tmp_path, capsys):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    args = [str(model_path), str(out), "--input-shape", f"x:1,3,{H},{W}", "--report", str(report), "--ratio", "0.5"]
    assert main(args) == 0, capsys.readouterr().err
    assert f"MACs/sample: {MACS:,} -> " in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["macs_before"] == MACS
    assert data["macs_after"] == 3 * H * W * 27 + 4 * H * W * 27  # conv1 keeps 3 of 6 channels
    assert data["validation"]["shapes"] == {"x": [64, 3, H, W]}  # the dynamic batch takes 64 synthetic images
    assert data["options"]["input_shapes"] == [["x", [1, 3, H, W]]]
    pruned = onnx.load(str(out))  # the written model keeps its dynamic input
    dims = pruned.graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_param == "height" and not dims[3].HasField("dim_value")


def test_costs_and_feeds_follow_the_stated_shape():
    model = dynamic_model()
    shapes = (("x", (1, 3, H, W)),)
    assert model_cost(model, shapes).macs == MACS
    assert model_cost(model, (("x", (1, 3, 2 * H, W)),)).macs == 2 * MACS
    assert model_cost(model).macs is None  # unknown, not silently a smaller count
    assert random_inputs(model, 5, shapes=shapes)["x"].shape == (5, 3, H, W)
    images = synthetic_feeds(model, seed=0, shapes=shapes)["x"]
    assert images.shape[1:] == (3, H, W) and images.dtype == np.float32
    with pytest.raises(InputError, match="--input-shape x:1,3,H,W"):
        synthetic_feeds(model, seed=0)


def test_the_probe_runs_at_the_stated_shape(monkeypatch):
    from onnx_lbyl import sources

    seen = {}
    real = sources.probe_statistics

    def spy(model, chains, feeds, **kw):
        seen["x"] = feeds["x"].shape
        return real(model, chains, feeds, **kw)

    monkeypatch.setattr(sources, "probe_statistics", spy)
    compress(dynamic_model(), CompressOptions(input_shapes={"x": (1, 3, H, W)}))  # a dict works too
    assert seen["x"][1:] == (3, H, W)


def test_the_shape_comes_from_calibration_data(tmp_path):
    data = np.random.default_rng(1).random((6, 3, H, W)).astype(np.float32)
    result = compress(dynamic_model(), CompressOptions(calibration={"x": data}))
    assert result.report.options["input_shapes"] == (("x", (1, 3, H, W)),)
    assert result.report.validation.shapes == {"x": [6, 3, H, W]}  # validated on the calibration samples
    assert result.report.macs_before == MACS
    path = tmp_path / "calibration.npz"
    np.savez(path, images=(data * 255).astype(np.uint8))  # read from its header only
    assert resolve_input_shapes(dynamic_model(), (), str(path)) == (("x", (1, 3, H, W)),)


def test_a_stated_shape_that_disagrees_with_the_calibration_data_is_refused():
    data = np.zeros((6, 3, H, W), np.float32)
    with pytest.raises(InputError, match="disagrees with the calibration data, whose 'x' samples are 3x10x12"):
        compress(dynamic_model(), CompressOptions(calibration={"x": data}, input_shapes=(("x", (1, 3, 8, 8)),)))


def test_models_with_only_a_dynamic_batch_need_no_shape():
    rng = np.random.default_rng(0)
    from builders import chain_model

    model = chain_model(rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 3, 3)))
    assert resolve_input_shapes(model) == ()
    assert random_inputs(model, 3)["x"].shape == (3, 3, 6, 6)
    assert model_cost(model).macs == 4 * 36 * 27 + 2 * 36 * 36


def _unknown_tail() -> list:
    """y -> Reshape(y, Max(Shape(y), Shape(y))) -> Conv: neither data propagation nor the
    canonical passes follow Max, so the last Conv's output shape stays unknown at any input
    shape."""
    rng = np.random.default_rng(3)
    return [
        (helper.make_node("Shape", ["y"], ["s"]), []),
        (helper.make_node("Max", ["s", "s"], ["s2"]), []),
        (helper.make_node("Reshape", ["y", "s2"], ["r"]), []),
        (helper.make_node("Conv", ["r", "w3"], ["z"], name="conv3"), [_init("w3", (2, 4, 1, 1), rng)]),
    ]


def test_macs_unknown_even_at_the_stated_shape_are_reported_and_refuse_a_macs_target(tmp_path, capsys):
    model = dynamic_model(tail=_unknown_tail())
    shapes = (("x", (1, 3, H, W)),)
    assert node_macs(model, shapes)["z"] is None
    assert model_cost(model, shapes).macs is None and model_cost(model, shapes).unknown == ("z",)
    path, out = tmp_path / "unknown.onnx", tmp_path / "out.onnx"
    onnx.save(model, str(path))
    assert main([str(path), str(out), "--input-shape", f"x:1,3,{H},{W}"]) == 0
    assert "MACs/sample: unknown" in capsys.readouterr().out
    assert main([str(path), str(tmp_path / "target.onnx"), "--input-shape", f"x:1,3,{H},{W}", "--target-macs", "0.3"]) == 2
    err = _one_line_error(capsys)
    assert "--target-macs needs the model's MACs, which are unknown: the output shape of 'z' is not known" in err
    assert not (tmp_path / "target.onnx").exists()


def test_a_classifier_head_behind_a_computed_reshape_is_counted_from_its_input():
    """Reshape(p, Abs(Shape(p))) hides the head's output shape; its MACs are its input's
    elements per sample times its outputs, which holds whatever shape the Reshape makes."""
    rng = np.random.default_rng(4)
    tail = [
        (helper.make_node("GlobalAveragePool", ["y"], ["p"]), []),
        (helper.make_node("Shape", ["p"], ["s"]), []),
        (helper.make_node("Abs", ["s"], ["s2"]), []),
        (helper.make_node("Slice", ["s2", "zero", "two"], ["s3"]),
         [numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([2], np.int64), "two")]),
        (helper.make_node("Reshape", ["p", "s3"], ["f"]), []),
        (helper.make_node("MatMul", ["f", "wf"], ["logits"], name="head"), [_init("wf", (4, 5), rng)]),
    ]
    macs = node_macs(dynamic_model(tail=tail, rank=2), (("x", (1, 3, H, W)),))
    assert macs["logits"] == 4 * 5


def test_a_layer_behind_a_reshape_to_a_computed_batch_is_counted():
    """YOLO's detection head: Reshape(y, Concat(Unsqueeze(Gather(Shape(y), 0)), [4, -1])) then
    a Conv1d. Its shape follows only from the values of the shape computation (data
    propagation) at a concrete batch (the -1 depends on it): counted, not unknown."""
    rng = np.random.default_rng(5)
    tail = [
        (helper.make_node("Shape", ["y"], ["s"]), []),
        (helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
         [numpy_helper.from_array(np.array(0, np.int64), "zero")]),
        (helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]), [numpy_helper.from_array(np.array([0], np.int64), "axis0")]),
        (helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
         [numpy_helper.from_array(np.array([4, -1], np.int64), "rest")]),
        (helper.make_node("Reshape", ["y", "target"], ["r"]), []),
        (helper.make_node("Conv", ["r", "w3"], ["z"], name="conv1d"), [_init("w3", (2, 4, 1), rng)]),
    ]
    model = dynamic_model(tail=tail, rank=3)
    shapes = (("x", (1, 3, H, W)),)
    assert node_macs(model, shapes)["z"] == 2 * 4 * H * W
    assert model_cost(model, shapes).macs == MACS + 2 * 4 * H * W
