"""The input shapes a compression runs at, for models whose inputs have dynamic dimensions.

A user states them as `--input-shape NAME:d0,d1,...` (repeatable; the form onnxsim and
onnxslim take), or through CompressOptions.input_shapes: a tuple of (name, dims) pairs.
The first dimension is the batch: when the model declares it dynamic it stays dynamic
(the probe, the validation batch and the latency benchmark choose their own number of
rows; MACs are per sample), so its value there only fills the place. Every other
dimension the model leaves dynamic gets the stated value; dimensions the model fixes must
be stated as they are.

Without a stated shape, a dynamic non-batch dimension is taken from the calibration data
(the shape of its array), else the run is refused: a model is never probed, validated or
costed at a guessed size such as 1x1.
"""
from __future__ import annotations

import os
import zipfile
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx

from ..errors import InputError

InputShapes = tuple[tuple[str, tuple[int, ...]], ...]
OPTION = "--input-shape"


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """'NAME:d0,d1,...' from the command line. The name is everything before the last colon,
    so tf2onnx names such as 'input_1:0' work ('input_1:0:1,224,224,3')."""
    name, sep, dims = text.rpartition(":")
    shape = _positive_dims(dims.split(",")) if sep and name else None
    if shape is None:
        raise InputError(f"{OPTION} must look like NAME:d0,d1,... with whole dimensions >= 1, got {text!r}")
    return name, shape


def normalise_input_shapes(shapes: Mapping[str, Sequence[int]] | Iterable[tuple[str, Sequence[int]]]) -> InputShapes:
    """(name, dims) pairs (or a dict) as a hashable tuple, or InputError naming the problem."""
    pairs = list(shapes.items()) if isinstance(shapes, Mapping) else list(shapes)
    result = []
    for pair in pairs:
        try:
            name, dims = pair
        except (TypeError, ValueError):
            raise InputError(f"input shapes must be (name, dims) pairs, got {pair!r}")
        shape = _positive_dims(dims) if isinstance(dims, (list, tuple)) else None
        if not isinstance(name, str) or not name or shape is None:
            raise InputError(f"input shape of {name!r} must be whole dimensions >= 1, got {dims!r}")
        if any(name == seen for seen, _ in result):
            raise InputError(f"{OPTION} gives input {name!r} twice")
        result.append((name, shape))
    return tuple(result)


def _positive_dims(values: Sequence) -> tuple[int, ...] | None:
    dims = []
    for value in values:
        if isinstance(value, str):
            value = value.strip()
            if not value.isdigit():
                return None
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            return None
        dims.append(int(value))
    return tuple(dims) or None


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (old models also list initializers as inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def declared_dims(info: onnx.ValueInfoProto) -> list[int | None] | None:
    """The declared dimensions, None for a dynamic one (a name, nothing, or a value < 1 such
    as the -1 some exporters write); None for an input without a declared shape."""
    tt = info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]


def describe_dims(info: onnx.ValueInfoProto) -> str:
    """'[batch, 3, ?, ?]': the declared dimensions as a user reads them."""
    tt = info.type.tensor_type
    parts = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            parts.append(str(d.dim_value))
        else:
            parts.append(d.dim_param if d.HasField("dim_param") and d.dim_param else "?")
    return "[" + ", ".join(parts) + "]"


def check_input_shapes(model: onnx.ModelProto, shapes: InputShapes) -> None:
    """Raise InputError unless every stated shape names a real input of `model`, has its
    declared rank and agrees with every dimension it fixes (a dynamic batch may differ)."""
    inputs = {i.name: i for i in real_inputs(model)}
    initializers = {t.name for t in model.graph.initializer}
    for name, dims in shapes:
        text = f"{OPTION} {name}:{','.join(map(str, dims))}"
        if name not in inputs:
            what = "an initializer" if name in initializers else "not an input"
            raise InputError(f"{text}: {name!r} is {what} of the model (inputs: {', '.join(inputs) or 'none'})")
        declared = declared_dims(inputs[name])
        if declared is None:
            continue  # no declared shape: any rank
        if len(dims) != len(declared):
            raise InputError(f"{text}: rank {len(dims)}, but input {name!r} has rank {len(declared)} "
                             f"{describe_dims(inputs[name])}")
        for axis, (given, fixed) in enumerate(zip(dims, declared)):
            if fixed is not None and given != fixed:
                raise InputError(f"{text}: dimension {axis} is {given}, but the model fixes it at {fixed} "
                                 f"{describe_dims(inputs[name])}")


