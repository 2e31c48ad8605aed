"""Coverage table (issue 10): what `onnx-lbyl IN OUT --ratio 0.3` prunes on real exports.

    python bench/torch_zoo.py --out bench/results/zoo    # the torch exports (dev extra; gitignored)
    python bench/coverage.py                             # writes bench/results/coverage.{md,json}
    python bench/coverage.py --only yolo ppocr           # models whose name contains a pattern (prints only)

For every model: `onnx_lbyl.compress(path, CompressOptions(ratio=0.3, input_shapes=...))` (what
the command line calls), then, on the model it wrote, an onnxruntime run with the original's
input (the same names, declared shapes and output shapes?), and once through the real command
line (`onnx-lbyl IN OUT --ratio 0.3 [--input-shape ...] --report R.json`: exit code, and whether
it wrote the same bytes). Per model it records MACs and parameters before/after, the share of
the original MACs in layers that a prunable unit (chain or group) narrows, units found /
pruned / left whole with their reasons (counted by reason, names taken out), the validation
drift the report gives, and seconds; for the two wild models also fidelity on natural images
(bench/results/coverage.md says what was assumed).

The report gives no per-layer MACs and names a unit's layers only partly (`next_layer` is the
first reader "(+N more)"), so the MACs a unit touches are computed here: the pipeline's own
analysis is repeated on the canonicalised model (groups.analyse, find_chains) and every unit's
layers (producers, depthwise Convs, consumers: planning.GroupShape) are costed with
graph.cost.node_macs (which follows computed reshapes itself: data propagation, then batch 1).

Models: every file bench/torch_zoo.py builds (`--zoo`, built on demand if torch is there), the
real files in ../shared/models (`--shared`; benchmark use only, never copied), and four small
numpy-built networks (bench/zoo.py and the builders below).
"""
from __future__ import annotations

import onnx_lbyl  # noqa: F401  first: it sets BLAS to one thread, which only takes before numpy loads

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from accuracy import git_state  # noqa: E402

from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.canonical import canonicalise  # noqa: E402
from onnx_lbyl.graph.chains import find_chains  # noqa: E402
from onnx_lbyl.graph.cost import node_macs  # noqa: E402
from onnx_lbyl.graph.input_shapes import resolve_input_shapes  # noqa: E402
from onnx_lbyl.graph.layers import HANDLERS  # noqa: E402
from onnx_lbyl.group_pruning import group_shape  # noqa: E402
from onnx_lbyl.groups import analyse  # noqa: E402
from onnx_lbyl.groups.graph import attach_shapes  # noqa: E402
from onnx_lbyl.groups.rewrite import _features, input_axis  # noqa: E402
from onnx_lbyl.pipeline import _groups_beyond_chains  # noqa: E402  (the pipeline's own split)
from onnx_lbyl.planning import ChainShape, GroupShape  # noqa: E402
from onnx_lbyl.validate import random_inputs, run  # noqa: E402

RATIO = 0.3
GOAL = 0.20  # issue 10: at least 20% fewer MACs
DEFAULT_ZOO = HERE / "results" / "zoo"
DEFAULT_SHARED = ROOT.parent / "shared"
IMAGES = "data/imagenet_sample500_test.npz"

# bench/torch_zoo.py's files (NAMES there, with the _folded variants), in its order
TORCH_ZOO = ("mobilenet_v2", "mobilenet_v2_folded", "mobilenet_v3_small", "mobilenet_v3_small_folded",
             "efficientnet_b0", "efficientnet_b0_folded", "yolov8n_320", "yolov8n_320_folded", "resnet50",
             "resnet50_folded", "convnext", "keras_nhwc", "prelu_iresnet", "prelu_iresnet_folded",
             "transformer_mlp")
SHARED = (("efficientnet_lite0_bn", "models/efficientnet_lite0_bn.onnx", {}),
          ("efficientnet_lite0_folded", "models/efficientnet_lite0_folded.onnx", {}),
          ("ppocr_mobile_v2_cls", "models/wild/ppocr_mobile_v2_cls.onnx", {"x": (1, 3, 48, 192)}),
          ("ddddocr_det", "models/wild/ddddocr_det.onnx", {}),
          ("akamaster_resnet20_cifar10_bn", "models/akamaster_resnet20_cifar10_bn.onnx", {}),
          ("akamaster_resnet20_cifar10_folded", "models/akamaster_resnet20_cifar10_folded.onnx", {}),
          ("akamaster_resnet32_cifar10_bn", "models/akamaster_resnet32_cifar10_bn.onnx", {}),
          ("akamaster_resnet32_cifar10_folded", "models/akamaster_resnet32_cifar10_folded.onnx", {}),
          ("mlcommons_tiny_resnet8_cifar10_bn", "models/mlcommons_tiny_resnet8_cifar10_bn.onnx", {}),
          ("mlcommons_tiny_resnet8_cifar10_folded", "models/mlcommons_tiny_resnet8_cifar10_folded.onnx", {}))


