"""Reading a model the user named and writing one only when it is complete.

Every failure to read becomes an InputError with one line a user can act on; writing goes
through a temporary file in the destination folder and an atomic rename, so a reader of the
output path sees either nothing or a whole, validated model.

A model may keep its weights in external data files (resolved relative to its folder, as
onnx.load does); a model too large for one protobuf is written the same way, as OUT.onnx
plus OUT.onnx.data (graph.external).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model

from ..errors import InputError, first_line
from .external import StagedModel, has_external_references, is_large, tensor_nbytes
from .shapes import weightless


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load and structurally check an ONNX file, or raise InputError saying what is wrong."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    if p.is_dir():
        raise InputError(f"input is a directory, not an ONNX file: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"input file is empty: {p}")
    try:
        # what onnx.load(p) does, with the external files' sizes checked before reading them
        model = onnx.load(str(p), load_external_data=False)
        check_external_files(model, p.parent)
        load_external_data_for_model(model, str(p.parent))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"cannot read {exc.filename or p}: {exc.strerror or exc}")
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError, onnx.checker.ValidationError) as exc:
        raise InputError(f"{p} is not a readable ONNX model (truncated or not ONNX): {first_line(exc)}")
    # A binary file is checked from its path: the checker then reads it in C++ (and finds
    # its external data), instead of taking a fresh serialisation of the model we hold,
    # which costs a full copy of the weights in time and memory.
    binary = onnx.serialization.registry.get_format_from_file_extension(p.suffix) in (None, "protobuf")
    check_input_model(model, str(p), checker_source=p if binary else None)
    return model


def check_external_files(model: onnx.ModelProto, folder: Path) -> None:
    """Raise InputError unless every external data range of `model` exists in full.

    onnx.load checks offsets against the file but, for a tensor without a recorded length,
    takes whatever the file holds, so a truncated file would surface later as an obscure
    reshape error. Only file sizes are read here, never the data."""
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = ExternalDataInfo(tensor)
        data = folder / info.location
        if not info.location or not data.is_file():
            raise InputError(f"external data file of initializer {tensor.name!r} not found: {data}")
        offset = info.offset or 0
        available = data.stat().st_size - offset
        needed = max(info.length or 0, tensor_nbytes(tensor) if tensor.data_type != onnx.TensorProto.STRING else 0)
        if available < needed:
            raise InputError(
                f"external data file {data} is truncated: initializer {tensor.name!r} needs {needed} bytes "
                f"from offset {offset}, the file holds {max(available, 0)}")


def check_input_model(
    model: onnx.ModelProto, label: str = "input model", checker_source: str | os.PathLike | None = None
) -> None:
    """Reject protobufs that parsed but are not usable ONNX graphs.

    `checker_source`, the binary file `model` was read from, lets onnx.checker read that
    file rather than a new serialisation of `model`.
    """
    if not isinstance(model, onnx.ModelProto):
        raise InputError(f"{label} is not an onnx.ModelProto")
    if len(model.graph.node) == 0 or not model.opset_import:
        raise InputError(f"{label} is not a usable ONNX model (no nodes or no opset)")
    if checker_source is None and has_external_references(model):
        raise InputError(f"{label} refers to external data it does not hold: pass its path, "
                         "or load it with onnx.load(path)")
    if checker_source is None and is_large(model):
        # protobuf cannot serialise it for the checker: check the structure on a copy whose
        # large weights are typed inputs (their bytes are checked again when validated)
        model = weightless(model)
    try:
        onnx.checker.check_model(model if checker_source is None else os.fspath(checker_source))
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise InputError(f"{label} is not a valid ONNX model: {first_line(exc)}")


def save_atomic(model: onnx.ModelProto, output_path: str | os.PathLike) -> None:
    """Write `model` to a temporary file beside `output_path`, then rename it into place.

    A large model (external.is_large) becomes OUT.onnx plus OUT.onnx.data, both written in
    a private folder beside the output and moved into place, data first (StagedModel)."""
    if not is_large(model):
        write_atomic(output_path, model.SerializeToString())
        return
    try:
        StagedModel(model, output_path).commit()
    except OSError as exc:
        raise InputError(f"cannot write {output_path}: {exc.strerror or exc}")


def write_atomic(output_path: str | os.PathLike, data: bytes) -> None:
    """Write `data` so that `output_path` holds either its old content or all of `data`."""
    PendingWrite(output_path, data).commit()


class PendingWrite:
    """`data` written and fsynced to a temporary file beside `path`, waiting for `commit` to
    rename it into place; `discard` (idempotent) removes it.

    Writing first and renaming later lets a caller write a second file (the report) before
    the first one (the model) is moved into place, so that a failure writing either leaves
    neither. Raises InputError if the file system refuses the write."""

    def __init__(self, path: str | os.PathLike, data: bytes) -> None:
        self.path = Path(path)
        self.tmp: str | None = None
        try:
            fd, self.tmp = _temporary_file(self.path)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            self.discard()
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}")
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        if self.tmp is None:
            raise RuntimeError("pending write already committed or discarded")
        try:
            os.replace(self.tmp, self.path)
            self.tmp = None
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}")
        finally:
            self.discard()

    def discard(self) -> None:
        if self.tmp is not None:
            _remove_quietly(self.tmp)
            self.tmp = None


def probe_writable(output_path: str | os.PathLike) -> None:
    """Create and remove the temporary file `write_atomic` would create for `output_path`.

    The one test that tells every file system's answer (a missing folder, no permission, a
    read-only or pseudo file system such as /proc, a name too long once the temporary
    prefix is added): raises OSError as the file system does."""
    fd, tmp = _temporary_file(Path(output_path))
    os.close(fd)
    os.unlink(tmp)


def _temporary_file(out: Path) -> tuple[int, str]:
    """A new, exclusively created temporary file in `out`'s folder (mkstemp's O_EXCL: it
    can never be a file that already exists), named after `out`."""
    folder = out.parent if str(out.parent) else Path(".")
    return tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

