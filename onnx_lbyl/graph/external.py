"""Models too large for one protobuf: external data, staged on disk, moved into place.

Protobuf cannot serialise a message over 2 GB, so a model whose weights approach that size
can be neither handed to onnx.checker or onnxruntime as bytes nor written as one file.
Such a model travels as ONNX's external data format instead: a small model file whose
initializers name byte ranges of one `.data` file beside it.

Small models never come here: they keep the in-memory path (one serialisation, no disk).
The size test reads only the initializers' shapes and types, because in upb even
`ByteSize()` serialises the message, and reading `raw_data` copies it.

The writer here does not use `onnx.save_model(..., save_as_external_data=True)`: that call
converts the model *in place* (it clears every `raw_data` it writes), which would leave the
caller's model without weights. Writing each tensor's bytes straight from the model into
the data file and serialising a weightless *header* copy gives the same files (one data
file named `<model file name>.data`, offsets and lengths recorded per tensor) with only one
tensor's bytes in transit at a time.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from .shapes import _FLOATS, SMALL

# 2 GiB minus room for everything that is not an initializer (nodes, names, attributes).
LARGE_MODEL_BYTES = 2**31 - 2**27
# Initializers up to this size stay inline in the model file (onnx's own default threshold).
INLINE_BYTES = 1024
_DATA_FIELDS = frozenset({
    "raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data",
    "uint64_data", "external_data", "data_location",
})


def tensor_nbytes(tensor: TensorProto) -> int:
    """Bytes of `tensor`'s data from its shape and type alone (no copy of the data)."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8  # strings and unknown types: a rough guess is enough for a size test
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_nbytes(t) for t in model.graph.initializer)


def is_large(model: onnx.ModelProto) -> bool:
    """Whether `model` must travel with external data (its initializers near 2 GB)."""
    return initializer_bytes(model) > LARGE_MODEL_BYTES


def has_external_references(model: onnx.ModelProto) -> bool:
    """Whether some initializer still names external data instead of holding its bytes."""
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def _copy_fields(source, target, skip: frozenset[str]) -> None:
    """Copy every set field of a protobuf message except those in `skip`."""
    for descriptor, value in source.ListFields():
        if descriptor.name in skip:
            continue
        field = getattr(target, descriptor.name)
        if descriptor.is_repeated:
            field.extend(value)
        elif descriptor.message_type is not None:
            field.CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def _tensor_bytes(tensor: TensorProto) -> bytes:
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return onnx.numpy_helper.to_array(tensor).tobytes()  # typed fields: rare in large tensors


def write_external(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write `model` as `path` plus `path.name + '.data'` (every initializer over
    INLINE_BYTES in the data file), fsynced; `model` itself is not modified.

    Returns the data file's path. Raises OSError as the file system does.
    """
    path = Path(path)
    data_path = path.with_name(path.name + ".data")
    header = onnx.ModelProto()
    _copy_fields(model, header, frozenset({"graph"}))
    _copy_fields(model.graph, header.graph, frozenset({"initializer"}))
    with open(data_path, "wb") as data:
        for tensor in model.graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                raise ValueError(f"initializer {tensor.name!r} refers to external data that was not loaded")
            if tensor_nbytes(tensor) <= INLINE_BYTES:
                header.graph.initializer.append(tensor)
                continue
            entry = header.graph.initializer.add()
            _copy_fields(tensor, entry, _DATA_FIELDS)
            offset = data.tell()
            data.write(_tensor_bytes(tensor))
            entry.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_path.name), ("offset", offset), ("length", data.tell() - offset)):
                entry.external_data.add(key=key, value=str(value))
        data.flush()
        os.fsync(data.fileno())
    with open(path, "wb") as handle:
        handle.write(header.SerializeToString())
        handle.flush()
        os.fsync(handle.fileno())
    return data_path


def private_folder(near: str | os.PathLike | None, label: str) -> Path:
    """A new temporary folder (mode 0700) in the folder `near` (the system's when None).

    Hidden and named after `label`, so a leftover from a killed process says what it was."""
    return Path(tempfile.mkdtemp(prefix=f".{label}.", suffix=".tmp", dir=None if near is None else os.fspath(near)))


def remove_folder(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


class StagedModel:
    """A large model written with external data into a private folder beside its destination,
    waiting to be validated and moved into place by `commit`.

    The files carry their final names (OUT.onnx, OUT.onnx.data), so the model file's
    reference to its data stays right after the move.
    """

    def __init__(self, model: onnx.ModelProto, output: str | os.PathLike) -> None:
        self.output = Path(output)
        destination = self.output.parent if str(self.output.parent) else Path(".")
        self.folder: Path | None = private_folder(destination, self.output.name)
        try:
            self.path = self.folder / self.output.name
            self.data_path = write_external(model, self.path)
            mode = 0o666 & ~_umask()  # mkdtemp's files are private; give them a normal file's mode
            os.chmod(self.path, mode)
            os.chmod(self.data_path, mode)
        except BaseException:
            self.discard()
            raise

    @property
    def data_output(self) -> Path:
        return self.output.with_name(self.data_path.name)

    def commit(self) -> None:
        """Move the data file, then the model file, into place and remove the folder.

        The model file goes last: a reader of OUT.onnx finds either the old model or the
        new one with its data already beside it."""
        if self.folder is None:
            raise RuntimeError("staged model already committed or discarded")
        try:
            os.replace(self.data_path, self.data_output)
            try:
                os.replace(self.path, self.output)
            except BaseException:
                _unlink_quietly(self.data_output)  # no data file without its model
                raise
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the staging folder and whatever is still in it (idempotent)."""
        remove_folder(self.folder)
        self.folder = None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose large float initializers keep their name, type and shape but
    no data: enough for costs, input lists and shape inference (graph.shapes keeps the same
    small and integer initializers), at the size of the graph alone."""
    header = onnx.ModelProto()
    _copy_fields(model, header, frozenset({"graph"}))
    _copy_fields(model.graph, header.graph, frozenset({"initializer"}))
    for tensor in model.graph.initializer:
        if tensor.data_type in _FLOATS and int(np.prod(tensor.dims, dtype=np.int64)) > SMALL:
            _copy_fields(tensor, header.graph.initializer.add(), _DATA_FIELDS)
        else:
            header.graph.initializer.append(tensor)
    return header


class Scratch:
    """A private temporary folder, made on first use, for the files onnxruntime reads a
    large model from (a copy of the original, the probe model). `close` removes it."""

    def __init__(self, near: str | os.PathLike | None = None) -> None:
        self.near = near
        self._folder: Path | None = None
        self._original: Path | None = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = private_folder(self.near, "onnx-lbyl")
        return self._folder

    def original(self, model: onnx.ModelProto) -> Path:
        """`model` written once with external data (original.onnx + original.onnx.data);
        the same path on every later call."""
        if self._original is None:
            self._original = self.folder / "original.onnx"
            write_external(model, self._original)
        return self._original

    def close(self) -> None:
        remove_folder(self._folder)
        self._folder = self._original = None
