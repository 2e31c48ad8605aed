"""Bad input never gets through and never reads as a crash (issue 12, parts 3 and 4).

One test per case a user's fuzzer found: each asserts the exit code, the one line on stderr
(and what it says), and, through fuzzing.check, the rest of the promise: no traceback, no
warning, no file added or changed, no temporary file left.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fuzzing
from fuzzing import Case, chain_bn, mlp
from onnx_lbyl.cli import main


def _outcome(tmp_path: Path, model: onnx.ModelProto | None, extra=(), files=None, command=None,
             codes=frozenset({0, 1, 2, 130})):
    """Run the CLI on `model` (saved as in.onnx) with `extra` options; `files` maps names to
    writers(path) of more input files. Returns the fuzzing.Outcome (its violations are checked
    against the promise; the exit code is the caller's to assert)."""
    def make(folder: Path) -> list[str]:
        if model is not None:
            onnx.save(model, str(folder / "in.onnx"))
        for name, write in (files or {}).items():
            write(folder / name)
        names = {"in.onnx", "report.json", "eval.json", *(files or {})}
        args = [str(folder / a) if a in names else str(a) for a in extra]
        if command == "eval":
            return ["eval", str(folder / "in.onnx"), *args]
        return fuzzing._compress_argv(folder, extra=args)

    outcome = fuzzing.check(Case("test", "test", make, codes=codes), tmp_path)
    assert not outcome.violations, (outcome.violations, outcome.stderr)
    return outcome


def refused(tmp_path, model, *texts, extra=(), files=None, command=None, code=2):
    outcome = _outcome(tmp_path, model, extra, files, command)
    assert outcome.code == code, outcome.stderr
    for text in texts:
        assert text in outcome.stderr, outcome.stderr
    return outcome.stderr.strip()


def accepted(tmp_path, model, extra=(), files=None, command=None):
    outcome = _outcome(tmp_path, model, extra, files, command)
    assert outcome.code == 0, outcome.stderr
    return outcome


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _values(model, name) -> np.ndarray:
    return numpy_helper.to_array(_init(model, name)).copy()


def _set(model, name, values) -> onnx.ModelProto:
    _init(model, name).CopyFrom(numpy_helper.from_array(np.asarray(values), name))
    return model


def _bn(model) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "BatchNormalization")


def _with(model, name, index, value):
    values = _values(model, name)
    values.flat[index] = value
    return _set(model, name, values)


# --- weights: NaN, Inf, inconsistent -------------------------------------------------------


@pytest.mark.parametrize("value, text", [(np.nan, "holds NaN"), (np.inf, "holds an infinite value"),
                                         (-np.inf, "holds an infinite value")])
def test_non_finite_weights(tmp_path, value, text):
    refused(tmp_path, _with(chain_bn(), "w1", 5, value), "initializer 'w1'", text)


def test_nan_in_gemm_bias(tmp_path):
    refused(tmp_path, _with(mlp(), "fc2.bias", 0, np.nan), "initializer 'fc2.bias' holds NaN")


def test_nan_batchnorm_variance(tmp_path):
    refused(tmp_path, _with(chain_bn(), "bn_var", 2, np.nan), "initializer 'bn_var' holds NaN")


def test_negative_batchnorm_variance(tmp_path):
    refused(tmp_path, _with(chain_bn(), "bn_var", 3, -0.5), "BatchNormalization 'bn1' has a negative running variance",
            "channel 3")


def test_zero_variance_with_epsilon_zero(tmp_path):
    model = _with(chain_bn(), "bn_var", 1, 0.0)
    fuzzing._set_attr(_bn(model), "epsilon", 0.0)
    refused(tmp_path, model, "zero running variance in channel 1 with epsilon 0")


def test_zero_variance_with_epsilon_is_fine(tmp_path):
    accepted(tmp_path, _with(chain_bn(), "bn_var", 1, 0.0))


def test_initializer_dims_disagree_with_data(tmp_path):
    model = chain_bn()
    _init(model, "w1").dims[0] = 7
    refused(tmp_path, model, "initializer 'w1': its dims [7, 3, 3, 3] need")


def test_initializer_typed_data_too_short(tmp_path):
    model = chain_bn()
    tensor = _init(model, "w2")
    tensor.ClearField("raw_data")
    tensor.float_data.extend(np.ones(4 * 8 * 9 - 5).tolist())
    refused(tmp_path, model, "w2", "(283) is too small for the declared shape")


def test_conv_bias_of_wrong_length(tmp_path):
    refused(tmp_path, _set(chain_bn(), "b2", np.ones(3, np.float32)),
            "Conv 'conv2': its bias 'b2' has shape [3] but its weight 'w2' has 4 output channels")


def test_gemm_bias_of_wrong_length(tmp_path):
    refused(tmp_path, _set(mlp(), "fc2.bias", np.ones(4, np.float32)), "Gemm 'fc2': its bias 'fc2.bias' has shape [4]")