# -- small numpy-built networks (moved from bench/chain_coverage.py) --------------------------

def keras_style_cnn(seed: int = 0) -> onnx.ModelProto:
    """What tf2onnx makes of a Keras Conv2D/Dense model: NHWC input, Transpose to NCHW, convs
    with biases, Transpose back to NHWC before Flatten (Reshape) and Dense (MatMul + Add)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def init(name, shape, scale):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    nodes.append(helper.make_node("Transpose", ["input"], ["t0"], perm=[0, 3, 1, 2]))
    x, c = "t0", 3
    for i, out in enumerate([16, 32, 32]):
        nodes.append(helper.make_node("Conv", [x, init(f"k{i}", (out, c, 3, 3), np.sqrt(2 / (9 * c))),
                                               init(f"kb{i}", (out,), 0.1)], [f"c{i}"], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, c = f"r{i}", out
    nodes.append(helper.make_node("Transpose", [x], ["nhwc"], perm=[0, 2, 3, 1]))
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
    nodes.append(helper.make_node("Reshape", ["nhwc", "flat_shape"], ["flat"]))
    nodes.append(helper.make_node("MatMul", ["flat", init("dense1", (16 * 16 * c, 64), 0.01)], ["d1"]))
    nodes.append(helper.make_node("Add", ["d1", init("dense1_b", (64,), 0.1)], ["d1b"]))
    nodes.append(helper.make_node("Relu", ["d1b"], ["d1r"]))
    nodes.append(helper.make_node("MatMul", ["d1r", init("dense2", (64, 10), 0.1)], ["d2"]))
    nodes.append(helper.make_node("Add", ["d2", init("dense2_b", (10,), 0.1)], ["logits"]))
    graph = helper.make_graph(nodes, "keras_cnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16, 16, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def mlp(seed: int = 0) -> onnx.ModelProto:
    """LeNet-300-100-shaped MLP: Flatten -> Gemm -> Relu -> Gemm -> Relu -> Gemm."""
    rng = np.random.default_rng(seed)
    sizes = [784, 300, 100, 10]
    inits, nodes, x = [], [helper.make_node("Flatten", ["input"], ["f"])], "f"
    for i in range(3):
        w = (rng.standard_normal((sizes[i + 1], sizes[i])) * np.sqrt(2 / sizes[i])).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"),
                  numpy_helper.from_array((rng.standard_normal(sizes[i + 1]) * 0.1).astype(np.float32), f"fc{i}.bias")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"g{i}"], transB=1))
        x = f"g{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"a{i}"]))
            x = f"a{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


NUMPY = (("np_resnet18", lambda: zoo.build("resnet18", width=0.25, image=64, classes=10), "bench/zoo.py ResNet-18, width 0.25, 64x64"),
         ("np_vgg16_bn", lambda: zoo.build("vgg16_bn", width=0.25, image=64, classes=10), "bench/zoo.py VGG-16-BN, width 0.25, 64x64"),
         ("np_keras_nhwc_cnn", keras_style_cnn, "tf2onnx-style NHWC CNN (Reshape flatten, MatMul + Add)"))
# mlp() is left out of the run: at 28x28 the data-free probe's dead-leaves images take ~20 s of
# its ~21 s (onnx_lbyl.synthetic), twice with the command line, for a 0.3 M-MAC model.


@dataclass(frozen=True)
class Entry:
    name: str
    family: str  # "torch zoo", "shared", "wild", "numpy"
    path: Path | None = None
    build: Callable[[], onnx.ModelProto] | None = None
    input_shapes: dict = field(default_factory=dict)
    note: str = ""


def entries(zoo_dir: Path, shared: Path) -> list[Entry]:
    out = [Entry(n, "torch zoo", zoo_dir / f"{n}.onnx") for n in TORCH_ZOO]
    out += [Entry(n, "wild" if "/wild/" in p else "shared", shared / p, input_shapes=s) for n, p, s in SHARED]
    out += [Entry(n, "numpy", build=b, note=note) for n, b, note in NUMPY]
    return out


# -- what one model gives ---------------------------------------------------------------------

def survey(entry: Entry, work: Path, cli: bool = True, images: np.ndarray | None = None) -> dict:
    """Compress one model and check what came out; a dict for the table (never raises)."""
    row: dict = {"model": entry.name, "family": entry.family, "input_shapes": {k: list(v) for k, v in entry.input_shapes.items()}}
    path = work / f"{entry.name}.onnx"
    if entry.build is not None:
        onnx.save(entry.build(), path)
    elif entry.path is None or not entry.path.is_file():
        row["failure"] = f"missing file {entry.path}"
        return row
    else:
        path = entry.path
    row["file"] = str(entry.path) if entry.path is not None else entry.note
    options = CompressOptions(ratio=RATIO, input_shapes=entry.input_shapes)
    pruned_path = work / f"{entry.name}.pruned.onnx"
    started = time.perf_counter()
    try:
        result = compress(str(path), options)
        result.save(pruned_path)
    except Exception as exc:  # the table says what broke; a report line is one line
        row["seconds"] = round(time.perf_counter() - started, 1)
        row["failure"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]
        if cli:
            row["cli"] = Cli(path, work / f"{entry.name}.cli.onnx", work / f"{entry.name}.json",
                             entry.input_shapes, None).result()
        return row
    row["seconds"] = round(time.perf_counter() - started, 1)
    # the command line runs beside the checks below (they are short); its seconds are not compared
    background = Cli(path, work / f"{entry.name}.cli.onnx", work / f"{entry.name}.json", entry.input_shapes,
                     pruned_path) if cli else None
    report = result.report
    original = onnx.load(str(path))
    row.update(_sizes(report))
    found = analysis(original, options)
    row.update(_units(report, found))
    row["canonicalised"] = list(report.canonicalised)
    v = report.validation
    row["validation"] = {"runtime": bool(v and v.runtime), "batch": v.batch if v else 0,
                         "outputs": [{"name": o.name, "relative_l2": round(float(o.relative_l2_error), 4),
                                      "top1_agreement": o.top1_agreement} for o in (v.outputs if v else [])]}
    row["interface"] = check_interface(path, pruned_path, entry.input_shapes)
    if entry.name.startswith("ppocr"):
        row["fidelity"] = ppocr_fidelity(path, pruned_path, images)
    elif entry.name.startswith("ddddocr"):
        row["fidelity"] = ddddocr_fidelity(path, pruned_path, images)
    row["masked_reference"] = masked_reference(original, found)
    if background is not None:
        row["cli"] = background.result()
    row["flags"] = flags(row)
    return row


def _sizes(report) -> dict:
    out = {"parameters_before": report.parameters_before, "parameters_after": report.parameters_after,
           "macs_before": report.macs_before, "macs_after": report.macs_after}
    b, a = out["macs_before"], out["macs_after"]
    out["macs_reduction"] = None if not b or a is None else round(1 - a / b, 4)
    return out


def _total(macs: dict) -> int | None:
    return None if any(v is None for v in macs.values()) else int(sum(macs.values()))


def _resolved(model: onnx.ModelProto, options: CompressOptions) -> CompressOptions:
    options = options.check()
    return replace(options, input_shapes=resolve_input_shapes(model, options.input_shapes, None))


def _units(report, found: Analysis) -> dict:
    """Units found / pruned / left whole, and the MACs each unit's layers hold."""
    layers = list(report.layers)
    whole_reasons: Counter = Counter()
    for skipped in report.skipped:
        for kind in dict.fromkeys(reason_kind(part) for part in skipped.reason.split("; ")):
            whole_reasons[kind] += 1
    out = {"units": len(layers), "chains": sum(1 for x in layers if x.kind == "chain"),
           "groups": sum(1 for x in layers if x.kind == "group"),
           "pruned": sum(1 for x in layers if x.removed), "left_whole": len(report.skipped),
           "left_whole_reasons": dict(whole_reasons.most_common())}
    shapes, whole, macs = unit_layers(found)
    total = _total(macs)
    known = {name: (v or 0) for name, v in macs.items()}
    by_name = {s.name: s for s in shapes}
    touched: set[str] = set()
    per_unit = []
    for layer in layers:
        shape = by_name.get(layer.name)
        names = [] if shape is None else sorted({n for n, _ in shape.outputs} | {n for n, _ in shape.inputs})
        if layer.removed:
            touched.update(names)
        per_unit.append({"name": layer.name, "kind": layer.kind, "producers": layer.producers,
                         "channels": [layer.channels_before, layer.channels_after],
                         "readers": layer.next_layer, "layers": len(names),
                         "macs": None if shape is None else int(sum(known.get(n, 0) for n in names)),
                         "report_macs": layer.macs, "matched": shape is not None})
    for skipped in report.skipped:
        shape = whole.get(skipped.name)
        names = [] if shape is None else sorted({n for n, _ in shape.outputs} | {n for n, _ in shape.inputs})
        per_unit.append({"name": skipped.name, "kind": "whole", "reason": skipped.reason, "layers": len(names),
                         "macs": None if shape is None else int(sum(known.get(n, 0) for n in names)),
                         "report_macs": skipped.macs, "matched": shape is not None})
    out["macs_share_prunable"] = None if not total else round(sum(known.get(n, 0) for n in touched) / total, 4)
    out["unmatched_units"] = [u["name"] for u in per_unit if not u["matched"]]
    out["units_without_report_macs"] = [u["name"] for u in per_unit if u["report_macs"] is None]
    out["per_unit"] = per_unit
    return out


