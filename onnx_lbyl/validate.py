"""The checks every pruned model passes before it is written, and how far its outputs moved.

onnx.checker (full check), strict shape inference, an onnxruntime session that loads and runs
a batch, and a comparison of its outputs with the original model's on the same batch. The
batch is random (seeded, so reports are reproducible) in the model's declared input shapes,
unless the user gives real inputs in an .npz file.

Cost matters on large models: the pruned model is serialised once, and those bytes serve
both the checker (whose full check *is* strict, type-checked shape inference, so it is not
run a second time) and onnxruntime. Each session is dropped as soon as it has run, so only
one model is loaded in onnxruntime at a time.

A model too large for one protobuf (graph.external) is checked and run from a file written
with external data instead: the caller passes its path, and no serialisation is made here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .errors import InputError, ValidationError, first_line
from .graph.input_shapes import declared_dims, dynamic_error, needs_shape, real_inputs, shaped_inputs

DEFAULT_BATCH = 8
# Relative L2 drift of an output above which a run without --max-drift warns: the outputs moved
# by three quarters of their own size on the validation batch. Set on the development ResNet-20
# (block-internal chains at --ratio 0.1/0.2/0.3): synthetic-image drift 0.39/0.62/0.78, which on
# 512 real test images was 0.26/0.42/0.60 with top-1 2/5/13 points down. Synthetic images read
# higher than real ones; a drift this large on them means points of accuracy lost.
DRIFT_WARNING = 0.75
_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


@dataclass
class OutputComparison:
    """How one output of the pruned model differs from the original's on the batch."""

    name: str
    relative_l2_error: float
    max_abs_error: float
    top1_agreement: float | None = None  # only for outputs shaped like class scores


