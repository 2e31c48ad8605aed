"""End-to-end run of onnx-lbyl on a real model over 2 GB (external data), once, recorded.

Why this exists: the tool claims to read and write models too large for one protobuf
(over 2 GB) through ONNX's external data format (OUT.onnx + OUT.onnx.data), staging the
pruned files beside the destination, validating them and only then moving them into place
(onnx_lbyl/graph/external.py, onnx_lbyl/pipeline.py). The unit tests exercise those paths
with the size threshold lowered to a few KB; this script runs the real command line on a
real model past the real threshold and records what happened.

What it does:
1. builds, with onnx.helper and numpy only, a plain CNN (input [N, C, 8, 8] -> L x [Conv 3x3
   C->C + bias -> BatchNormalization -> Relu] -> GlobalAveragePool -> Flatten -> Gemm to 10
   classes) whose weights are written tensor by tensor straight into `big.onnx.data`; the
   ModelProto only ever holds external references, so nothing over 2 GB is serialised;
   then checks that onnxruntime runs it (from its path) to finite outputs;
2. runs `onnx-lbyl big.onnx out.onnx --ratio 0.3 --report report.json` in a subprocess
   under /usr/bin/time -v (wall time, peak RSS, exit code, stderr);
3. checks the output: out.onnx + out.onnx.data and nothing else left in the output folder,
   onnx.checker.check_model(path), onnxruntime from the path (finite outputs, error against
   the original computed here independently of the tool), parameter counts per layer, and
   that the input files are byte-identical (SHA-256 before and after);
4. measures the floor: onnx.load + onnx.save_model(save_as_external_data=True) of the same
   model, in a subprocess, timed the same way;
5. writes bench/results/large_model.json and bench/results/large_model.md and prints the table.

Size: pruning ratio r removes r of a Conv's output channels *and*, through the next layer,
r of its input channels, so an inner Conv keeps (1 - r)^2 = 0.49 of its weights at r = 0.3.
A 2.2 GB input would give a ~1.1 GB output, which the tool rightly writes as one ordinary
file, and the large *write* path (staging, commit) would not run. The default size
(117 layers at 1024 channels, 4.4 GB) is chosen so that the pruned model (~2.17 GB) is over
the threshold too; `--layers`/`--channels` change it (the script says in advance whether the
output is predicted to be large).

Run:  python bench/large_model.py [--workdir DIR] [--keep]
      (DIR: where the work folder is made, default the system's temporary folder; the work
      folder is deleted at the end unless --keep.) Needs about 2.6 x the model size of disk.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

RESULTS = Path(__file__).resolve().parent / "results"
VENV_BIN = Path(sys.executable).parent
CLASSES = 10
OPSET = 17
IR_VERSION = 8
# He init keeps E[a^2] constant through Conv+ReLU; the random BN (gamma in [0.5, 1.5],
# var in [0.5, 1.5]) multiplies it on average by E[gamma^2] E[1/var] = (13/12) ln 3 ~ 1.19 a
# layer, which over 100+ layers is a factor ~1e4 in the activations. Dividing the He std by
# its square root keeps activations O(1) at any depth (and near the BN running statistics).
BN_GAIN = float(np.sqrt(13.0 / 12.0 * np.log(3.0)))
GB = 1e9


# ----------------------------------------------------------------------------- building

@dataclass
class BuiltModel:
    path: str
    data_path: str
    layers: int
    channels: int
    spatial: int
    parameters: int
    data_bytes: int
    model_file_bytes: int
    seconds: float


def external_tensor(name: str, array: np.ndarray, data, location: str) -> TensorProto:
    """Append `array` (float32) to the open data file and return a TensorProto that refers to it."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    offset = data.tell()
    data.write(array.tobytes())
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = TensorProto.FLOAT
    tensor.dims.extend(array.shape)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", array.nbytes)):
        tensor.external_data.add(key=key, value=str(value))
    return tensor