@dataclass
class Analysis:
    """The pipeline's analysis again, on the canonicalised model: chains, every group, and the
    units it prunes (chains, then the groups beyond them)."""

    options: CompressOptions
    canonical: onnx.ModelProto
    chains: list
    groups: list
    beyond: list


def analysis(model: onnx.ModelProto, options: CompressOptions) -> Analysis:
    options = _resolved(model, options)
    canonical, _ = canonicalise(model)
    graph = gs.import_onnx(canonical)
    chains, _ = find_chains(graph, {i.name for i in canonical.graph.input}, frozenset(options.allow_approximate))
    attach_shapes(graph, canonical, options.input_shapes)
    groups = analyse(graph)
    beyond, _, _ = _groups_beyond_chains(groups, chains, options.method_spec)
    return Analysis(options, canonical, chains, groups, beyond)


def unit_layers(found: Analysis) -> tuple[list[GroupShape], dict[str, GroupShape], dict]:
    """Every unit as the layers whose MACs it narrows, the same for the groups left whole, and
    the node MACs of the canonical model."""
    shapes = [ChainShape(c.name, c.producer.outputs[0].name, c.consumer.outputs[0].name,
                         HANDLERS[c.producer.op].out_channels(c.producer)) for c in found.chains]
    shapes += [group_shape(g) for g in found.beyond]
    whole = {}
    for g in found.groups:
        if not g.prunable and g.layer:
            try:
                whole[g.name] = group_shape(g)
            except Exception:  # a fixed group may hold layers planning never sees
                pass
    return shapes, whole, node_macs(found.canonical, found.options.input_shapes)


