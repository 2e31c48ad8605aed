"""Never write over a file the run reads (issue 14), and refuse unusable outputs up front.

Every refused case asserts exit 2, exactly one line on stderr, every file in tmp_path
byte-identical afterwards and no file added or removed. Models are built here (builders),
so nothing outside tmp_path is read but /proc.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from builders import chain_model
from onnx_lbyl import cli
from onnx_lbyl.cli import main
from onnx_lbyl.errors import InputError
from onnx_lbyl.graph.external import write_external
from onnx_lbyl.graph.io import PendingWrite
from onnx_lbyl.paths import ModelFile, check_paths, data_file, external_files


def _chain() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return chain_model(rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 3, 3)))


def _classifier() -> onnx.ModelProto:
    """Flatten -> MatMul: 3 classes from a 1x2x2 image, enough for `eval`."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Flatten", ["input"], ["flat"]),
         onnx.helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "toy",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
        [onnx.numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """in.onnx (inline weights), ext.onnx + ext.onnx.data, calibration and validation
    inputs for it, an eval model, its data set and a compared model."""
    paths = {name: tmp_path / name for name in
             ("in.onnx", "ext.onnx", "cal.npz", "val.npz", "model.onnx", "orig.onnx", "data.npz")}
    onnx.save(_chain(), str(paths["in.onnx"]))
    onnx.save(_chain(), str(paths["ext.onnx"]), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    paths["ext.onnx.data"] = tmp_path / "ext.onnx.data"
    rng = np.random.default_rng(1)
    np.savez(paths["cal.npz"], x=rng.standard_normal((8, 3, 6, 6)).astype(np.float32))
    np.savez(paths["val.npz"], x=rng.standard_normal((4, 3, 6, 6)).astype(np.float32))
    onnx.save(_classifier(), str(paths["model.onnx"]))
    onnx.save(_classifier(), str(paths["orig.onnx"]))
    np.savez(paths["data.npz"], images=rng.integers(0, 256, (6, 1, 2, 2), dtype=np.uint8),
             labels=np.array([0, 1, 2, 0, 1, 2]))
    return paths


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under root (not following links): file -> sha256, link -> its target."""
    seen = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                seen[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                seen[key] = "dir"
            else:
                seen[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def _refused(args: list, tmp_path: Path, capsys, *expected: str) -> str:
    before = _snapshot(tmp_path)
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("onnx-lbyl: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for text in expected:
        assert text in err, err
    assert _snapshot(tmp_path) == before  # every input intact, nothing added, no temporary file
    return err


# --- the table, row by row -------------------------------------------------------

def test_output_is_the_inputs_external_data(files, tmp_path, capsys):
    _refused([files["ext.onnx"], files["ext.onnx.data"]], tmp_path, capsys,
             "output path is the input's external data file", str(files["ext.onnx.data"]))


def test_report_is_the_calibration(files, tmp_path, capsys):
    _refused([files["in.onnx"], tmp_path / "out.onnx", "--calibration", files["cal.npz"],
              "--report", files["cal.npz"]], tmp_path, capsys,
             "--report path is the calibration file", str(files["cal.npz"]))


def test_report_is_the_validation_inputs(files, tmp_path, capsys):
    _refused([files["in.onnx"], tmp_path / "out.onnx", "--inputs", files["val.npz"],
              "--report", files["val.npz"]], tmp_path, capsys, "--report path is the inputs file")


def test_output_is_the_calibration(files, tmp_path, capsys):
    _refused([files["in.onnx"], files["cal.npz"], "--calibration", files["cal.npz"]], tmp_path, capsys,
             "output path is the calibration file")


def test_output_is_the_validation_inputs(files, tmp_path, capsys):
    _refused([files["in.onnx"], files["val.npz"], "--inputs", files["val.npz"]], tmp_path, capsys,
             "output path is the inputs file")


def test_eval_json_is_the_data(files, tmp_path, capsys):
    _refused(["eval", files["model.onnx"], files["data.npz"], "--json", files["data.npz"]], tmp_path, capsys,
             "--json path is the data file")


def test_eval_json_is_the_compared_model(files, tmp_path, capsys):
    _refused(["eval", files["model.onnx"], files["data.npz"], "--compare", files["orig.onnx"],
              "--json", files["orig.onnx"]], tmp_path, capsys, "--json path is the compared model file")


# --- the same files under other names ------------------------------------------------------

def test_symlink_to_the_input(files, tmp_path, capsys):
    link = tmp_path / "link.onnx"
    link.symlink_to(files["in.onnx"])
    err = _refused([files["in.onnx"], link], tmp_path, capsys, "output path is the input file")
    assert str(link) in err and str(files["in.onnx"]) in err


def test_hard_link_to_the_input(files, tmp_path, capsys):
    hard = tmp_path / "hard.onnx"
    os.link(files["in.onnx"], hard)
    err = _refused([files["in.onnx"], hard], tmp_path, capsys, "output path is the input file", "same file")
    assert str(hard) in err and str(files["in.onnx"]) in err


def test_dot_dot_to_the_input(files, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    _refused([files["in.onnx"], tmp_path / "sub" / ".." / "in.onnx"], tmp_path, capsys, "output path is the input file")


def test_hard_link_to_the_calibration_as_report(files, tmp_path, capsys):
    hard = tmp_path / "report.json"
    os.link(files["cal.npz"], hard)
    _refused([files["in.onnx"], tmp_path / "out.onnx", "--calibration", files["cal.npz"], "--report", hard],
             tmp_path, capsys, "--report path is the calibration file")


def test_outputs_data_file_would_be_the_inputs_data(tmp_path, capsys):
    """in.onnx keeps its weights in out.onnx.data: a large out.onnx would write over them."""
    onnx.save(_chain(), str(tmp_path / "in.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="out.onnx.data", size_threshold=0)
    _refused([tmp_path / "in.onnx", tmp_path / "out.onnx"], tmp_path, capsys,
             "output's external data path is the input's external data file")


def test_eval_json_is_the_models_external_data(files, tmp_path, capsys):
    onnx.save(_classifier(), str(tmp_path / "big.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="big.bin", size_threshold=0)
    _refused(["eval", tmp_path / "big.onnx", files["data.npz"], "--json", tmp_path / "big.bin"], tmp_path, capsys,
             "--json path is the model's external data file")


def test_eval_json_in_the_data_folder(files, tmp_path, capsys):
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "0.png").write_bytes(b"not really a png")
    _refused(["eval", files["model.onnx"], folder, "--json", folder / "cat" / "0.png"], tmp_path, capsys,
             "--json path is inside the data folder")
    _refused(["eval", files["model.onnx"], folder, "--json", folder / "result.json"], tmp_path, capsys,
             "--json path is inside the data folder")
    _refused(["eval", files["model.onnx"], folder, "--json", folder], tmp_path, capsys, "--json path is the data folder")
    hard = tmp_path / "result.json"
    os.link(folder / "cat" / "0.png", hard)
    _refused(["eval", files["model.onnx"], folder, "--json", hard], tmp_path, capsys,
             "--json path is a file of the data folder")


# --- two writes, and outputs that cannot be written ---------------------------------------

def test_report_is_the_output(files, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    _refused([files["in.onnx"], out, "--report", out], tmp_path, capsys, "--report path is also the output path")


def test_report_is_the_outputs_data_file(files, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    _refused([files["in.onnx"], out, "--report", tmp_path / "out.onnx.data"], tmp_path, capsys,
             "--report path is also the output's external data path")


def test_report_is_a_directory(files, tmp_path, capsys):
    (tmp_path / "reports").mkdir()
    _refused([files["in.onnx"], tmp_path / "out.onnx", "--report", tmp_path / "reports"], tmp_path, capsys,
             "--report path is a directory")


def test_output_with_a_trailing_slash(files, tmp_path, capsys):
    _refused([files["in.onnx"], f"{tmp_path}/out/"], tmp_path, capsys, "output path names a folder, not a file")
    (tmp_path / "out").mkdir()
    _refused([files["in.onnx"], f"{tmp_path}/out/"], tmp_path, capsys, "output path names a folder, not a file")
    _refused([files["in.onnx"], f"{tmp_path}/new.onnx/."], tmp_path, capsys, "output path names a folder, not a file")


def test_report_in_a_missing_folder(files, tmp_path, capsys):
    _refused([files["in.onnx"], tmp_path / "out.onnx", "--report", tmp_path / "no" / "r.json"], tmp_path, capsys,
             "--report folder does not exist")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc here")
@pytest.mark.parametrize("where", ["/proc", "/proc/self"])
def test_report_under_proc(files, tmp_path, capsys, where):
    _refused([files["in.onnx"], tmp_path / "out.onnx", "--report", f"{where}/onnx-lbyl-report.json"], tmp_path,
             capsys, f"cannot write --report {where}/onnx-lbyl-report.json")
    _refused(["eval", files["model.onnx"], files["data.npz"], "--json", f"{where}/r.json"], tmp_path, capsys,
             "cannot write --json")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc here")
def test_output_is_an_existing_proc_file(files, tmp_path, capsys):
    _refused([files["in.onnx"], "/proc/self/comm"], tmp_path, capsys, "cannot write output /proc/self/comm")


def test_file_name_of_300_characters(files, tmp_path, capsys):
    name = "m" * 300 + ".onnx"
    _refused([files["in.onnx"], tmp_path / name], tmp_path, capsys, "cannot write output", "file name too long")
    _refused([files["in.onnx"], tmp_path / "out.onnx", "--report", tmp_path / name], tmp_path, capsys,
             "cannot write --report", "file name too long")
    _refused([tmp_path / name, tmp_path / "out.onnx"], tmp_path, capsys, "cannot read input", "file name too long")


def test_name_too_long_only_with_the_temporary_prefix(files, tmp_path, capsys):
    """250 characters: a legal name, but not once the atomic writer's prefix and suffix are
    added; refused before the work, not after it."""
    _refused([files["in.onnx"], tmp_path / ("m" * 245 + ".onnx")], tmp_path, capsys, "file name too long")


# --- what must still work -------------------------------------------------------------------

def test_external_data_input_with_report_still_works(files, tmp_path, capsys):
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    digest = hashlib.sha256(files["ext.onnx.data"].read_bytes()).hexdigest()
    code = main([str(files["ext.onnx"]), str(out), "-q", "--report", str(report),
                 "--calibration", str(files["cal.npz"]), "--inputs", str(files["val.npz"])])
    assert code == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["output"] == str(out)
    assert hashlib.sha256(files["ext.onnx.data"].read_bytes()).hexdigest() == digest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_eval_json_beside_the_data_still_works(files, tmp_path, capsys):
    result = tmp_path / "result.json"
    result.write_text("old\n")  # overwriting an earlier result is fine
    assert main(["eval", str(files["model.onnx"]), str(files["data.npz"]), "--compare", str(files["orig.onnx"]),
                 "--json", str(result), "-q"]) == 0, capsys.readouterr().err
    assert json.loads(result.read_text())["count"] == 6


def test_failed_report_leaves_neither_file(files, tmp_path, capsys, monkeypatch):
    """The report is written before the model is moved into place; if writing it fails, or
    renaming it does, neither the model nor the report is left behind."""
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"

    class FullDisk(PendingWrite):
        def __init__(self, path, data):
            raise InputError(f"cannot write {path}: No space left on device")

    class VanishedFolder(PendingWrite):
        def commit(self):
            self.discard()  # as a failed os.replace leaves it
            raise InputError(f"cannot write {self.path}: No such file or directory")

    for failing, message in ((FullDisk, "No space left on device"), (VanishedFolder, "No such file or directory")):
        monkeypatch.setattr(cli, "PendingWrite", failing)
        before = _snapshot(tmp_path)
        assert main([str(files["in.onnx"]), str(out), "-q", "--report", str(report)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert _snapshot(tmp_path) == before


# --- check_paths itself ---------------------------------------------------------------------

def test_check_paths_hard_link(tmp_path):
    source = tmp_path / "a.npz"
    source.write_bytes(b"calibration")
    hard = tmp_path / "b.json"
    os.link(source, hard)
    with pytest.raises(InputError, match=r"--report path is the calibration file \(.*b\.json and .*a\.npz are the same file\)"):
        check_paths(reads={"calibration": source}, writes={"--report": hard})
    check_paths(reads={"calibration": source}, writes={"--report": tmp_path / "c.json"})  # a new file: fine
    check_paths(reads={"calibration": None}, writes={"--report": None})


def test_check_paths_two_writes_and_one_line(tmp_path):
    odd = tmp_path / "a\nb.onnx"
    with pytest.raises(InputError) as caught:
        check_paths(reads={}, writes={"output": ModelFile(odd), "--report": odd})
    assert "\n" not in str(caught.value) and "also the output path" in str(caught.value)


def test_data_file_is_what_a_large_output_gets(tmp_path):
    written = write_external(_chain(), tmp_path / "out.onnx")
    assert written == data_file(tmp_path / "out.onnx")


def test_external_files_reads_only_the_structure(tmp_path):
    """Initializers, a Constant's tensor inside a subgraph, and files per tensor."""
    onnx.save(_chain(), str(tmp_path / "sep.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
              size_threshold=0)
    assert sorted(p.name for p in external_files(tmp_path / "sep.onnx")) == ["w1", "w2"]
    helper = onnx.helper
    const = helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(np.ones(300, np.float32), "v"))
    branch = helper.make_graph([const], "b", [], [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [300])])
    node = helper.make_node("If", ["cond"], ["o"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, [300])])
    onnx.save(helper.make_model(graph), str(tmp_path / "sub.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="sub.bin", size_threshold=0, convert_attribute=True)
    assert external_files(tmp_path / "sub.onnx") == [tmp_path / "sub.bin"]
    onnx.save(_chain(), str(tmp_path / "inline.onnx"))
    assert external_files(tmp_path / "inline.onnx") == []
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    assert external_files(tmp_path / "junk.onnx") == []
    assert external_files(tmp_path / "missing.onnx") == []