def conv_block(i: int, x: str, channels: int, rng: np.random.Generator, data, location: str,
               ) -> tuple[list[onnx.NodeProto], list[TensorProto], str]:
    """Conv 3x3 (+bias) -> BatchNormalization -> Relu, weights appended to `data`."""
    fan_in = channels * 9
    weight = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32)
    weight *= np.float32(np.sqrt(2.0 / fan_in) / BN_GAIN)
    tensors = [
        external_tensor(f"conv{i}.weight", weight, data, location),
        external_tensor(f"conv{i}.bias", rng.normal(0.0, 0.1, channels), data, location),
        external_tensor(f"bn{i}.scale", rng.uniform(0.5, 1.5, channels), data, location),
        external_tensor(f"bn{i}.bias", rng.normal(0.0, 0.3, channels), data, location),
        external_tensor(f"bn{i}.mean", rng.normal(0.0, 0.1, channels), data, location),
        external_tensor(f"bn{i}.var", rng.uniform(0.5, 1.5, channels), data, location),
    ]
    del weight
    nodes = [
        helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"], name=f"conv{i}",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", [f"conv{i}"] + [t.name for t in tensors[2:]], [f"bn{i}"],
                         name=f"bn{i}", epsilon=1e-5),
        helper.make_node("Relu", [f"bn{i}"], [f"relu{i}"], name=f"relu{i}"),
    ]
    return nodes, tensors, f"relu{i}"


def build_model(folder: Path, layers: int, channels: int, spatial: int, seed: int = 0) -> BuiltModel:
    """Write big.onnx + big.onnx.data into `folder`, one tensor at a time."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    path, data_path = folder / "big.onnx", folder / "big.onnx.data"
    nodes: list[onnx.NodeProto] = []
    initializers: list[TensorProto] = []
    x = "input"
    with open(data_path, "wb") as data:
        for i in range(layers):
            block, tensors, x = conv_block(i, x, channels, rng, data, data_path.name)
            nodes += block
            initializers += tensors
        fc = rng.standard_normal((CLASSES, channels)) * np.sqrt(1.0 / channels)
        initializers += [external_tensor("fc.weight", fc, data, data_path.name),
                         external_tensor("fc.bias", np.zeros(CLASSES), data, data_path.name)]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "large_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, spatial, spatial])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bench/large_model.py")
    model.ir_version = IR_VERSION
    onnx.save_model(model, str(path))  # every initializer is already external: only the graph is written
    parameters = sum(int(np.prod(t.dims)) for t in initializers)
    return BuiltModel(str(path), str(data_path), layers, channels, spatial, parameters,
                      data_path.stat().st_size, path.stat().st_size, round(time.perf_counter() - started, 2))


# ----------------------------------------------------------------------------- helpers

def sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def digests(paths: list[Path]) -> dict[str, str]:
    return {p.name: sha256(p) for p in paths}


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir())}


def run_onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """Output of the model at `path` (read with its external data by onnxruntime), and seconds."""
    started = time.perf_counter()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output = session.run(None, feeds)[0]
    del session
    return output, round(time.perf_counter() - started, 2)


def relative_l2(reference: np.ndarray, other: np.ndarray) -> float:
    a, b = reference.astype(np.float64), other.astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def conv_weight_shapes(path: Path) -> dict[str, list[int]]:
    """Shapes of the Conv/Gemm weights, read from the model file without its data."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {n.input[1]: n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    return {weights[t.name]: list(t.dims) for t in model.graph.initializer if t.name in weights}


def parameter_count(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def external_locations(path: Path) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    return sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})


@dataclass
class Timed:
    """A subprocess run under /usr/bin/time -v."""
    command: list[str]
    exit_code: int
    wall_seconds: float
    peak_rss_kb: int | None
    peak_rss_kb_getrusage: int
    stderr_tail: list[str]
    stdout_tail: list[str] = field(default_factory=list)