def masked_reference(model: onnx.ModelProto, found: Analysis) -> dict:
    """Soundness of the rewrite: compress with method `prune` (no compensation), and compare
    with the canonical model whose consumers read nothing of the removed channels (their
    weight columns zeroed, at every read the analysis found). The two compute the same
    function, so any difference is a channel sliced at the wrong place."""
    try:
        result = compress(model, replace(found.options, method="prune"))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    by_name = {g.name: g for g in found.groups}
    by_producer = {id(g.producers[0].node): g for g in found.groups if len(g.producers) == 1}
    chains = {c.name: c for c in found.chains}
    columns: dict[str, tuple[int, set]] = {}
    unmatched = []
    for layer in result.report.layers:
        if not layer.removed:
            continue
        group = by_name.get(layer.name)
        if group is None and layer.name in chains:
            group = by_producer.get(id(chains[layer.name].producer))
        if group is None:
            unmatched.append(layer.name)
            continue
        removed = np.asarray(layer.removed)
        for read in group.reads:
            features = _features(read.offset + removed, read.outer, read.inner, read.total)
            columns.setdefault(read.node.inputs[1].name, (input_axis(read.node), set()))[1].update(int(f) for f in features)
    reference = onnx.ModelProto()
    reference.CopyFrom(found.canonical)
    initializers = {t.name: t for t in reference.graph.initializer}
    for name, (axis, features) in columns.items():
        values = np.array(numpy_helper.to_array(initializers[name]), copy=True)
        index = [slice(None)] * values.ndim
        index[axis] = sorted(features)
        values[tuple(index)] = 0
        initializers[name].CopyFrom(numpy_helper.from_array(values, name))
    feeds = random_inputs(model, 2, seed=2, shapes=found.options.input_shapes)
    expected, got = run(reference, feeds), run(result.model, feeds)
    error = max(float(np.linalg.norm(a - b) / max(float(np.linalg.norm(a)), 1e-30)) for a, b in zip(expected, got))
    return {"relative_l2": error, "unmatched": unmatched, "exact": error < 1e-4 and not unmatched}


