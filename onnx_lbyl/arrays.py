"""Arrays a user gives in .npz files (calibration data, validation inputs), read and checked
before any work: each unusable file, dtype, value or shape becomes an InputError of one line.

An .npy (one array, not an archive), a truncated or corrupt archive, pickled objects,
complex or non-numeric values, NaN/Inf, arrays of the wrong rank or size for the model's
declared input, and fewer rows than a fixed batch axis holds are all refused here, where the
file is first read, instead of deep in onnxruntime or the solvers.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import onnx

from .errors import InputError, first_line
from .graph.input_shapes import declared_dims, describe_dims, real_inputs


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`; `what` names the file in messages ("calibration data")."""
    try:
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as handle:
                head = handle.read(6)
            kind = ("an .npy file (one array)" if head == b"\x93NUMPY"
                    else "truncated or corrupt (an incomplete .npz archive)" if head.startswith(b"PK")
                    else "not an .npz archive")
            raise InputError(f"{what} {path} is {kind}; save the arrays with numpy.savez")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read {what} from {path}: {exc.strerror or first_line(exc)}")
    except Exception as exc:  # zipfile.BadZipFile, EOFError (truncated), ValueError (pickled), zlib.error
        raise InputError(f"cannot read {what} from {path} (truncated or not a NumPy .npz?): {first_line(exc)}")
    if not arrays:
        raise InputError(f"{what} {path} holds no arrays")
    return arrays


def check_real(array: np.ndarray, what: str) -> None:
    """Real numbers only (integers or floats), all finite."""
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        kind = "complex" if np.issubdtype(array.dtype, np.complexfloating) else "non-numeric"
        raise InputError(f"{what} must be real integers or floats, got {kind} {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and array.size and not np.isfinite(array).all():
        bad = "NaN" if np.isnan(array).any() else "infinite values"
        raise InputError(f"{what} hold {bad}")


def check_feeds(model: onnx.ModelProto, feeds: dict[str, np.ndarray], what: str, fixed_batch: str = "exact") -> None:
    """Every feed fits its model input: a dtype the input can take, finite, its declared rank and
    fixed dimensions. A fixed batch axis must be met exactly (`fixed_batch="exact"`, one
    onnxruntime run) or by at least one whole batch ("at-least": the probe runs whole batches)."""
    infos = {i.name: i for i in real_inputs(model)}
    rows = {name: int(np.shape(v)[0]) if np.ndim(v) else None for name, v in feeds.items()}
    if len(set(r for r in rows.values())) > 1:
        raise InputError(f"{what}: the arrays disagree in their number of rows "
                         f"({', '.join(f'{n} {r}' for n, r in rows.items())})")
    for name, value in feeds.items():
        info = infos.get(name)
        if info is None:
            continue
        elem = info.type.tensor_type.elem_type
        array = np.asarray(value)
        if elem == onnx.TensorProto.BOOL:
            if array.dtype != np.bool_:
                raise InputError(f"{what}: input {name!r} is bool, got {array.dtype}")
        else:
            check_real(array, f"{what} for input {name!r}")
        declared = declared_dims(info)
        if declared is None:
            continue
        if array.ndim != len(declared):
            raise InputError(f"{what}: input {name!r} is {describe_dims(info)} but the array has shape "
                             f"{list(array.shape)}")
        for axis, (have, want) in enumerate(zip(array.shape, declared)):
            if want is None or have == want:
                continue
            if axis == 0 and fixed_batch == "at-least" and have >= want:
                continue
            if axis == 0:
                need = f"at least {want}" if fixed_batch == "at-least" else f"exactly {want}"
                raise InputError(f"{what}: input {name!r} has a fixed batch of {want} {describe_dims(info)}, "
                                 f"so it needs {need} rows; got {have}")
            raise InputError(f"{what}: input {name!r} is {describe_dims(info)} but the array has shape "
                             f"{list(array.shape)} (dimension {axis} is {have}, not {want})")
        if array.ndim and array.shape[0] == 0:
            raise InputError(f"{what} holds no samples for input {name!r}")
