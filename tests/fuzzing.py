"""A seeded mutation fuzzer of the command line's promise (issue 12): bad input never gets
through and never reads as a crash.

Every case writes its files into a fresh folder (small models from builders.py and graphs.py,
mutated; data files; options) and runs `onnx_lbyl.cli.main(argv)` in-process, or the console
script in a subprocess for the Ctrl-C cases. `check` then holds the run to the promise:

  - exit code 0 or 2 (1, a failed validation, only where the case allows it; 130 on Ctrl-C);
  - on failure exactly one line on stderr, "onnx-lbyl: ...", no traceback, no "internal error";
    on success nothing on stderr but progress lines and "onnx-lbyl: warning:" lines (so no
    Python, numpy or onnxruntime warning gets through either);
  - every file that was there before is byte-identical after, and a failed run adds nothing;
    a successful one adds only the outputs it was asked for (no temporary file is left);
  - the same options give the same output bytes (for the cases marked `rerun`).

Cases are generated from (seed, index) alone (`generate`), so a violation is reproduced by
`python bench/fuzz.py --seed S --case I`. tests/test_fuzz.py runs a fast subset in CI;
bench/fuzz.py the long run.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graphs  # noqa: E402
from builders import chain_model, random_bn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models" / "resnet20_cifar10.onnx"
PROGRESS = re.compile(r"^\[(\d+/\d+|eval)\] ")


# ---------------------------------------------------------------------------------------
# Base models: small, valid, prunable


def chain_bn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return chain_model(rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((4, 8, 3, 3)),
                       b1=rng.normal(0, 0.1, 8), b2=rng.standard_normal(4), bn=random_bn(rng, 8))


def mlp(seed: int = 0, trans_b: int = 1, batch: int | str = "batch") -> onnx.ModelProto:
    """x [batch,3,2,2] -> Flatten -> Gemm fc1 -> Relu -> Gemm fc2 -> y [batch,5]: also a classifier for eval."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.standard_normal((8, 12)), rng.standard_normal((5, 8))
    if not trans_b:
        w1, w2 = w1.T, w2.T
    f32 = lambda a, n: numpy_helper.from_array(np.ascontiguousarray(a, dtype=np.float32), n)  # noqa: E731
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["h"], name="fc1", transB=trans_b),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "fc2.weight", "fc2.bias"], ["y"], name="fc2", transB=trans_b)]
    inits = [f32(w1, "fc1.weight"), f32(rng.normal(0, 0.1, 8), "fc1.bias"),
             f32(w2, "fc2.weight"), f32(rng.normal(0, 0.1, 5), "fc2.bias")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


BASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "chain_bn": chain_bn,
    "mlp": mlp,
    "mlp_fixed_batch": lambda: mlp(batch=4),
    "residual_basic_block": graphs.residual_basic_block,
    "inverted_residual": graphs.inverted_residual,
    "squeeze_excitation": graphs.squeeze_excitation,
    "concat_branches": graphs.concat_branches,
}
_BUILT: dict[str, bytes] = {}


def base(name: str) -> onnx.ModelProto:
    """A fresh copy of base model `name` (built once per process)."""
    if name not in _BUILT:
        _BUILT[name] = BASES[name]().SerializeToString()
    return onnx.load_from_string(_BUILT[name])


def input_info(model: onnx.ModelProto) -> tuple[str, list]:
    info = model.graph.input[0]
    return info.name, [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]