@pytest.mark.parametrize("key", ["gamma", "beta", "mean", "var"])
def test_batchnorm_parameter_of_wrong_length(tmp_path, key):
    refused(tmp_path, _set(chain_bn(), f"bn_{key}", np.ones(7, np.float32)),
            "BatchNormalization 'bn1': its parameters disagree in length", " 7")


# --- weight dtypes, BN training mode: refused before work; dilation, transposed Gemm: handled ---


@pytest.mark.parametrize("dtype", ["float64", "float16", "int8", "uint8", "int64"])
def test_weight_of_another_dtype(tmp_path, dtype):
    model = chain_bn()
    _set(model, "w1", _values(model, "w1").astype(dtype))
    kind = "only float weights can be pruned" if dtype.startswith(("int", "uint")) else "mixed-precision weights"
    refused(tmp_path, model, f"Conv 'conv1': its parameter 'w1' is {dtype}", kind)


def test_bfloat16_weight(tmp_path):
    model = chain_bn()
    values = _values(model, "w2")
    _init(model, "w2").CopyFrom(helper.make_tensor("w2", TensorProto.BFLOAT16, values.shape, values.flatten().tolist()))
    refused(tmp_path, model, "its parameter 'w2' is bfloat16 but its input is float32")


def test_string_weight(tmp_path):
    model = chain_bn()
    _init(model, "w1").CopyFrom(helper.make_tensor("w1", TensorProto.STRING, [1], [b"abc"]))
    refused(tmp_path, model, "its parameter 'w1' is string; only float weights can be pruned")


def test_float64_batchnorm_statistics(tmp_path):
    model = chain_bn()
    _set(model, "bn_gamma", _values(model, "bn_gamma").astype(np.float64))
    refused(tmp_path, model, "BatchNormalization 'bn1': its parameter 'bn_gamma' is float64 but its input is float32")


def test_batchnorm_training_mode(tmp_path):
    model = chain_bn()
    fuzzing._set_attr(_bn(model), "training_mode", 1)
    refused(tmp_path, model, "BatchNormalization 'bn1' has training_mode=1: export the model in inference (eval) mode")


@pytest.mark.parametrize("node", [0, 3])
def test_dilation_2_is_pruned(tmp_path, node):
    """A dilated Conv prunes like any other: dilation only spaces the kernel taps."""
    model = chain_bn()
    conv = model.graph.node[node]
    fuzzing._set_attr(conv, "dilations", [2, 2])
    fuzzing._set_attr(conv, "pads", [2, 2, 2, 2])
    onnx.checker.check_model(model, full_check=True)
    outcome = accepted(tmp_path, model, extra=["--report", "report.json"])
    assert (tmp_path / "out.onnx").exists(), outcome.stderr


def test_dilation_that_changes_the_output_size_is_refused(tmp_path):
    model = chain_bn()
    fuzzing._set_attr(model.graph.node[0], "dilations", [2, 2])  # pads kept: the declared output no longer fits
    refused(tmp_path, model, "input model is inconsistent: ONNX shape inference fails")


def test_transposed_gemm_weight_is_pruned(tmp_path):
    """W stored as [in, out] with transB=0 instead of [out, in] with transB=1: the same layer."""
    for trans_b in (0, 1):
        folder = tmp_path / str(trans_b)
        folder.mkdir()
        accepted(folder, mlp(trans_b=trans_b))
    flipped = mlp()
    _set(flipped, "fc1.weight", _values(flipped, "fc1.weight").T.copy())
    fuzzing._set_attr(flipped.graph.node[1], "transB", 0)
    folder = tmp_path / "flipped"
    folder.mkdir()
    accepted(folder, flipped)


def test_transposed_gemm_weight_without_transb_is_refused(tmp_path):
    model = mlp()
    _set(model, "fc1.weight", _values(model, "fc1.weight").T.copy())  # [12, 8] read as [out, in]
    refused(tmp_path, model, "Gemm 'fc1'")


# --- stale value_info: repaired -----------------------------------------------------------


@pytest.mark.parametrize("name, elem, shape", [("u", TensorProto.FLOAT, ["batch", 5, 6, 6]),
                                               ("a", TensorProto.DOUBLE, [2, 8]),
                                               ("y", TensorProto.FLOAT, [1, 9])])
def test_stale_value_info_is_dropped(tmp_path, name, elem, shape):
    model = chain_bn()
    model.graph.value_info.append(helper.make_tensor_value_info(name, elem, shape))
    accepted(tmp_path, model)
    out = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(out, full_check=True)
    assert [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim][1] == 4


def test_declared_output_shape_that_contradicts_the_model(tmp_path):
    model = chain_bn()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 9
    refused(tmp_path, model, "input model is inconsistent", "(4) vs (9)")