_QUOTED = re.compile(r"'[^']*'")
_OPS = "|".join(sorted({s.name for s in onnx.defs.get_all_schemas()}, key=len, reverse=True))
_LABELLED = re.compile(rf"\b({_OPS}) (?![a-z]+\b)\S+?(?=[:;,)]?(\s|$))")


def reason_kind(reason: str) -> str:
    """A skip reason without the names in it (node labels, tensor names, counts), to count."""
    text = _QUOTED.sub("'…'", reason.strip())
    text = _LABELLED.sub(r"\1", text)
    return re.sub(r"\b\d+ other node", "N other node", text)


# -- checks on the written model --------------------------------------------------------------

def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_interface(original: Path, pruned: Path, input_shapes: dict, feeds: dict | None = None) -> dict:
    """Both models in onnxruntime: the same input and output names, types and declared shapes,
    and on one batch the same output shapes, all finite."""
    try:
        a, b = _session(original), _session(pruned)
    except Exception as exc:
        return {"ok": False, "problem": f"onnxruntime cannot load: {str(exc).splitlines()[0][:200]}"}
    problems = []
    for kind in ("inputs", "outputs"):
        left = [(x.name, x.type, list(x.shape)) for x in getattr(a, f"get_{kind}")()]
        right = [(x.name, x.type, list(x.shape)) for x in getattr(b, f"get_{kind}")()]
        if left != right:
            problems.append(f"declared {kind} differ: {left} -> {right}")
    if feeds is None:
        feeds = random_inputs(onnx.load(str(original), load_external_data=False), 2, seed=1,
                              shapes=tuple(input_shapes.items()))
    ya, yb = a.run(None, feeds), b.run(None, feeds)
    if [y.shape for y in ya] != [y.shape for y in yb]:
        problems.append(f"output shapes differ: {[y.shape for y in ya]} -> {[y.shape for y in yb]}")
    if not all(np.all(np.isfinite(y)) for y in yb):
        problems.append("non-finite outputs")
    return {"ok": not problems, "problem": "; ".join(problems),
            "inputs": [[x.name, list(x.shape)] for x in b.get_inputs()],
            "outputs": [[x.name, list(y.shape)] for x, y in zip(b.get_outputs(), yb)]}


class Cli:
    """`onnx-lbyl IN OUT --ratio 0.3 [--input-shape N:d,...] --report R.json -q`, started in the
    background; `result()` waits: its exit code, its stderr's last line, and whether it wrote
    the bytes the API wrote (the same options always give the same file)."""

    def __init__(self, model: Path, out: Path, report: Path, input_shapes: dict, api_output: Path | None) -> None:
        exe = shutil.which("onnx-lbyl")
        command = [exe] if exe else [sys.executable, "-c", "import sys; from onnx_lbyl.cli import main; sys.exit(main())"]
        command += [str(model), str(out), "--ratio", str(RATIO), "--report", str(report), "-q"]
        for name, dims in input_shapes.items():
            command += ["--input-shape", f"{name}:{','.join(str(d) for d in dims)}"]
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
        self.out, self.api_output, self.started = out, api_output, time.perf_counter()
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def result(self) -> dict:
        _, stderr = self.process.communicate(timeout=900)
        stderr = stderr.strip()
        result = {"exit": self.process.returncode, "seconds": round(time.perf_counter() - self.started, 1),
                  "stderr": stderr.splitlines()[-1][:300] if stderr else ""}
        if self.process.returncode == 0 and self.api_output is not None and self.out.is_file():
            result["same_file_as_api"] = self.out.read_bytes() == self.api_output.read_bytes()
        return result


# -- the two wild models on natural images ----------------------------------------------------