# ---------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    """One fuzz case: `make(folder)` writes its files and returns the argv (without the
    program name). `codes` are the exit codes that keep the promise; `outputs` the files a
    successful run may add; `rerun` asks for a second run whose output must be byte-identical."""

    family: str
    name: str
    make: Callable[[Path], list[str]]
    codes: frozenset = frozenset({0, 2})
    outputs: tuple[str, ...] = ("out.onnx", "report.json", "eval.json")
    rerun: bool = False
    sigint_after: float | None = None  # seconds: run the console script and interrupt it
    index: int = -1


def _pick(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _compress_argv(folder: Path, model: str = "in.onnx", extra=(), quiet: bool = True) -> list[str]:
    return [str(folder / model), str(folder / "out.onnx"), *(["-q"] if quiet else []), *map(str, extra)]


def _float_inits(model: onnx.ModelProto, min_size: int = 1) -> list[onnx.TensorProto]:
    return [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and np.prod(t.dims) >= min_size]


def _layer_params(model: onnx.ModelProto, ops=("Conv", "Gemm", "MatMul", "BatchNormalization")):
    """(node, slot, initializer) of every constant parameter of a layer or BN."""
    inits = {t.name: t for t in model.graph.initializer}
    return [(node, slot, inits[name]) for node in model.graph.node if node.op_type in ops
            for slot, name in enumerate(node.input) if slot > 0 and name in inits]


def _set(tensor: onnx.TensorProto, array: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(np.asarray(array), tensor.name))


def _nodes(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op]


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    node.attribute.append(helper.make_attribute(name, value))


# --- byte flips and truncations of a valid model file -----------------------------------


def bytes_case(rng: np.random.Generator) -> Case:
    name = _pick(rng, BASES)
    data = bytearray(base(name).SerializeToString())
    kind = _pick(rng, ("flip", "flip", "truncate", "truncate", "zero_run", "append", "empty_prefix"))
    if kind == "flip":
        for position in rng.integers(0, len(data), int(rng.integers(1, 9))):
            data[position] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        data = data[: int(rng.integers(0, len(data)))]
    elif kind == "zero_run":
        start = int(rng.integers(0, len(data)))
        data[start:start + int(rng.integers(1, 64))] = bytes(min(64, len(data) - start))[: len(data[start:start + 64])]
    elif kind == "append":
        data += rng.integers(0, 256, int(rng.integers(1, 32))).astype(np.uint8).tobytes()
    else:
        data = rng.integers(0, 256, int(rng.integers(1, 16))).astype(np.uint8).tobytes() + data
    blob = bytes(data)

    def make(folder: Path) -> list[str]:
        (folder / "in.onnx").write_bytes(blob)
        return _compress_argv(folder)

    return Case("bytes", f"{kind} of {name}", make)


# --- structural mutations of valid models -----------------------------------------------


def _nan_weight(model, rng):
    tensor = _pick(rng, _float_inits(model))
    values = numpy_helper.to_array(tensor).copy()
    values.flat[int(rng.integers(values.size))] = _pick(rng, (np.nan, np.inf, -np.inf))
    _set(tensor, values)
    return f"non-finite value in {tensor.name}"


def _wrong_dims(model, rng):
    tensor = _pick(rng, _float_inits(model, 2))
    axis = int(rng.integers(len(tensor.dims)))
    tensor.dims[axis] = max(1, tensor.dims[axis] + int(_pick(rng, (-1, 1, 2))))
    return f"dims of {tensor.name} disagree with its data"


def _wrong_dtype(model, rng):
    node, slot, tensor = _pick(rng, _layer_params(model))
    dtype = _pick(rng, ("float64", "int8", "float16", "bfloat16", "string", "int64", "uint8"))
    values = numpy_helper.to_array(tensor)
    if dtype == "bfloat16":
        tensor.CopyFrom(helper.make_tensor(tensor.name, TensorProto.BFLOAT16, values.shape, values.flatten().tolist()))
    elif dtype == "string":
        tensor.CopyFrom(helper.make_tensor(tensor.name, TensorProto.STRING, values.shape, [b"w"] * values.size))
    else:
        _set(tensor, values.astype(dtype))
    return f"{tensor.name} ({node.op_type} input {slot}) as {dtype}"


def _bn_variance(model, rng):
    nodes = _nodes(model, "BatchNormalization")
    if not nodes:
        return None
    node = _pick(rng, nodes)
    var = next(t for t in model.graph.initializer if t.name == node.input[4])
    values = numpy_helper.to_array(var).copy()
    kind = _pick(rng, ("nan", "negative", "zero_eps0", "zero"))
    channel = int(rng.integers(values.size))
    values[channel] = {"nan": np.nan, "negative": -abs(rng.normal()) - 1e-3, "zero_eps0": 0.0, "zero": 0.0}[kind]
    _set(var, values)
    if kind == "zero_eps0":
        _set_attr(node, "epsilon", 0.0)
    return f"BN {node.name} variance {kind}"


def _wrong_length(model, rng):
    candidates = [(n, s, t) for n, s, t in _layer_params(model) if len(t.dims) == 1]
    if not candidates:
        return None
    node, slot, tensor = _pick(rng, candidates)
    values = numpy_helper.to_array(tensor)
    size = max(1, values.size + int(_pick(rng, (-1, 1, 3))))
    _set(tensor, np.resize(values, size))
    return f"{tensor.name} ({node.op_type} input {slot}) of length {size}"


def _training_mode(model, rng):
    nodes = _nodes(model, "BatchNormalization")
    if not nodes:
        return None
    node = _pick(rng, nodes)
    _set_attr(node, "training_mode", 1)
    return f"BN {node.name} training_mode=1"


def _dilation(model, rng):
    nodes = [n for n in _nodes(model, "Conv") if len(n.input) > 1]
    if not nodes:
        return None
    node = _pick(rng, nodes)
    weight = next((t for t in model.graph.initializer if t.name == node.input[1]), None)
    if weight is None or len(weight.dims) != 4:
        return None
    _set_attr(node, "dilations", [2, 2])
    keep_shape = bool(rng.integers(2))
    if keep_shape:  # pads grown so the output keeps its size
        k = weight.dims[2]
        _set_attr(node, "pads", [(k - 1)] * 4)
    return f"Conv {node.name} dilation 2" + (" (same size)" if keep_shape else "")


def _transposed_gemm(model, rng):
    nodes = [n for n in _nodes(model, "Gemm")]
    if not nodes:
        return None
    node = _pick(rng, nodes)
    weight = next(t for t in model.graph.initializer if t.name == node.input[1])
    _set(weight, numpy_helper.to_array(weight).T.copy())
    flip = bool(rng.integers(3))  # mostly the equivalent model, sometimes a wrong one
    if flip:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        _set_attr(node, "transB", 1 - trans_b)
    return f"Gemm {node.name} weight transposed" + (" and transB flipped" if flip else " only")


def _stale_value_info(model, rng):
    produced = [o for n in model.graph.node for o in n.output]
    name = _pick(rng, produced + [o.name for o in model.graph.output])
    shape = [int(d) for d in rng.integers(1, 9, int(rng.integers(1, 5)))]
    elem = _pick(rng, (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64))
    model.graph.value_info.append(helper.make_tensor_value_info(name, elem, shape))
    return f"stale value_info {name} {shape} type {elem}"


def _dangling_input(model, rng):
    node = _pick(rng, model.graph.node)
    slot = int(rng.integers(len(node.input)))
    node.input[slot] = "missing_tensor"
    return f"{node.name} input {slot} dangles"


def _drop_initializer(model, rng):
    tensor = _pick(rng, model.graph.initializer)
    model.graph.initializer.remove(tensor)
    return f"initializer {tensor.name} removed"


def _output_shape(model, rng):
    dims = model.graph.output[0].type.tensor_type.shape.dim
    axis = int(rng.integers(len(dims)))
    dims[axis].Clear()
    dims[axis].dim_value = int(rng.integers(2, 40))
    return f"output declared with dim {axis} = {dims[axis].dim_value}"


def _all_float64(model, rng):
    """A consistent float64 model (input, weights, output): supported or refused, not a crash."""
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            _set(tensor, numpy_helper.to_array(tensor).astype(np.float64))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.DOUBLE
    model.graph.ClearField("value_info")
    return "the whole model as float64"


def _opset(model, rng):
    model.opset_import[0].version = _pick(rng, (1, 5, 30, 999))
    return f"opset {model.opset_import[0].version}"


STRUCTURAL = {
    "non_finite_weight": _nan_weight, "wrong_dims": _wrong_dims, "wrong_dtype": _wrong_dtype,
    "bn_variance": _bn_variance, "wrong_length": _wrong_length, "training_mode": _training_mode,
    "dilation": _dilation, "transposed_gemm": _transposed_gemm, "stale_value_info": _stale_value_info,
    "dangling_input": _dangling_input, "drop_initializer": _drop_initializer, "output_shape": _output_shape,
    "float64_model": _all_float64, "opset": _opset,
}


def structure_case(rng: np.random.Generator) -> Case:
    for _ in range(50):
        kind = _pick(rng, STRUCTURAL)
        name = _pick(rng, BASES)
        model = base(name)
        what = STRUCTURAL[kind](model, rng)
        if what is not None:
            break
    extra = _pick(rng, ([], [], ["--method", "lbyl"], ["--scope", "chains"], ["--method", "prune"]))
    blob = model.SerializeToString()

    def make(folder: Path) -> list[str]:
        (folder / "in.onnx").write_bytes(blob)
        return _compress_argv(folder, extra=extra)

    return Case("structure", f"{kind}: {what} of {name} {' '.join(extra)}".strip(), make, rerun=bool(rng.integers(4) == 0))


# --- option abuse -----------------------------------------------------------------------

BAD_NUMBERS = ("nan", "inf", "-inf", "-1", "-0.1", "1.5", "1", "1e308", "-1e308", "1e-320", "0x10", "", " ", "abc",
               "99999999999999999999999", "-99999999999999999999999", "0", "3.0", "1/2")
OPTIONS = {
    "--ratio": BAD_NUMBERS + ("0", "0.5", "0.99"),
    "--seed": BAD_NUMBERS + ("7", "4294967296"),
    "--lambda1": BAD_NUMBERS + ("0", "1e6", "1e7"),
    "--lambda2": BAD_NUMBERS + ("0", "1e-30", "1e6"),
    "--round-to": BAD_NUMBERS + ("2", "1000000", "4"),
    "--target-macs": BAD_NUMBERS + ("0.5", "0.999", "1e-9"),
    "--layer-ratio": ("conv*=0.5", "*=nan", "*=2", "=0.5", "garbage", "*=", "fc1=0.9", "*=-0"),
    "--exclude": ("*", "conv1", "", "[", "fc*"),
    "--input-shape": ("x:1,3,6,6", "x:0,3,6,6", "x:-1", "x:", ":1", "y:1,3,6,6", "x:1,3,7,7", "x:1e9,3,6,6",
                      "x:1,3,100000,100000", "x:1,3,2,2", "x:4,3,2,2"),
    "--method": ("nope", "", "LBYL", "lbyl-auto", "lbyl-authors", "merge-mean", "moments"),
    "--criterion": ("nope", "random", "l1"),
    "--statistics": ("nope", "probe", "batchnorm"),
    "--scope": ("nope", "chains"),
    "--allocation": ("nope", "uniform"),
    "--calibration-fit": ("nope", "gaussian"),
    "--allow-approximate": ("nope", "maxpool", "relu6"),
    "--batch-size-typo": ("1",),
}


def option_case(rng: np.random.Generator) -> Case:
    name = _pick(rng, ("chain_bn", "mlp", "mlp_fixed_batch", "residual_basic_block", "inverted_residual"))
    extra: list[str] = []
    for _ in range(int(rng.integers(1, 4))):
        option = _pick(rng, OPTIONS)
        extra += [option, _pick(rng, OPTIONS[option])]
    blob = base(name).SerializeToString()

    def make(folder: Path) -> list[str]:
        (folder / "in.onnx").write_bytes(blob)
        return _compress_argv(folder, extra=extra)

    return Case("options", f"{name} {' '.join(repr(e) if not e or ' ' in e else e for e in extra)}", make,
                rerun=bool(rng.integers(3) == 0))


# --- calibration and validation-input files ----------------------------------------------


def _data_variants(rng: np.random.Generator, model: onnx.ModelProto, name: str, rows_default: int):
    """(description, writer(path)) of a calibration or inputs file for `model`."""
    input_name, dims = input_info(model)
    sample = [d or 1 for d in dims[1:]]
    rows = dims[0] or rows_default
    kind = _pick(rng, ("good", "truncated", "npy", "nan", "inf", "complex", "wrong_hw", "wrong_rank", "wrong_name",
                       "few_rows", "empty", "pickled", "text", "bool", "uint8", "float64", "string", "zero_rows",
                       "extra_arrays", "two_arrays_disagree"))
    good = rng.standard_normal((rows, *sample)).astype(np.float32)
    key = input_name if rng.integers(2) else "images"

    def write(path: Path) -> None:
        if kind == "good":
            np.savez(path, **{key: good})
        elif kind == "truncated":
            buffer = io.BytesIO()
            np.savez(buffer, **{key: good})
            blob = buffer.getvalue()
            path.write_bytes(blob[: int(rng.integers(1, len(blob)))])
        elif kind == "npy":
            with open(path, "wb") as handle:
                np.save(handle, good)
        elif kind in ("nan", "inf"):
            bad = good.copy()
            bad.flat[int(rng.integers(bad.size))] = np.nan if kind == "nan" else np.inf
            np.savez(path, **{key: bad})
        elif kind == "complex":
            np.savez(path, **{key: good + 1j * good})
        elif kind == "wrong_hw":
            np.savez(path, **{key: rng.standard_normal((rows, sample[0], sample[1] + 1, *sample[2:])).astype(np.float32)})
        elif kind == "wrong_rank":
            np.savez(path, **{key: good.reshape(rows, -1)})
        elif kind == "wrong_name":
            np.savez(path, a=good, b=good)
        elif kind == "few_rows":
            np.savez(path, **{key: good[: max(1, rows // 2 - 1)]})
        elif kind == "empty":
            np.savez(path)
        elif kind == "pickled":
            np.savez(path, **{key: np.array([{"a": 1}, None], dtype=object)})
        elif kind == "text":
            path.write_text("x,y\n1,2\n")
        elif kind == "bool":
            np.savez(path, **{key: good > 0})
        elif kind == "uint8":
            np.savez(path, **{key: rng.integers(0, 256, good.shape).astype(np.uint8)})
        elif kind == "float64":
            np.savez(path, **{key: good.astype(np.float64)})
        elif kind == "string":
            np.savez(path, **{key: np.array(["a", "b"])})
        elif kind == "zero_rows":
            np.savez(path, **{key: good[:0]})
        elif kind == "extra_arrays":
            np.savez(path, **{key: good, "other": good[:1]})
        else:
            np.savez(path, **{input_name: good, "images": good[:1]})

    return kind, write


def data_case(rng: np.random.Generator) -> Case:
    name = _pick(rng, ("chain_bn", "mlp", "mlp_fixed_batch", "residual_basic_block"))
    model = base(name)
    option = _pick(rng, ("--calibration", "--inputs"))
    kind, write = _data_variants(rng, model, name, 16 if option == "--calibration" else 4)
    blob = model.SerializeToString()
    method = _pick(rng, ([], ["--method", "moments"], ["--method", "lbyl"]))

    def make(folder: Path) -> list[str]:
        (folder / "in.onnx").write_bytes(blob)
        write(folder / "data.npz")
        return _compress_argv(folder, extra=[option, folder / "data.npz", *method])

    return Case("data", f"{option} {kind} for {name} {' '.join(method)}".strip(), make, rerun=kind == "good")


# --- eval data sets -----------------------------------------------------------------------


def eval_case(rng: np.random.Generator) -> Case:
    name = _pick(rng, ("mlp", "mlp_fixed_batch"))
    model = base(name)
    n = 12
    kind = _pick(rng, ("good", "label_out_of_range", "label_uint64_huge", "label_negative", "label_float",
                       "label_2d", "label_bool", "length_mismatch", "nan_images", "complex_images", "wrong_hw",
                       "npy", "truncated", "no_labels", "empty", "string_labels", "uint8_images", "nhwc",
                       "label_int8", "object_images"))
    images = rng.standard_normal((n, 3, 2, 2)).astype(np.float32)
    labels = rng.integers(0, 5, n)

    def write(path: Path) -> None:
        arrays = {"images": images, "labels": labels}
        if kind == "label_out_of_range":
            arrays["labels"] = labels + 5
        elif kind == "label_uint64_huge":
            arrays["labels"] = np.full(n, 2 ** 64 - 1 - int(rng.integers(3)), dtype=np.uint64)
        elif kind == "label_negative":
            arrays["labels"] = labels - 3
        elif kind == "label_float":
            arrays["labels"] = labels.astype(np.float32) + 0.5
        elif kind == "label_2d":
            arrays["labels"] = labels.reshape(n // 2, 2)
        elif kind == "label_bool":
            arrays["labels"] = labels > 2
        elif kind == "length_mismatch":
            arrays["labels"] = labels[: n - int(rng.integers(1, 5))]
        elif kind == "nan_images":
            bad = images.copy()
            bad.flat[int(rng.integers(bad.size))] = np.nan
            arrays["images"] = bad
        elif kind == "complex_images":
            arrays["images"] = images + 1j
        elif kind == "wrong_hw":
            arrays["images"] = rng.standard_normal((n, 3, 3, 2)).astype(np.float32)
        elif kind == "nhwc":
            arrays["images"] = images.transpose(0, 2, 3, 1).copy()
        elif kind == "no_labels":
            del arrays["labels"]
        elif kind == "empty":
            arrays = {"images": images[:0], "labels": labels[:0]}
        elif kind == "string_labels":
            arrays["labels"] = np.array([str(v) for v in labels])
        elif kind == "uint8_images":
            arrays["images"] = rng.integers(0, 256, images.shape).astype(np.uint8)
        elif kind == "label_int8":
            arrays["labels"] = labels.astype(np.int8)
        elif kind == "object_images":
            arrays["images"] = np.array([None] * n, dtype=object)
        if kind == "npy":
            with open(path, "wb") as handle:
                np.save(handle, images)
            return
        buffer = io.BytesIO()
        try:
            np.savez(buffer, **arrays)
        except ValueError:
            np.savez(buffer, images=images)
        blob = buffer.getvalue()
        if kind == "truncated":
            blob = blob[: int(rng.integers(1, len(blob)))]
        path.write_bytes(blob)

    extra = _pick(rng, ([], ["--batch-size", "5"], ["--batch-size", "0"], ["--json", "JSON"], ["--mean", "nan"],
                        ["--std", "0"], ["--scale", "1/0"], ["--compare", "in.onnx"], ["--batch-size", "-3"]))
    blob = model.SerializeToString()

    def make(folder: Path) -> list[str]:
        (folder / "in.onnx").write_bytes(blob)
        write(folder / "data.npz")
        args = [str(folder / a) if a in ("in.onnx",) else (str(folder / "eval.json") if a == "JSON" else a)
                for a in extra]
        return ["eval", str(folder / "in.onnx"), str(folder / "data.npz"), "-q", *args]

    return Case("eval", f"eval {kind} on {name} {' '.join(extra)}".strip(), make)


# --- Ctrl-C -------------------------------------------------------------------------------


def sigint_case(rng: np.random.Generator) -> Case:
    """The shipped ResNet-20 compressed by the console script, interrupted `delay` seconds after
    its imports began (_started): while it loads its libraries, or mid-run (a full run takes
    a few seconds), or not at all when it is done first (exit 0)."""
    delay = float(rng.uniform(0.0, 4.0))
    with_report = bool(rng.integers(2))

    def make(folder: Path) -> list[str]:
        (folder / "in.onnx").write_bytes(SHIPPED.read_bytes())
        extra = ["--report", str(folder / "report.json")] if with_report else []
        return _compress_argv(folder, extra=["--ratio", "0.3", *extra])

    return Case("sigint", f"SIGINT after {delay:.2f} s{' (with --report)' if with_report else ''}", make,
                codes=frozenset({0, 130}), sigint_after=delay)


FAMILIES: dict[str, Callable[[np.random.Generator], Case]] = {
    "bytes": bytes_case, "structure": structure_case, "options": option_case, "data": data_case,
    "eval": eval_case, "sigint": sigint_case,
}
# how often each family comes up, out of sum(WEIGHTS.values()) consecutive cases
WEIGHTS = {"bytes": 3, "structure": 6, "options": 4, "data": 4, "eval": 3, "sigint": 0}


def generate(seed: int, count: int, families=None, sigint: int = 0) -> list[Case]:
    """`count` cases drawn from (seed, index) alone, families in the proportions of WEIGHTS;
    then `sigint` Ctrl-C cases."""
    order = [f for f, w in WEIGHTS.items() for _ in range(w) if families is None or f in families]
    cases = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        case = FAMILIES[order[index % len(order)]](rng)
        case.index = index
        cases.append(case)
    for k in range(sigint):
        case = sigint_case(np.random.default_rng([seed, count + k]))
        case.index = count + k
        cases.append(case)
    return cases


def case_at(seed: int, index: int, count: int) -> Case:
    """Case `index` of generate(seed, count, sigint=...) again (to reproduce a violation)."""
    if index >= count:
        case = sigint_case(np.random.default_rng([seed, index]))
    else:
        order = [f for f, w in WEIGHTS.items() for _ in range(w)]
        case = FAMILIES[order[index % len(order)]](np.random.default_rng([seed, index]))
    case.index = index
    return case


# ---------------------------------------------------------------------------------------
# Running and checking


@dataclass
class Outcome:
    case: Case
    code: int
    stderr: str
    seconds: float
    violations: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _captured():
    """stdout/stderr of an in-process run, both Python's and the file descriptors' (where
    onnxruntime's C++ log writes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as raw_err, tempfile.TemporaryFile() as raw_out:
        saved = os.dup(2), os.dup(1)
        os.dup2(raw_err.fileno(), 2)
        os.dup2(raw_out.fileno(), 1)
        out, err = io.StringIO(), io.StringIO()
        result = {}
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield result
        finally:
            os.dup2(saved[0], 2)
            os.dup2(saved[1], 1)
            os.close(saved[0])
            os.close(saved[1])
            raw_err.seek(0)
            result["stderr"] = err.getvalue() + raw_err.read().decode(errors="replace")
            result["stdout"] = out.getvalue()


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _run_in_process(argv: list[str]) -> tuple[int, str]:
    from onnx_lbyl.cli import main

    with _captured() as captured:
        code = main(argv)
    return code, captured["stderr"]


def _run_interrupted(argv: list[str], delay: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    process = subprocess.Popen([sys.executable, "-m", "onnx_lbyl", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    _started(process)
    try:
        _out, err = process.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=120)
    return process.returncode, err.decode(errors="replace")


def _started(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Wait until the program itself runs: a Ctrl-C while the interpreter is still starting
    (importing `site`, before any line of the tool has run) is Python's to report, not the
    tool's. NumPy's compiled core being mapped (Linux /proc) says the tool's imports have begun."""
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if "_multiarray_umath" in maps.read_text():
                return
        except OSError:
            return  # not Linux, or gone: count the delay from the start
        time.sleep(0.005)


def check(case: Case, folder: Path) -> Outcome:
    """Run `case` in the empty `folder` and list every way the run broke the promise."""
    argv = case.make(folder)
    before = _snapshot(folder)
    started = time.perf_counter()
    if case.sigint_after is not None:
        code, stderr = _run_interrupted(argv, case.sigint_after)
    else:
        code, stderr = _run_in_process(argv)
    outcome = Outcome(case, code, stderr, time.perf_counter() - started)
    bad = outcome.violations
    if code not in case.codes:
        bad.append(f"exit code {code}, expected one of {sorted(case.codes)}")
    lines = [line for line in stderr.splitlines() if not PROGRESS.match(line)]
    if code != 0:
        if len(lines) != 1:
            bad.append(f"{len(lines)} lines on stderr, expected 1")
        if not lines or not lines[-1].startswith("onnx-lbyl: "):
            bad.append("stderr does not end with an onnx-lbyl: line")
    else:
        extra = [line for line in lines if not line.startswith("onnx-lbyl: warning: ")]
        if extra:
            bad.append(f"success printed {len(extra)} other line(s) on stderr: {extra[0][:120]!r}")
    for marker in ("Traceback", "internal error", "Warning:", "[W:onnxruntime", "[E:onnxruntime"):
        if marker in stderr:
            bad.append(f"stderr shows {marker!r}")
    after = _snapshot(folder)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    if changed:
        bad.append(f"input file(s) modified or removed: {', '.join(changed)}")
    added = sorted(set(after) - set(before))
    hidden = sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))
    if hidden:
        bad.append(f"temporary file(s) left: {', '.join(hidden)}")
    if code != 0 and added:
        bad.append(f"failed run left file(s): {', '.join(added)}")
    unexpected = [name for name in added if name not in case.outputs]
    if code == 0 and unexpected:
        bad.append(f"unexpected file(s) written: {', '.join(unexpected)}")
    if code == 0 and case.rerun and "out.onnx" in after and case.sigint_after is None:
        first = (folder / "out.onnx").read_bytes()
        for name in added:
            (folder / name).unlink()
        again, _ = _run_in_process(argv)
        if again != 0 or (folder / "out.onnx").read_bytes() != first:
            bad.append("the same options gave different output bytes" if again == 0 else f"rerun exited {again}")
    return outcome


def run_cases(cases: list[Case], workdir: Path | None = None, progress: Callable[[Outcome], None] | None = None
              ) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="lbyl-fuzz-", dir=workdir) as root:
        for case in cases:
            folder = Path(root) / f"case{case.index:05d}"
            folder.mkdir()
            outcome = check(case, folder)
            outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    return outcomes