def test_opset_newer_than_onnx(tmp_path):
    model = chain_bn()
    model.opset_import[0].version = 99
    refused(tmp_path, model, "model imports opset 99 of the default ONNX domain")


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value, text", [
    ("--seed", "-1", "seed must be a whole number in [0, 2^63), got -1"),
    ("--seed", str(2 ** 64), "seed must be a whole number"),
    ("--lambda1", "1e308", "lambda1 must be a number in [0, 1e+06], got 1e+308"),
    ("--lambda2", "1e308", "lambda2 must be a number in [0, 1e+06]"),
    ("--lambda1", "nan", "lambda1 must be"),
    ("--ratio", "1.5", "ratio must be a number in [0, 1)"),
    ("--ratio", "-0.1", "ratio must be a number in [0, 1)"),
    ("--ratio", "nan", "ratio must be a number in [0, 1)"),
    ("--method", "nope", "Invalid value for '--method'"),
])
def test_bad_option_values(tmp_path, option, value, text):
    refused(tmp_path, chain_bn(), text, extra=[option, value])


# --- calibration and validation inputs ----------------------------------------------------


def _npz(**arrays):
    return lambda path: np.savez(path, **arrays)


def _images(rows=16, size=6, dtype=np.float32):
    return np.random.default_rng(0).standard_normal((rows, 3, size, size)).astype(dtype)