def run_timed(command: list[str], logs: Path, label: str, timeout: float) -> Timed:
    """Run `command`, its stdout/stderr to files in `logs`; wall time and peak RSS."""
    time_file = logs / f"{label}.time"
    use_time = Path("/usr/bin/time").exists()
    full = (["/usr/bin/time", "-v", "-o", str(time_file)] if use_time else []) + command
    with open(logs / f"{label}.stdout", "wb") as out, open(logs / f"{label}.stderr", "wb") as err:
        started = time.perf_counter()
        try:
            code = subprocess.run(full, stdout=out, stderr=err, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = -999
        wall = round(time.perf_counter() - started, 2)
    # max over every child waited for so far: the first big child is the tool, so this is its peak
    children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak = None
    if use_time and time_file.exists():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_file.read_text())
        peak = int(found.group(1)) if found else None
    tail = lambda p: p.read_text(errors="replace").splitlines()[-15:]  # noqa: E731
    return Timed(command, code, wall, peak, children_rss, tail(logs / f"{label}.stderr"), tail(logs / f"{label}.stdout"))


def floor_copy(source: str, target: str) -> None:
    """The floor: what loading and saving the same model with external data costs."""
    started = time.perf_counter()
    model = onnx.load(source)
    loaded = time.perf_counter()
    onnx.save_model(model, target, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=Path(target).name + ".data")
    print(json.dumps({"load_seconds": round(loaded - started, 2),
                      "save_seconds": round(time.perf_counter() - loaded, 2)}))


