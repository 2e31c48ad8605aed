"""One rule for every path a run names: nothing it writes may be something it reads.

`check_paths` runs once, before any work, on the paths a command reads (the input model and
the external data files its tensors name, calibration, inputs, data, a compared model) and
the paths it writes (the output model and the data file a large output gets beside it,
the report, eval's JSON). It refuses, with an InputError naming both paths and their roles:

* a write that is a read, compared after resolving symlinks and `..`, and by device and
  inode for files that exist (hard links); a write inside a folder that is read (eval's
  data folder) counts as a clash too;
* two writes that are the same file (the report over the model just written);
* a write the file system would refuse: a name ending in '/', an existing directory or
  device, a missing folder, a name too long, a folder that takes no new files (/proc, a
  read-only or unwritable place). The test is to create and remove the very temporary file
  the atomic writer would create there (graph.io.probe_writable).

The temporary files and staging folders a run makes (graph.io, graph.external) are created
exclusively under fresh random names in the destination folders, so they can never be an
existing file; the probe above is what checks that those folders take them.
"""
from __future__ import annotations

import errno
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Union

import onnx

from .errors import InputError
from .graph.io import probe_writable

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ModelFile:
    """An ONNX file among a run's paths. Read, it brings along the external data files its
    tensors name; written, the data file a large output gets (OUT.onnx + OUT.onnx.data)."""

    path: PathLike


Named = Mapping[str, Union[PathLike, ModelFile, None]]


@dataclass
class _Entry:
    label: str  # the role, as the error message names it: "input", "--report", ...
    given: str  # the path as the user wrote it (or as derived from it)
    real: Path  # symlinks and '..' resolved
    st: os.stat_result | None  # None: does not exist (yet)
    probe: bool = True  # writes only: whether to test the folder with a temporary file


def check_paths(reads: Named, writes: Named) -> None:
    """Raise InputError unless every path in `writes` can be written and is neither a path
    in `reads` nor another write. Labels name the roles in messages; None values are skipped.

    A read that does not exist is left alone (the reader says "not found" in its own words);
    a read that cannot even be looked at (a name too long, a symlink loop) is refused here."""
    read_entries = [entry for label, value in reads.items() for entry in _read_entries(label, value)]
    write_entries = [entry for label, value in writes.items() for entry in _write_entries(label, value)]
    for index, write in enumerate(write_entries):
        for read in read_entries:
            _refuse_clash(write, read)
        for earlier in write_entries[:index]:
            if _same(write, earlier):
                raise InputError(f"{write.label} path is also the {earlier.label} path "
                                 f"({_pair(write.given, earlier.given)}): each result needs its own file")
    for write in write_entries:
        _check_writable(write)


def data_file(model_path: PathLike) -> Path:
    """The external data file a large model written to `model_path` gets: the model file's
    name plus '.data', beside it (graph.external.write_external)."""
    path = Path(model_path)
    return path.with_name(path.name + ".data")