def dynamic_error(info: onnx.ValueInfoProto) -> InputError:
    """The refusal for an input whose non-batch dimensions are dynamic and not stated."""
    declared = declared_dims(info) or []
    open_axes = [axis for axis, d in enumerate(declared) if d is None and axis > 0]
    letters = iter("HW") if len(declared) == 4 and len(open_axes) == 2 else None
    example = []
    for axis, d in enumerate(declared):
        if axis == 0 and d is None:
            example.append("1")
        elif d is not None:
            example.append(str(d))
        else:
            example.append(next(letters) if letters is not None else f"D{axis}")
    return InputError(f"input {info.name!r} has dynamic dimensions {describe_dims(info)}: give its shape with "
                      f"{OPTION} {info.name}:{','.join(example)}")


def needs_shape(info: onnx.ValueInfoProto) -> bool:
    """Whether a dimension past the batch is dynamic."""
    declared = declared_dims(info)
    return declared is not None and any(d is None for d in declared[1:])


def resolve_input_shapes(model: onnx.ModelProto, shapes: InputShapes = (), calibration=None) -> InputShapes:
    """The stated shapes, checked against `model`, completed for every input that still has a
    dynamic non-batch dimension: from the calibration data (CompressOptions.calibration: an
    .npz path or a dict of arrays) when given, else InputError naming the option.

    A model whose only dynamic dimension is the batch gets `shapes` back unchanged (() when
    none were stated). Stated shapes that disagree with the calibration data are refused:
    the statistics would be measured at one size and the model validated and costed at another.
    """
    shapes = normalise_input_shapes(shapes)
    check_input_shapes(model, shapes)
    stated = dict(shapes)
    missing = [info for info in real_inputs(model) if needs_shape(info) and info.name not in stated]
    if calibration is None or (not missing and not stated):
        if missing:
            raise dynamic_error(missing[0])
        return shapes
    found = calibration_shapes(model, calibration)
    for name, dims in stated.items():
        if name in found and tuple(found[name][1:]) != tuple(dims[1:]):
            raise InputError(f"{OPTION} {name}:{','.join(map(str, dims))} disagrees with the calibration data, "
                             f"whose {name!r} samples are {'x'.join(map(str, found[name][1:]))}")
    added = []
    for info in missing:
        if info.name not in found:
            raise dynamic_error(info)
        dims = tuple(int(d) for d in found[info.name])
        declared = declared_dims(info)
        if declared[0] is None:
            dims = (1, *dims[1:])  # the batch stays dynamic; the calibration's count is not a shape
        added.append((info.name, dims))
    result = shapes + tuple(added)
    check_input_shapes(model, result)  # calibration arrays of the wrong rank or fixed dims
    return result


def calibration_shapes(model: onnx.ModelProto, calibration) -> dict[str, tuple[int, ...]]:
    """The shape of the array each model input takes from calibration data, matched as
    sources.calibration_feeds matches them (arrays named like the inputs, else a single-input
    model's `images` or only array; preprocessing keeps the shape). An .npz file is read only
    as far as its array headers."""
    if isinstance(calibration, Mapping):
        arrays = {k: tuple(np.shape(v)) for k, v in calibration.items()}
    else:
        arrays = _npz_shapes(calibration)
    names = [i.name for i in real_inputs(model)]
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(names) == 1 and arrays:
        return {names[0]: arrays["images"] if "images" in arrays else next(iter(arrays.values()))}
    return {n: arrays[n] for n in names if n in arrays}


def _npz_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    try:
        with zipfile.ZipFile(path) as archive:
            shapes = {}
            for entry in archive.namelist():
                if not entry.endswith(".npy"):
                    continue
                with archive.open(entry) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape = np.lib.format.read_array_header_1_0(handle)[0]
                    elif version == (2, 0):
                        shape = np.lib.format.read_array_header_2_0(handle)[0]
                    else:  # a newer header: read the array itself
                        shape = np.load(handle).shape
                shapes[entry[: -len(".npy")]] = tuple(shape)
            return shapes
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read calibration data from {path}: {exc}")


def shaped_inputs(model: onnx.ModelProto, shapes: InputShapes = ()) -> list[onnx.ValueInfoProto]:
    """Copies of the model's real inputs with the stated dimensions made static. A batch the
    model declares dynamic stays dynamic, and so does anything not stated; an input without a
    declared shape gets the stated one. The one place stated shapes meet the declarations: the
    costs (graph.cost) and the probe and validation inputs (validate.random_inputs) use it."""
    stated = dict(shapes)
    result = []
    for info in real_inputs(model):
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        dims = stated.get(info.name)
        if dims is not None:
            tt = copy.type.tensor_type
            declared = declared_dims(info)
            if declared is None:  # no declared shape: the stated rank, the batch left open
                tt.shape.Clear()
                for _ in dims:
                    tt.shape.dim.add()
                tt.shape.dim[0].dim_param = "batch"
                declared = [None] * len(dims)
            for axis, (dim, value) in enumerate(zip(tt.shape.dim, dims)):
                if declared[axis] is None and axis > 0:
                    dim.Clear()
                    dim.dim_value = value
        result.append(copy)
    return result