def _resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) with half-pixel centres (cv2.INTER_LINEAR's geometry)."""
    def axis(n_in: int, n_out: int):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, x - lo
    y0, y1, fy = axis(images.shape[2], height)
    x0, x1, fx = axis(images.shape[3], width)
    f = images.astype(np.float64)
    rows = f[:, :, y0] * (1 - fy)[None, None, :, None] + f[:, :, y1] * fy[None, None, :, None]
    return rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx


def ppocr_fidelity(original: Path, pruned: Path, images: np.ndarray | None) -> dict:
    """Top-1 agreement of the 2-class orientation output on horizontal strips of natural images:
    rows 84..140 of each 224x224 image (aspect 4:1), resized to 48x192, BGR (PaddleOCR reads with
    cv2), (x/255 - 0.5)/0.5 as PaddleOCR's ClsResizeImg does."""
    if images is None:
        return {"skipped": "no images"}
    strips = _resize(images[:, :, 84:140, :], 48, 192)[:, ::-1]
    x = ((strips / 255.0 - 0.5) / 0.5).astype(np.float32)
    a, b = _session(original), _session(pruned)
    name = a.get_inputs()[0].name
    ya = np.concatenate([a.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    yb = np.concatenate([b.run(None, {name: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    return {"images": len(x), "top1_agreement": round(float(np.mean(ya.argmax(1) == yb.argmax(1))), 4),
            "original_class_share": round(float(np.mean(ya.argmax(1) == 0)), 4),
            "relative_l2": round(float(np.linalg.norm(ya - yb) / np.linalg.norm(ya)), 4),
            "preprocessing": "rows 84:140 -> 48x192 bilinear, BGR, (x/255-0.5)/0.5"}


def ddddocr_fidelity(original: Path, pruned: Path, images: np.ndarray | None, count: int = 32) -> dict:
    """Relative L2 of the raw [1, 3549, 6] output on natural images resized to 416x416, fed as
    ddddocr's own preproc feeds them (BGR, 0..255 floats, no scaling); and with x/255 (what
    the issue's brief assumed) for comparison."""
    if images is None:
        return {"skipped": "no images"}
    a, b = _session(original), _session(pruned)
    name = a.get_inputs()[0].name
    picked = images[np.linspace(0, len(images) - 1, count).astype(int)]
    out = {"images": count}
    for label, scale in (("raw_bgr_0_255", 1.0), ("div255", 1 / 255.0)):
        errors = []
        for image in picked:
            x = (_resize(image[None], 416, 416)[:, ::-1] * scale).astype(np.float32)
            ya, yb = a.run(None, {name: x})[0], b.run(None, {name: x})[0]
            errors.append(np.linalg.norm(ya - yb) / np.linalg.norm(ya))
        out[f"relative_l2_{label}"] = {"mean": round(float(np.mean(errors)), 4), "median": round(float(np.median(errors)), 4),
                                       "max": round(float(np.max(errors)), 4)}
    return out


# -- goals and the table ----------------------------------------------------------------------

def flags(row: dict) -> list[str]:
    """Why a model misses issue 10's goal (empty: it meets it)."""
    out = []
    if "failure" in row:
        return [row["failure"]]
    if row.get("units_without_report_macs"):
        out.append(f"the report gives no MACs for {len(row['units_without_report_macs'])} unit(s)")
    if row.get("macs_reduction") is None:
        out.append("MACs unknown")
    elif row["macs_reduction"] < GOAL:
        out.append(f"MACs -{100 * row['macs_reduction']:.1f}% < 20%")
    if not row.get("validation", {}).get("runtime"):
        out.append("validation did not run")
    if not row.get("interface", {}).get("ok"):
        out.append(f"interface: {row.get('interface', {}).get('problem')}")
    cli = row.get("cli")
    if cli is not None:
        if cli["exit"] != 0:
            out.append(f"CLI exit {cli['exit']}: {cli['stderr']}")
        elif cli.get("same_file_as_api") is False:
            out.append("CLI wrote other bytes than the API")
    masked = row.get("masked_reference", {})
    if "error" in masked:
        out.append(f"method prune fails: {masked['error']}")
    elif masked and not masked["exact"]:
        out.append(f"pruned != masked original (rel. L2 {masked['relative_l2']:.2e}, unmatched {masked['unmatched']})")
    if row.get("unmatched_units"):
        out.append(f"{len(row['unmatched_units'])} unit(s) not matched to layers by the bench")
    return out


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.0f}%"


def _millions(value: int | None) -> str:
    return "?" if value is None else f"{value / 1e6:.1f}M" if value >= 1e5 else f"{value / 1e6:.2f}M"


def markdown_row(row: dict) -> str:
    if "failure" in row:
        cli = row.get("cli", {})
        return (f"| {row['model']} | **fails**: {row['failure']} | | | | | | | | | "
                f"{'exit ' + str(cli['exit']) if cli else ''} | {row.get('seconds', '')} |")
    drift = max((o["relative_l2"] for o in row["validation"]["outputs"]), default=None)
    top1 = [o["top1_agreement"] for o in row["validation"]["outputs"] if o["top1_agreement"] is not None]
    why = "; ".join(f"{k} ({v})" for k, v in row["left_whole_reasons"].items()) or "—"
    macs = (f"{_millions(row['macs_before'])} → {_millions(row['macs_after'])} (−{_pct(row['macs_reduction'])})")
    params = f"{_millions(row['parameters_before'])} → {_millions(row['parameters_after'])}"
    runs = "yes" if row["interface"]["ok"] else f"**no**: {row['interface']['problem']}"
    masked = row.get("masked_reference", {})
    sound = ("?" if not masked else f"**fails**: {masked['error']}" if "error" in masked
             else f"{masked['relative_l2']:.0e}" if masked["exact"] else f"**{masked['relative_l2']:.1e}**")
    cli = row.get("cli")
    cli_text = "—" if cli is None else ("0" + ("" if cli.get("same_file_as_api", True) else " (other bytes)")
                                        if cli["exit"] == 0 else f"**{cli['exit']}**")
    goal = "" if not row["flags"] else " ⚠"
    return (f"| {row['model']}{goal} | {macs} | {params} | {_pct(row['macs_share_prunable'])} | "
            f"{row['units']} ({row['chains']} / {row['groups']}) | {row['pruned']} | {row['left_whole']}: {why} | "
            f"{runs} | {sound} | {'?' if drift is None else f'{drift:.3f}'}{f' ({100 * top1[0]:.0f}%)' if top1 else ''} | "
            f"{cli_text} | {row['seconds']} |")


HEADER = ("| model | MACs/sample (reduction) | parameters | MACs in prunable units | units found (chains / groups) "
          "| pruned | left whole: why (units) | runs in onnxruntime, same names and shapes | `prune` = masked original "
          "| drift: rel. L2 (top-1) | CLI exit | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def _commit_text(commit: dict | None) -> str:
    if not commit:
        return "not recorded"
    return commit["commit"][:10] + (" with uncommitted changes" if commit.get("modified_files") else "")


def write(rows: list[dict], out: Path, seconds: float, command: str, load: list[float], commit: dict | None,
          merged: list[dict] | None = None) -> None:
    """coverage.json and coverage.md; `merged`: the later runs whose rows replaced some of the first run's."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, onnxruntime {ort.__version__}"
    meta = {"command": command, "seconds": round(seconds, 1), "machine": machine,
            "load_average": load, "commit": commit, **({"merged": merged} if merged else {}),
            "options": f"CompressOptions(ratio={RATIO}, input_shapes=...) (all else default: groups scope, moments-greedy)",
            "goal": "issue 10: >= 20% fewer MACs, runs in onnxruntime with the original's names and shapes"}
    out.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(json.dumps(row, default=str) for row in rows)  # one line per model
    (out / "coverage.json").write_text(f'{{"meta": {json.dumps(meta, indent=1)},\n"rows": [\n{body}\n]}}\n')
    lines = [
        "# Coverage: what `onnx-lbyl IN OUT --ratio 0.3` prunes (issue 10)",
        "",
        "Reproduce: `python bench/torch_zoo.py --out bench/results/zoo` (torch, dev extra), then "
        "`python bench/coverage.py` (reads ../shared/models and ../shared/data). "
        f"This run: commit {_commit_text(commit)}, {meta['seconds']:.0f} s on {machine}, shared with other jobs (1-minute load average "
        f"{min(load):.1f} to {max(load):.1f} over the run; the seconds column is wall time under that load); "
        "every compression is "
        f"`onnx_lbyl.compress(path, {meta['options']})`, then once more through `onnx-lbyl IN OUT --ratio 0.3 "
        "[--input-shape ...] --report R.json`." + "".join(
            f" Rows re-run later by `{m['command']}` at commit {_commit_text(m['commit'])} replace the first run's."
            for m in merged or []),
        "",
        "Models: every bench/torch_zoo.py export (random non-degenerate weights, opset 17, `_folded` = torch's "
        "default BN folding), the real files of ../shared/models (ppocr at `--input-shape x:1,3,48,192`), and "
        "small numpy-built networks (`np_*`: bench/zoo.py's ResNet-18 and VGG-16-BN at width 0.25, 64x64; a "
        "tf2onnx-style NHWC CNN; the MLP of bench/coverage.py is left out: its 28x28 probe alone takes ~20 s).",
        "",
        HEADER,
        *[markdown_row(r) for r in rows],
        "",
        "Columns. *MACs in prunable units*: the share of the original's MACs in layers (Conv, Gemm, MatMul with a "
        "constant weight) that a pruned unit narrows (its producers, depthwise Convs and consumers), computed here "
        "from graph.cost.node_macs on the canonicalised model (every unit's MACs are in coverage.json, `per_unit`, "
        "beside the MACs the report gives it, `report_macs`; a unit the report gives none is a miss). "
        "*Units*: the report's layers, chains (one producer, one "
        "consumer) and groups; *left whole*: the report's `skipped` groups, counted once per distinct reason "
        "(names taken out; a unit with several reasons counts under each). *Drift*: the largest relative L2 error of "
        "an output on the report's random validation batch (top-1 agreement where the output looks like class "
        "scores); random weights and inputs, so not an accuracy. *Runs*: checked here on the written model, "
        "original and pruned in onnxruntime on the same random batch: the same input/output names, types and "
        "declared shapes, the same output shapes, finite. *`prune` = masked original*: the same model compressed "
        "with `--method prune` (no compensation) against the canonicalised original whose consumers' weight columns "
        "of the removed channels are zeroed, on one random batch (relative L2): the two compute the same function, "
        "so this checks that every weight, bias, per-channel constant and shape argument lost the right channels. "
        "*CLI exit*: the command line's exit code (and whether it "
        "wrote the same bytes as the API). ⚠ misses a goal: listed below.",
        "",
    ]
    flagged = [r for r in rows if r.get("flags")]
    lines.append("## Misses" if flagged else "## Misses: none")
    lines += [f"- {r['model']}: {'; '.join(r['flags'])}" for r in flagged]
    wild = [r for r in rows if r.get("fidelity")]
    if wild:
        lines += ["", "## Wild models on natural images (500-image ImageNet sample)", ""]
        for r in wild:
            f = r["fidelity"]
            if "top1_agreement" in f:
                lines.append(f"- {r['model']}: top-1 agreement {100 * f['top1_agreement']:.1f}% of {f['images']} "
                             f"horizontal strips (class 0 for {100 * f['original_class_share']:.0f}% of them unpruned), "
                             f"relative L2 of the 2-class output {f['relative_l2']:.3f}. Assumed: {f['preprocessing']}.")
            elif "relative_l2_raw_bgr_0_255" in f:
                raw, div = f["relative_l2_raw_bgr_0_255"], f["relative_l2_div255"]
                lines.append(f"- {r['model']}: relative L2 of the [1, 3549, 6] output over {f['images']} images resized "
                             f"to 416x416: mean {raw['mean']:.3f} (median {raw['median']:.3f}, max {raw['max']:.3f}) fed "
                             "as ddddocr's own preproc does (BGR, 0..255, no scaling: the input this model was "
                             f"trained on); with x/255 instead: mean {div['mean']:.3f}.")
    (out / "coverage.md").write_text("\n".join(lines) + "\n")


def _images(shared: Path) -> np.ndarray | None:
    path = shared / IMAGES
    return np.load(path)["images"] if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO, help="bench/torch_zoo.py's folder (default: %(default)s)")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared models and data (default: %(default)s)")
    parser.add_argument("--only", nargs="*", default=None, help="models whose name contains one of these (results are written only with --out or --merge)")
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line check")
    parser.add_argument("--out", type=Path, default=None, help="where coverage.{md,json} go (default: bench/results)")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace those models' rows in the existing coverage.json, keep the others")
    args = parser.parse_args(argv)
    if args.merge and args.only is None:
        parser.error("--merge needs --only")
    chosen = [e for e in entries(args.zoo, args.shared)
              if args.only is None or any(p in e.name for p in args.only)]
    missing = [e.name for e in chosen if e.family == "torch zoo" and not e.path.is_file()]
    if missing:
        import torch_zoo  # needs torch (dev extra)
        for name in missing:
            torch_zoo.build(name, args.zoo)
    images = _images(args.shared)
    started = time.perf_counter()
    rows, load = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="coverage_") as tmp:
        for entry in chosen:
            row = survey(entry, Path(tmp), cli=not args.no_cli, images=images)
            row["load_average"] = round(os.getloadavg()[0], 2)
            load.append(row["load_average"])
            rows.append(row)
            print(markdown_row(row), flush=True)
    seconds = time.perf_counter() - started
    print(HEADER)
    for row in rows:
        print(markdown_row(row))
    print(f"{seconds:.0f} s")
    out = args.out or HERE / "results"
    command = "python bench/coverage.py " + " ".join(argv)
    if args.merge:
        earlier = json.loads((out / "coverage.json").read_text())
        fresh = {row["model"]: row for row in rows}
        rows = [fresh.pop(row["model"], row) for row in earlier["rows"]] + list(fresh.values())
        merged = earlier["meta"].get("merged", []) + [{"command": command, "seconds": round(seconds, 1),
                                                        "commit": git_state()}]
        write(rows, out, earlier["meta"]["seconds"], earlier["meta"]["command"], earlier["meta"]["load_average"],
              earlier["meta"].get("commit"), merged)
    elif args.out is not None or args.only is None:
        write(rows, out, seconds, command, [round(x, 2) for x in load], git_state())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