def machine_info() -> dict:
    import onnx_lbyl
    meminfo = Path("/proc/meminfo").read_text()
    kb = lambda key: int(re.search(rf"{key}:\s+(\d+)", meminfo).group(1))  # noqa: E731
    return {
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "memory_total_gb": round(kb("MemTotal") * 1024 / GB, 1),
        "memory_available_gb_at_start": round(kb("MemAvailable") * 1024 / GB, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnx_lbyl": onnx_lbyl.__version__,
    }


def predicted_output_bytes(layers: int, channels: int, ratio: float) -> int:
    kept = channels - int(round(channels * ratio))  # rough; the tool's rounding may differ by one
    first = kept * channels * 9 + 5 * kept
    inner = (layers - 1) * (kept * kept * 9 + 5 * kept)
    return 4 * (first + inner + CLASSES * kept + CLASSES)


# ----------------------------------------------------------------------------- the run

def check_output(out_dir: Path, out_path: Path, feeds: dict[str, np.ndarray], reference: np.ndarray,
                 input_shapes: dict[str, list[int]], report: dict | None, ratio: float) -> dict:
    checks: dict[str, dict] = {}
    files = sorted(p.name for p in out_dir.iterdir())
    expected = sorted([out_path.name, out_path.name + ".data", "report.json"])
    checks["output files exist (out.onnx + out.onnx.data)"] = {
        "passed": out_path.exists() and (out_dir / (out_path.name + ".data")).exists(), "files": files}
    checks["nothing else left in the output folder"] = {"passed": files == expected, "files": files,
                                                        "expected": expected}
    if not out_path.exists():
        return checks
    locations = external_locations(out_path)
    checks["out.onnx refers only to out.onnx.data"] = {"passed": locations == [out_path.name + ".data"],
                                                       "locations": locations}
    started = time.perf_counter()
    try:
        onnx.checker.check_model(str(out_path))
        checks["onnx.checker.check_model(path)"] = {"passed": True}
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        checks["onnx.checker.check_model(path)"] = {"passed": False, "error": str(exc)[:500]}
    checks["onnx.checker.check_model(path)"]["seconds"] = round(time.perf_counter() - started, 2)
    try:
        output, seconds = run_onnxruntime(out_path, feeds)
        finite = bool(np.all(np.isfinite(output)))
        checks["onnxruntime runs out.onnx from its path, finite outputs"] = {
            "passed": finite and output.shape == reference.shape, "seconds": seconds,
            "relative_l2_vs_original_here": relative_l2(reference, output),
            "top1_agreement_here": float(np.mean(output.argmax(1) == reference.argmax(1)))}
    except Exception as exc:  # noqa: BLE001
        checks["onnxruntime runs out.onnx from its path, finite outputs"] = {"passed": False, "error": str(exc)[:500]}
    checks["parameter counts per layer"] = parameter_check(input_shapes, conv_weight_shapes(out_path), report, ratio)
    return checks


def parameter_check(before: dict[str, list[int]], after: dict[str, list[int]], report: dict | None,
                    ratio: float) -> dict:
    """Every Conv keeps 1 - ratio of its output channels, rounded up to the tool's default
    multiple (DEFAULT_ROUND_TO: 1024 x 0.7 = 716.8 keeps 720), as the report says; its weights
    shrink to kept_out*kept_in/(C*C): ~0.7 for the first Conv and the Gemm, whose other side is
    not pruned, and ~0.49 for the Convs inside, pruned on both sides."""
    from onnx_lbyl.options import DEFAULT_ROUND_TO

    keep, unit = 1.0 - ratio, DEFAULT_ROUND_TO
    rows, passed = [], set(before) == set(after)
    reported = {l["name"]: l for l in (report or {}).get("layers", [])}
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            continue
        out_ratio = new[0] / old[0]
        in_ratio = new[1] / old[1]
        param_ratio = float(np.prod(new) / np.prod(old))
        ok = abs(param_ratio - (out_ratio * in_ratio)) < 1e-9 and (in_ratio == 1 or abs(in_ratio - keep) <= unit / old[1])
        if name.startswith("conv"):
            ok = ok and abs(out_ratio - keep) <= unit / old[0] and reported.get(name, {}).get("channels_after") == new[0]
        rows.append({"layer": name, "before": old, "after": new, "param_ratio": round(param_ratio, 4)})
        passed = passed and ok
    ratios = [r["param_ratio"] for r in rows]
    return {"passed": bool(passed), "layers_compared": len(rows), "reported_layers": len(reported),
            "param_ratio_min": min(ratios) if ratios else None, "param_ratio_max": max(ratios) if ratios else None,
            "first": rows[:2], "last": rows[-2:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where to make the work folder (default: system temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--layers", type=int, default=117)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--spatial", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--method", default=None, help="onnx-lbyl --method (default: the tool's default)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed to the tool")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--_floor", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._floor:
        floor_copy(*args._floor)
        return 0

    from onnx_lbyl.graph.external import LARGE_MODEL_BYTES
    result: dict = {"machine": machine_info(), "threshold_bytes": LARGE_MODEL_BYTES}
    input_bytes = 4 * args.layers * (args.channels * args.channels * 9 + 5 * args.channels)
    output_bytes = predicted_output_bytes(args.layers, args.channels, args.ratio)
    result["planned"] = {"input_bytes": input_bytes, "predicted_output_bytes": output_bytes,
                         "input_over_threshold": input_bytes > LARGE_MODEL_BYTES,
                         "output_predicted_over_threshold": output_bytes > LARGE_MODEL_BYTES}
    print(f"model: {args.layers} x Conv3x3 {args.channels}->{args.channels}: {input_bytes / GB:.2f} GB; "
          f"pruned at {args.ratio}: ~{output_bytes / GB:.2f} GB (threshold {LARGE_MODEL_BYTES / GB:.2f} GB)")
    base = Path(args.workdir) if args.workdir else Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    needed = int(2.7 * input_bytes)
    result["disk"] = {"folder": str(base), "free_bytes": free, "needed_bytes": needed}
    if free < needed:
        print(f"not enough disk in {base}: {free / GB:.1f} GB free, {needed / GB:.1f} GB needed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="onnx-lbyl-large.", dir=base))
    result["workdir"] = str(work)
    try:
        run(args, work, result)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        result["workdir_kept"] = bool(args.keep)
    write_results(result, Path(args.results))
    return 0 if result["all_passed"] else 1


def run(args: argparse.Namespace, work: Path, result: dict) -> None:
    in_dir, out_dir, logs, floor_dir = work / "in", work / "out", work / "logs", work / "floor"
    for folder in (in_dir, out_dir, logs, floor_dir):
        folder.mkdir()
    print("building ...", flush=True)
    built = build_model(in_dir, args.layers, args.channels, args.spatial)
    result["input"] = asdict(built)
    print(f"built {built.data_bytes / GB:.2f} GB in {built.seconds} s", flush=True)
    big, big_data = Path(built.path), Path(built.data_path)

    feeds = {"input": np.random.default_rng(1).standard_normal((2, args.channels, args.spatial, args.spatial),
                                                               dtype=np.float32)}
    reference, seconds = run_onnxruntime(big, feeds)
    result["input_check"] = {"onnxruntime_seconds": seconds, "finite": bool(np.all(np.isfinite(reference))),
                             "output_abs_max": float(np.abs(reference).max()),
                             "output_std": float(reference.std())}
    print(f"unpruned model runs in onnxruntime: {result['input_check']}", flush=True)
    input_shapes = conv_weight_shapes(big)
    input_parameters = parameter_count(big)

    started = time.perf_counter()
    before = digests([big, big_data])
    result["hash_seconds"] = round(time.perf_counter() - started, 2)
    input_stat = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (big, big_data)}

    out = out_dir / "out.onnx"
    command = [str(VENV_BIN / "onnx-lbyl"), str(big), str(out), "--ratio", str(args.ratio),
               "--report", str(out_dir / "report.json")]
    if args.method:
        command += ["--method", args.method]
    print("running:", " ".join(command), flush=True)
    tool = run_timed(command, logs, "tool", args.timeout)
    result["tool"] = asdict(tool)
    result["tool"]["method"] = args.method or "default (moments-greedy)"
    result["output_files"] = file_sizes(out_dir)
    print(f"exit {tool.exit_code}, {tool.wall_seconds} s, peak RSS {tool.peak_rss_kb} kB", flush=True)
    report = None
    if (out_dir / "report.json").exists():
        report = json.loads((out_dir / "report.json").read_text())
        result["report"] = {k: report.get(k) for k in ("validation", "parameters_before", "parameters_after",
                                                        "macs_before", "macs_after", "seconds", "options")}
        result["report"]["layers_pruned"] = len(report.get("layers", []))
        result["report"]["skipped"] = report.get("skipped")

    checks = {"tool exit code 0": {"passed": tool.exit_code == 0, "exit_code": tool.exit_code}}
    checks["input model runs in onnxruntime, finite outputs"] = {"passed": result["input_check"]["finite"]}
    checks.update(check_output(out_dir, out, feeds, reference, input_shapes, report, args.ratio))
    if out.exists():
        result["output_parameters"] = parameter_count(out)
    result["input_parameters"] = input_parameters
    after = digests([big, big_data])
    same_stat = all((p.stat().st_size, p.stat().st_mtime_ns) == input_stat[p.name] for p in (big, big_data))
    checks["input files byte-identical (SHA-256, size, mtime)"] = {"passed": after == before and same_stat,
                                                                   "sha256": before}
    checks["input folder unchanged (no files added)"] = {"passed": sorted(p.name for p in in_dir.iterdir())
                                                         == sorted([big.name, big_data.name])}
    result["checks"] = checks
    result["all_passed"] = all(c["passed"] for c in checks.values())

    print("floor: onnx.load + onnx.save_model(external data) ...", flush=True)
    floor = run_timed([sys.executable, str(Path(__file__).resolve()), "--_floor", str(big),
                       str(floor_dir / "copy.onnx")], logs, "floor", args.timeout)
    result["floor"] = asdict(floor)
    result["floor"]["files"] = file_sizes(floor_dir)
    try:
        result["floor"].update(json.loads(floor.stdout_tail[-1]))
    except (IndexError, ValueError):
        pass
    shutil.rmtree(floor_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- results

def gb(n: int | None) -> str:
    return "-" if n is None else f"{n / GB:.3f} GB"


def table(result: dict) -> str:
    inp, tool, floor = result["input"], result["tool"], result.get("floor", {})
    files = result.get("output_files", {})
    validation = (result.get("report") or {}).get("validation") or {}
    outputs = validation.get("outputs") or [{}]
    rss = lambda t: "-" if not t.get("peak_rss_kb") else f"{t['peak_rss_kb'] / 1024 / 1024:.2f} GiB"  # noqa: E731
    rows = [
        ("input model", f"{inp['layers']} x [Conv3x3 {inp['channels']}->{inp['channels']} + BN + Relu] + Gemm, "
                        f"{inp['parameters'] / 1e6:.1f} M parameters"),
        ("input files", f"big.onnx {inp['model_file_bytes'] / 1e3:.0f} kB + big.onnx.data {gb(inp['data_bytes'])}"),
        ("command", "`onnx-lbyl big.onnx out.onnx --ratio 0.3 --report report.json`"
                    + (f" --method {tool['method']}" if not tool["method"].startswith("default") else "")),
        ("method", tool["method"]),
        ("exit code", str(tool["exit_code"])),
        ("wall time (tool)", f"{tool['wall_seconds']:.1f} s"),
        ("peak RSS (tool)", rss(tool)),
        ("output files", ", ".join(f"{k} {gb(v) if v > 1e8 else f'{v / 1e3:.0f} kB'}" for k, v in files.items())),
        ("parameters", f"{result.get('input_parameters', 0) / 1e6:.1f} M -> "
                       f"{result.get('output_parameters', 0) / 1e6:.1f} M"),
        ("relative L2 error (tool's validation)", f"{outputs[0].get('relative_l2_error', '-')} (top-1 agreement {outputs[0].get('top1_agreement', '-')}, "
                                                  f"batch {validation.get('batch', '-')} {validation.get('inputs', '')})"),
        ("floor: onnx.load + onnx.save (external data)",
         f"{floor.get('wall_seconds', '-')} s wall (load {floor.get('load_seconds', '-')} s, "
         f"save {floor.get('save_seconds', '-')} s), peak RSS {rss(floor) if floor else '-'}"),
        ("all checks passed", "yes" if result["all_passed"] else "NO"),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [
        "# onnx-lbyl on a real model over 2 GB (external data)",
        "",
        "Written by `bench/large_model.py` (run: `python bench/large_model.py [--workdir DIR] [--keep]`).",
        f"Machine: {machine['cpu_count']} CPUs (load average at start {machine['load_average_at_start'][0]:.2f}), "
        f"{machine['memory_total_gb']} GB RAM, Python {machine['python']}, onnx {machine['onnx']}, "
        f"onnxruntime {machine['onnxruntime']}, onnx-lbyl {machine['onnx_lbyl']}.",
        f"Large-model threshold of the tool: {gb(result['threshold_bytes'])} of initializers "
        f"(input {gb(result['planned']['input_bytes'])}, pruned output predicted "
        f"{gb(result['planned']['predicted_output_bytes'])}: both over it, so both the large read path and the "
        "large write path (staging, validation from files, move into place) run).",
        "",
        table(result),
        "",
        "## Checks",
        "",
    ]
    for name, check in result.get("checks", {}).items():
        details = {k: v for k, v in check.items() if k not in ("passed", "first", "last", "sha256")}
        lines.append(f"- {'PASS' if check['passed'] else 'FAIL'}: {name}"
                     + (f" ({json.dumps(details)})" if details else ""))
    tool = result["tool"]
    if tool["exit_code"] != 0:
        lines += ["", "## Tool failure", "", f"Command: `{' '.join(tool['command'])}`",
                  f"Exit code: {tool['exit_code']}", "", "Last lines of stderr:", "", "```",
                  *tool["stderr_tail"], "```"]
    else:
        lines += ["", "Last lines of the tool's stderr:", "", "```", *tool["stderr_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_results(result: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "large_model.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (folder / "large_model.md").write_text(markdown(result))
    print(table(result))


if __name__ == "__main__":
    sys.exit(main())