def external_files(model_path: PathLike) -> list[Path]:
    """The external data files `model_path`'s tensors name (initializers, attribute tensors,
    subgraphs), resolved against its folder as onnx.load does. Reads only the protobuf's
    structure, never the weights; an unreadable or malformed file gives what was found
    before the damage (loading it reports the damage later)."""
    path = Path(model_path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return []
        binary = onnx.serialization.registry.get_format_from_file_extension(path.suffix) in (None, "protobuf")
        if binary:
            with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                with memoryview(mapped) as view:
                    locations = list(_external_locations(view))
        else:  # text formats: small by nature, parsed, then scanned as binary
            try:
                header = onnx.load(str(path), load_external_data=False)
            except Exception:  # any parser's error: loading the model reports it in its words
                return []
            locations = list(_external_locations(memoryview(header.SerializeToString())))
    except (OSError, ValueError):
        return []
    files: list[Path] = []
    for location in locations:
        file = path.parent / location
        if file not in files:
            files.append(file)
    return files


def _read_entries(label: str, value) -> Iterator[_Entry]:
    if value is None:
        return
    model = isinstance(value, ModelFile)
    path = value.path if model else value
    yield _entry(label, path, reading=True)
    if model:
        for file in external_files(path):
            yield _entry(f"{label}'s external data", file, reading=True)


def _write_entries(label: str, value) -> Iterator[_Entry]:
    if value is None:
        return
    model = isinstance(value, ModelFile)
    path = value.path if model else value
    text = os.fspath(path)
    if os.path.basename(text) in ("", ".", ".."):  # 'out/', 'out/.': pathlib would drop the slash
        raise InputError(f"{label} path names a folder, not a file: {_show(text)}")
    yield _entry(label, path, reading=False)
    if model:
        # same folder, a name 5 characters longer than the model's: the model's probe (whose
        # temporary name is longer still) covers it
        yield _entry(f"{label}'s external data", data_file(path), reading=False, probe=False)


def _entry(label: str, path: PathLike, reading: bool, probe: bool = True) -> _Entry:
    given = os.fspath(path)
    verb = "read" if reading else "write"
    try:
        st = os.stat(given)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # not there (yet): fine here
            raise InputError(f"cannot {verb} {label} {_show(given)}: {_reason(exc)}")
        st = None
    except ValueError:  # a NUL character: only possible from Python, not from a shell
        raise InputError(f"cannot {verb} {label} {_show(given)!r}: the path contains a NUL character")
    try:
        real = Path(os.path.realpath(given))
    except (OSError, ValueError):
        real = Path(os.path.abspath(given))
    return _Entry(label, given, real, st, probe)


def _refuse_clash(write: _Entry, read: _Entry) -> None:
    tail = "a run never writes over what it reads"
    folder = read.st is not None and stat.S_ISDIR(read.st.st_mode)
    if _same(write, read):
        kind = "folder" if folder else "file"
        raise InputError(f"{write.label} path is the {read.label} {kind} ({_pair(write.given, read.given)}); {tail}")
    if folder:
        if write.real.is_relative_to(read.real):
            raise InputError(f"{write.label} path is inside the {read.label} folder "
                             f"({_show(write.given)} is under {_show(read.given)}); {tail}")
        if write.st is not None and write.st.st_nlink > 1:  # a hard link to a file in the folder?
            for file in _files_under(read.real):
                try:
                    st = os.stat(file)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == (write.st.st_dev, write.st.st_ino):
                    raise InputError(f"{write.label} path is a file of the {read.label} folder "
                                     f"({_pair(write.given, file)}); {tail}")


def _same(a: _Entry, b: _Entry) -> bool:
    if a.st is not None and b.st is not None and (a.st.st_dev, a.st.st_ino) == (b.st.st_dev, b.st.st_ino):
        return True
    return a.real == b.real


def _files_under(folder: Path) -> Iterator[str]:
    """The files of `folder` and of its subfolders, as far down as eval reads (DATA/<class>/*):
    two levels, so a symlink cycle cannot make it loop."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir():
                yield from (sub.path for sub in os.scandir(entry.path))
            else:
                yield entry.path
        except OSError:
            continue


def _check_writable(write: _Entry) -> None:
    name, given = write.label, _show(write.given)
    if write.st is not None:
        if stat.S_ISDIR(write.st.st_mode):
            raise InputError(f"{name} path is a directory: {given}")
        if not stat.S_ISREG(write.st.st_mode):
            raise InputError(f"{name} path exists and is not a regular file: {given}")
        if not os.access(write.given, os.W_OK):
            raise InputError(f"{name} file exists and is not writable: {given}")
    parent = Path(write.given).parent
    folder = parent if str(parent) else Path(".")
    if not folder.exists():
        raise InputError(f"{name} folder does not exist: {_show(folder)}")
    if not folder.is_dir():
        raise InputError(f"{name} folder is not a directory: {_show(folder)}")
    if write.st is not None and _sticky_refuses(folder, write.st):
        raise InputError(f"{name} file belongs to another user in a shared folder and cannot be replaced: {given}")
    if not write.probe:
        return
    try:
        probe_writable(write.given)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InputError(f"cannot write {name} {given}: file name too long")
        raise InputError(f"cannot write {name} {given}: {_show(folder)} takes no new files ({_reason(exc)})")


def _sticky_refuses(folder: Path, st: os.stat_result) -> bool:
    """Whether renaming over an existing file would fail in a sticky folder such as /tmp:
    only the file's owner, the folder's owner or root may replace it there."""
    try:
        folder_st = os.stat(folder)
    except OSError:
        return False
    me = os.geteuid()
    return bool(folder_st.st_mode & stat.S_ISVTX) and me not in (0, st.st_uid, folder_st.st_uid)


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower() if exc.errno == errno.ENAMETOOLONG else (exc.strerror or str(exc))


def _show(path: PathLike) -> str:
    """A path as one line of text (a newline in a file name must not break it)."""
    return os.fspath(path).replace("\n", "\\n").replace("\r", "\\r")


def _pair(a: PathLike, b: PathLike) -> str:
    a, b = _show(a), _show(b)
    return a if a == b else f"{a} and {b} are the same file"


# --- the external data locations in an ONNX protobuf, from its wire format ------------------
#
# onnx.load(path, load_external_data=False) would copy every inline weight into memory just
# to list a few file names; this walks the serialised bytes of a memory map instead, going
# down only the fields whose message type can hold a TensorProto (graph, node, attribute,
# subgraph, function, training info) and skipping everything else, raw_data included, by
# its length.

_TENSOR = onnx.TensorProto.DESCRIPTOR
_EXTERNAL_DATA = _TENSOR.fields_by_name["external_data"].number
_DATA_LOCATION = _TENSOR.fields_by_name["data_location"].number


def _tensor_routes() -> dict[str, dict[int, object]]:
    """For every message type that can contain a TensorProto: field number -> message type
    of its fields that lead to one."""
    types: dict[str, object] = {}
    pending = [onnx.ModelProto.DESCRIPTOR]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in types:
            continue
        types[descriptor.full_name] = descriptor
        pending.extend(f.message_type for f in descriptor.fields if f.message_type is not None)
    reaching = {_TENSOR.full_name}
    changed = True
    while changed:
        changed = False
        for name, descriptor in types.items():
            if name not in reaching and any(f.message_type is not None and f.message_type.full_name in reaching
                                            for f in descriptor.fields):
                reaching.add(name)
                changed = True
    return {name: {f.number: f.message_type for f in types[name].fields
                   if f.message_type is not None and f.message_type.full_name in reaching}
            for name in reaching if name != _TENSOR.full_name}


_ROUTES = _tensor_routes()


def _external_locations(view: memoryview) -> Iterator[str]:
    """The `location` of every tensor stored externally in the ModelProto bytes `view`
    (stops quietly where the bytes stop making sense)."""
    stack = [(onnx.ModelProto.DESCRIPTOR, 0, len(view))]
    try:
        while stack:
            descriptor, start, end = stack.pop()
            if descriptor.full_name == _TENSOR.full_name:
                location = _tensor_location(view, start, end)
                if location:
                    yield location
                continue
            routes = _ROUTES[descriptor.full_name]
            for number, wire, begin, stop in _fields(view, start, end):
                if wire == 2 and number in routes:
                    stack.append((routes[number], begin, stop))
    except (ValueError, IndexError, UnicodeDecodeError):
        return


def _tensor_location(view: memoryview, start: int, end: int) -> str | None:
    external, location = False, None
    for number, wire, begin, stop in _fields(view, start, end):
        if number == _DATA_LOCATION and wire == 0:
            external = begin == onnx.TensorProto.EXTERNAL
        elif number == _EXTERNAL_DATA and wire == 2:
            key = value = None
            for entry, entry_wire, b, s in _fields(view, begin, stop):
                if entry_wire == 2 and entry in (1, 2):
                    text = bytes(view[b:s]).decode("utf-8")
                    key, value = (text, value) if entry == 1 else (key, text)
            if key == "location":
                location = value
    return location if external else None


def _fields(view: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, begin, end) of each field in view[start:end]; for a varint
    field, begin is its value."""
    position = start
    while position < end:
        key, position = _varint(view, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(view, position)
            yield number, wire, value, position
        elif wire == 2:
            length, position = _varint(view, position)
            if position + length > end:
                raise ValueError("truncated field")
            yield number, wire, position, position + length
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if position > end:
            raise ValueError("truncated field")


def _varint(view: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = view[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