@dataclass
class ValidationResult:
    checker: bool = False
    shape_inference: bool = False
    runtime: bool = False
    batch: int = 0
    inputs: str = "random"
    outputs: list[OutputComparison] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # of the inputs the batch fed


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (old models also list initializers as inputs)."""
    return real_inputs(model)


def random_inputs(model: onnx.ModelProto, batch: int = DEFAULT_BATCH, seed: int = 0,
                  shapes: Iterable[tuple[str, Sequence[int]]] = ()) -> dict[str, np.ndarray]:
    """A seeded random batch in the declared shapes, with `shapes` ((name, dims) pairs, as in
    CompressOptions.input_shapes) filling the dimensions the model leaves dynamic: a dynamic
    first (batch) dimension gets `batch` rows. A dynamic dimension past the batch that no
    shape fills is refused (InputError naming --input-shape), never guessed. Floats are
    standard normal."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in shaped_inputs(model, tuple((name, tuple(dims)) for name, dims in shapes)):
        tt = info.type.tensor_type
        dtype = _ONNX_TO_NUMPY.get(tt.elem_type)
        if dtype is None:
            raise InputError(f"input {info.name!r} has an element type this tool cannot feed; pass --inputs")
        if needs_shape(info):
            raise dynamic_error(info)
        dims = [batch if d is None else d for d in declared_dims(info) or []]
        if np.issubdtype(dtype, np.floating):
            feeds[info.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype is np.bool_:
            feeds[info.name] = rng.integers(0, 2, dims).astype(dtype)
        else:
            feeds[info.name] = np.zeros(dims, dtype=dtype)
    return feeds


def load_inputs(path: str | os.PathLike, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Inputs from an .npz keyed by input name (a single-input model may use any key)."""
    from .arrays import check_feeds, read_npz  # imports this module's neighbours

    arrays = read_npz(path, "inputs")
    names = [i.name for i in model_inputs(model)]
    if all(n in arrays for n in names):
        feeds = {n: arrays[n] for n in names}
    elif len(names) == 1 and len(arrays) >= 1:
        key = "images" if "images" in arrays else next(iter(arrays))
        feeds = {names[0]: arrays[key]}
    else:
        raise InputError(f"{path} must hold arrays named {', '.join(names)}")
    check_feeds(model, feeds, f"inputs {path}")
    return _as_input_types(model, feeds)


def _as_input_types(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Real numbers cast to the element type the model declares (float64 arrays for a float
    input, say), as onnxruntime takes no other."""
    types = {i.name: _ONNX_TO_NUMPY.get(i.type.tensor_type.elem_type) for i in model_inputs(model)}
    return {n: v if types.get(n) is None else np.ascontiguousarray(v.astype(types[n], copy=False))
            for n, v in feeds.items()}


def session(model: onnx.ModelProto | bytes | str | os.PathLike, **session_options) -> ort.InferenceSession:
    """An onnxruntime CPU session of `model` (a ModelProto, its serialised bytes, or the path
    of a file, which onnxruntime reads with its external data).

    `session_options` set attributes of ort.SessionOptions (e.g. intra_op_num_threads=1).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for name, value in session_options.items():
        setattr(options, name, value)
    if isinstance(model, onnx.ModelProto):
        data: bytes | str = model.SerializeToString()
    else:
        data = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | bytes | str | os.PathLike, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of one onnxruntime run; the session is freed on return."""
    return session(model).run(None, feeds)


def validate(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    inputs_label: str = "random",
    expect_identical: bool = False,
    original_path: str | os.PathLike | None = None,
    pruned_path: str | os.PathLike | None = None,
) -> ValidationResult:
    """Raise ValidationError unless `pruned` passes every check; return the comparison.

    `original_path` and `pruned_path`, files holding the same models (with external data
    for large ones), make the checker and onnxruntime read those files instead of a
    serialisation of the models in memory."""
    result = ValidationResult(inputs=inputs_label)
    # serialised once, for the checker and for onnxruntime; a path is read by both instead
    data: bytes | str = pruned.SerializeToString() if pruned_path is None else os.fspath(pruned_path)
    try:
        # full_check runs shape inference with check_type=True in strict mode, exactly what
        # infer_shapes(pruned, check_type=True, strict_mode=True) does, on the C++ side
        onnx.checker.check_model(data, full_check=True)
        result.checker = result.shape_inference = True
    except Exception as exc:
        raise ValidationError(f"pruned model failed the ONNX checks: {first_line(exc)}")
    try:
        before = run(original if original_path is None else original_path, feeds)
    except Exception as exc:
        raise InputError(f"the original model does not run on the validation batch: {first_line(exc)}")
    for output, values in zip(original.graph.output, before):
        if np.issubdtype(np.asarray(values).dtype, np.floating) and not np.all(np.isfinite(values)):
            raise InputError(f"output {output.name!r} of the original model is not finite on the validation batch")
    try:
        pruned_session = session(data)
        del data  # onnxruntime holds its own copy now
        after = pruned_session.run(None, feeds)
        del pruned_session
        result.runtime = True
    except Exception as exc:
        raise ValidationError(f"pruned model does not run in onnxruntime: {first_line(exc)}")
    result.batch = int(next(iter(feeds.values())).shape[0]) if feeds else 0
    result.shapes = {name: [int(d) for d in np.shape(value)] for name, value in feeds.items()}
    names = [o.name for o in original.graph.output]
    for name, a, b in zip(names, before, after):
        if a.shape != b.shape:
            raise ValidationError(f"output {name!r} changed shape from {a.shape} to {b.shape}")
        if not np.all(np.isfinite(b)):
            raise ValidationError(f"output {name!r} of the pruned model is not finite")
        result.outputs.append(compare_outputs(name, a, b))
    if expect_identical and not all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(before, after)):
        raise ValidationError("nothing was removed, yet the outputs changed")
    return result


def check_drift(result: ValidationResult, max_drift: float | None) -> list[str]:
    """Raise ValidationError when an output drifted more than `max_drift` (relative L2 on the
    validation batch); without a limit, a warning for each output that drifted more than
    DRIFT_WARNING. The drift is measured where the summary says (result.inputs)."""
    where = f"on {result.batch} {result.inputs} sample(s)"
    worst = max(result.outputs, key=lambda out: out.relative_l2_error, default=None)
    if worst is None:
        return []
    if max_drift is not None:
        if worst.relative_l2_error > max_drift:
            raise ValidationError(f"output {worst.name!r} drifted {worst.relative_l2_error:.4f} (relative L2 {where}), "
                                  f"above --max-drift {max_drift:g}; nothing written")
        return []
    return [f"output {out.name!r} drifted {out.relative_l2_error:.4f} (relative L2 {where}), above "
            f"{DRIFT_WARNING:g}: check its accuracy, or prune less (--max-drift X makes this an error)"
            for out in result.outputs if out.relative_l2_error > DRIFT_WARNING]


def compare_outputs(name: str, original: np.ndarray, pruned: np.ndarray) -> OutputComparison:
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(pruned, dtype=np.float64)
    norm = np.linalg.norm(a)
    rel = float(np.linalg.norm(a - b) / norm) if norm > 0 else float(np.linalg.norm(a - b))
    top1 = None
    if a.ndim == 2 and a.shape[1] > 1:
        top1 = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    return OutputComparison(name, rel, float(np.max(np.abs(a - b))) if a.size else 0.0, top1)