def test_truncated_calibration_file(tmp_path):
    buffer = io.BytesIO()
    np.savez(buffer, x=_images())
    data = buffer.getvalue()
    refused(tmp_path, chain_bn(), "is truncated or corrupt",
            extra=["--calibration", "cal.npz"], files={"cal.npz": lambda p: p.write_bytes(data[: len(data) // 2])})


def test_npy_instead_of_npz(tmp_path):
    refused(tmp_path, chain_bn(), "is an .npy file (one array); save the arrays with numpy.savez",
            extra=["--calibration", "cal.npz"], files={"cal.npz": lambda p: np.save(open(p, "wb"), _images())})


def test_nan_calibration_images(tmp_path):
    images = _images()
    images[3, 1, 2, 2] = np.nan
    refused(tmp_path, chain_bn(), "calibration images hold NaN", extra=["--calibration", "cal.npz"],
            files={"cal.npz": _npz(images=images)})


def test_complex_calibration_images(tmp_path):
    refused(tmp_path, chain_bn(), "calibration images must be real integers or floats, got complex",
            extra=["--calibration", "cal.npz"], files={"cal.npz": _npz(images=_images() + 1j)})


def test_calibration_of_the_wrong_height_and_width(tmp_path):
    refused(tmp_path, chain_bn(), "calibration data: input 'x' is [batch, 3, 6, 6] but the array has shape [16, 3, 7, 7]",
            extra=["--calibration", "cal.npz"], files={"cal.npz": _npz(images=_images(size=7))})


def test_named_calibration_input_of_the_wrong_shape(tmp_path):
    refused(tmp_path, chain_bn(), "input 'x' is [batch, 3, 6, 6] but the array has shape [16, 3, 5, 5]",
            extra=["--calibration", "cal.npz"], files={"cal.npz": _npz(x=_images(size=5))})


def test_named_validation_input_of_the_wrong_shape(tmp_path):
    refused(tmp_path, chain_bn(), "inputs", "input 'x' is [batch, 3, 6, 6] but the array has shape [4, 3, 5, 5]",
            extra=["--inputs", "val.npz"], files={"val.npz": _npz(x=_images(4, size=5))})


def test_fixed_batch_with_too_few_calibration_images(tmp_path):
    model = chain_bn()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 32
    model.graph.output[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 32
    refused(tmp_path, model, "input 'x' has a fixed batch of 32", "needs at least 32 rows; got 3",
            extra=["--calibration", "cal.npz", "--method", "moments"], files={"cal.npz": _npz(images=_images(3))})


def test_validation_inputs_cast_to_the_input_type(tmp_path):
    accepted(tmp_path, chain_bn(), extra=["--inputs", "val.npz"], files={"val.npz": _npz(x=_images(4, dtype=np.float64))})


def test_good_calibration_still_works(tmp_path):
    accepted(tmp_path, chain_bn(), extra=["--calibration", "cal.npz", "--method", "moments"],
             files={"cal.npz": _npz(images=_images())})


# --- eval data sets -------------------------------------------------------------------------


def _eval_data(labels, images=None):
    images = np.random.default_rng(1).standard_normal((len(labels), 3, 2, 2)).astype(np.float32) if images is None else images
    return {"data.npz": _npz(images=images, labels=labels)}


def test_eval_uint64_labels_far_out_of_range(tmp_path):
    labels = np.full(6, 2 ** 64 - 1, dtype=np.uint64)
    refused(tmp_path, mlp(), f"label {2 ** 64 - 1} in", "is out of range", extra=["data.npz"],
            files=_eval_data(labels), command="eval")


def test_eval_labels_out_of_range(tmp_path):
    refused(tmp_path, mlp(), "label 9", "out of range for a model with 5 outputs", extra=["data.npz"],
            files=_eval_data(np.array([0, 1, 9, 2])), command="eval")


def test_eval_labels_of_the_wrong_dtype_or_length(tmp_path):
    refused(tmp_path, mlp(), "must be a 1-D integer array", extra=["data.npz"],
            files=_eval_data(np.array([0.5, 1.0, 2.0])), command="eval")
    (tmp_path / "data.npz").unlink()
    (tmp_path / "in.onnx").unlink()
    images = np.zeros((4, 3, 2, 2), np.float32)
    refused(tmp_path, mlp(), "has 4 images but 3 labels", extra=["data.npz"],
            files=_eval_data(np.array([0, 1, 2]), images), command="eval")


def test_eval_good_data(tmp_path):
    accepted(tmp_path, mlp(), extra=["data.npz", "-q"], files=_eval_data(np.array([0, 1, 2, 3, 4])), command="eval")


# --- third-party output, --verbose, Ctrl-C -------------------------------------------------------


def test_warnings_stay_off_stderr_unless_verbose(tmp_path, monkeypatch, capsys):
    """A warning raised during the run (numpy's RuntimeWarning, say) shows only with --verbose,
    and an internal error's traceback too."""
    from onnx_lbyl import pipeline

    def noisy(*args, **kwargs):
        np.float32(1e38) * np.float32(1e38)  # RuntimeWarning: overflow
        warnings.warn("a third-party warning")
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipeline, "canonicalise", noisy)
    # pytest records warnings instead of printing them: print them as Python does outside pytest
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line)))
    onnx.save(chain_bn(), str(tmp_path / "in.onnx"))
    argv = [str(tmp_path / "in.onnx"), str(tmp_path / "out.onnx"), "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == "onnx-lbyl: internal error (RuntimeError): a bug\n"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main([*argv, "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "a third-party warning" in err and "RuntimeWarning" in err and "Traceback" in err
    assert err.strip().splitlines()[-1] == "onnx-lbyl: internal error (RuntimeError): a bug"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_interrupt_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Ctrl-C (here raised where main's SIGINT handler raises it) while the output's temporary
    file is being written: exit 130, one line, no temporary or output file."""
    from onnx_lbyl import cli
    from onnx_lbyl.graph import io as graph_io

    def interrupted(fd):
        raise cli.Interrupted()

    monkeypatch.setattr(graph_io.os, "fsync", interrupted)
    onnx.save(chain_bn(), str(tmp_path / "in.onnx"))
    assert main([str(tmp_path / "in.onnx"), str(tmp_path / "out.onnx"), "-q", "--report", str(tmp_path / "r.json")]) == 130
    assert capsys.readouterr().err == "onnx-lbyl: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_sigint_mid_run(tmp_path, delay):
    """The console script interrupted while it loads its libraries (0 s after NumPy's core is
    loaded) and mid-run."""
    case = fuzzing.sigint_case(np.random.default_rng(0))
    case.sigint_after = delay
    outcome = fuzzing.check(case, tmp_path)
    assert not outcome.violations, (outcome.violations, outcome.stderr)
    if outcome.code == 130:
        assert outcome.stderr == "onnx-lbyl: interrupted\n"


def test_api_refuses_the_same_and_never_modifies_the_given_model():
    from onnx_lbyl import CompressOptions, InputError, compress

    model = chain_bn()
    model.graph.value_info.append(helper.make_tensor_value_info("a", TensorProto.DOUBLE, [2, 8]))
    before = model.SerializeToString()
    result = compress(model, CompressOptions(ratio=0.3))
    assert result.report.validation.runtime and model.SerializeToString() == before
    with pytest.raises(InputError, match="holds NaN"):
        compress(_with(chain_bn(), "w2", 0, np.nan))


def test_interrupt_that_surfaces_as_another_exception(tmp_path, monkeypatch, capsys):
    """A Ctrl-C inside a C extension's import can come out as ImportError('initialization
    failed') (the fuzzer's finding): once SIGINT arrived, any failure reads as the interrupt."""
    from onnx_lbyl import cli

    def interrupted_import(verbose):
        cli._interrupted[0] = True  # what _on_sigint records before raising
        raise ImportError("initialization failed")

    monkeypatch.setattr(cli, "_third_party_output", interrupted_import)
    onnx.save(chain_bn(), str(tmp_path / "in.onnx"))
    assert main([str(tmp_path / "in.onnx"), str(tmp_path / "out.onnx"), "-q"]) == 130
    assert capsys.readouterr().err == "onnx-lbyl: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]
