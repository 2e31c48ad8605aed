"""What pruning buys at run time: onnxruntime latency ratio vs MACs ratio, and channel rounding.

    python bench/latency.py                       # ~10 min on the 2-core machine (shared, loaded)
    python bench/latency.py --models resnet50 --ratios 0.3 0.5

For ResNet-50/101 and VGG-16-BN (bench/zoo.py) the tool is run once at ratio 0.3: its
output is timed, and its report gives the pruned layers (name, next layer, width). For
every ratio 0.1..0.5 the pruned *architecture* is then rebuilt by slicing those layers of
the original to floor(n * (1 - ratio)) channels, the count the tool keeps (`set_widths`).
Latency depends on the architecture, not on the weight values, so this times what the tool
produces without paying a compression per point; at 0.3 the sliced model and the tool's
output are both timed and their MACs must agree (checked, in the JSON).

Channel rounding: the same slicing with every kept count rounded up to a multiple of 4 or
16 (`up4`, `up16`; `--rounding up8 down16` add rounding up to 8 and down to 16), to see
whether widths that fit the CPU kernels give more speed per removed MAC. A variant whose
widths equal another's (64 * 0.5 = 32 is already a multiple of 16) is timed once. At ratio 0.3 the JSON also
counts how many Convs onnxruntime turned into its blocked NCHWc kernels: measured here, it
does so only when a Conv's *input* channels are a multiple of 4 (or fewer than 4, like an
RGB stem); output channels are padded up to the block size (16 with AVX-512, 8 with AVX2).

MobileNetV2 has no chain the tool prunes (ReLU6 and depthwise blocks, reported as skipped);
its row times the architecture a depthwise-aware pruner would produce (the expanded width
of each inverted residual reduced), built with zoo's `inner` option.

Protocol (onnx_lbyl.latency): batch 1, 1 intra-op thread (this machine is shared; one
thread is the most repeatable figure), 1 warm-up run then at least 5 timed runs per model
(more for fast models: about 1 s of runs, at most 40), the original's and the pruned
model's runs alternating, median reported. One extra point per
model at ratio 0.3 uses what `onnx-lbyl --benchmark` uses: the validation batch (8) and
onnxruntime's default threads (3 timed runs).

Writes bench/results/latency.json, latency.png (latency ratio vs MACs ratio) and
latency_rounding.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import zoo  # noqa: E402
from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.graph.cost import model_cost  # noqa: E402
from onnx_lbyl.latency import compare_latency, measure_latency  # noqa: E402
from onnx_lbyl.numerics.selection import kept_count  # noqa: E402
from onnx_lbyl.validate import random_inputs  # noqa: E402

MODELS = ("resnet50", "resnet101", "vgg16_bn", "mobilenet_v2")
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
ROUNDING = {
    "exact": lambda k: k,
    "up4": lambda k: -(-k // 4) * 4,
    "up8": lambda k: -(-k // 8) * 8,
    "up16": lambda k: -(-k // 16) * 16,
    "down16": lambda k: max(16, k // 16 * 16),
}


# --- rebuilding a pruned architecture -----------------------------------------------------
def _label(node: onnx.NodeProto) -> str:
    """How the tool's report names a layer: the node name, else its weight's name."""
    return node.name or (node.input[1] if len(node.input) > 1 else node.output[0])


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _axes(node: onnx.NodeProto) -> tuple[int, int]:
    """(output-channel axis, input-channel axis) of a Conv/Gemm/MatMul weight."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "Gemm":
        return (0, 1) if _attr(node, "transB", 0) else (1, 0)
    if node.op_type == "MatMul":
        return 1, 0
    raise NotImplementedError(f"cannot resize a {node.op_type}")


def set_widths(model: onnx.ModelProto, layers: list[tuple[str, str, int]]) -> onnx.ModelProto:
    """A copy of `model` where each (layer, next layer, k) keeps only its first k channels.

    The layer's weight/bias, the BatchNormalization parameters on the way and the next
    layer's input channels are sliced; the values are meaningless for accuracy but the
    architecture (and so the latency) is the pruned one.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = {_label(n): n for n in out.graph.node}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in out.graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    inits = {t.name: t for t in out.graph.initializer}

    def take(name: str, axis: int, k: int) -> None:
        array = numpy_helper.to_array(inits[name])
        inits[name].CopyFrom(numpy_helper.from_array(np.take(array, np.arange(k), axis=axis), name))

    for name, next_name, k in layers:
        first, second = nodes[name], nodes[next_name]
        take(first.input[1], _axes(first)[0], k)
        if len(first.input) > 2 and first.input[2]:
            take(first.input[2], 0, k)
        tensor = first.output[0]
        while True:
            (reader,) = readers[tensor]
            if reader is second:
                break
            if reader.op_type in ("Flatten", "Reshape", "Transpose"):
                raise NotImplementedError(f"{reader.op_type} between {name} and {next_name}")
            if reader.op_type == "BatchNormalization":
                for param in reader.input[1:5]:
                    take(param, 0, k)
            tensor = reader.output[0]
        take(second.input[1], _axes(second)[1], k)
    # intermediate shapes recorded in the original would now be wrong
    keep = {v.name for v in out.graph.input} | {v.name for v in out.graph.output}
    survivors = [v for v in out.graph.value_info if v.name in keep]
    del out.graph.value_info[:]
    out.graph.value_info.extend(survivors)
    return out


def nchwc_convs(model: onnx.ModelProto) -> tuple[int, int]:
    """(Convs onnxruntime runs in its blocked NCHWc layout, all Convs) after optimisation."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    convs = [n for n in optimized.graph.node if n.op_type in ("Conv", "FusedConv")]
    return sum(1 for n in convs if n.domain == "com.microsoft.nchwc"), len(convs)


# --- measurement -----------------------------------------------------------------------------
def _keep(n: int, ratio: float, rounding: str) -> int:
    return min(n, ROUNDING[rounding](kept_count(n, ratio)))


def _variant(original: onnx.ModelProto, name: str, layers, ratio: float, rounding: str) -> onnx.ModelProto:
    """The architecture pruned at `ratio`, kept counts rounded as `rounding` says."""
    keep = lambda n: _keep(n, ratio, rounding)  # noqa: E731
    if layers is None:  # MobileNetV2: zoo rebuild of the inverted residuals' hidden width
        return zoo.build(name, inner=keep)
    return set_widths(original, [(layer, nxt, keep(n)) for layer, nxt, n in layers])


def _widths(name: str, layers, ratio: float, rounding: str) -> tuple[int, ...]:
    """The kept counts a variant has (for MobileNetV2, of the zoo's expanded widths)."""
    if layers is None:
        return tuple(_keep(n * 6, ratio, rounding) for n in (16, 24, 32, 64, 96, 160))
    return tuple(_keep(n, ratio, rounding) for _, _, n in layers)


def _point(original, pruned, feeds, macs_before: int, runs: int, args, layout: bool = True) -> dict:
    c = compare_latency(original, pruned, feeds, runs=runs, warmup=args.warmup, threads=args.threads)
    point = {"macs_ratio": round(model_cost(pruned).macs / macs_before, 4), "latency_ratio": c.ratio,
             "original_ms": c.original.median_ms, "pruned_ms": c.pruned.median_ms, "runs": runs}
    if layout:
        point["nchwc_convs"], point["convs"] = nchwc_convs(pruned)
    return point


def bench_model(name: str, args) -> dict:
    original = zoo.build(name)
    macs_before = model_cost(original).macs
    feeds = random_inputs(original, args.batch)
    blocked, convs = nchwc_convs(original)
    # enough timed runs for about args.seconds of each model, at least args.runs
    estimate = measure_latency(original, feeds, runs=3, warmup=1, threads=args.threads).median_ms / 1000
    runs = int(min(40, max(args.runs, math.ceil(args.seconds / estimate))))
    record: dict = {"model": name, "macs": macs_before, "nchwc_convs": blocked, "convs": convs, "runs": runs,
                    "points": []}
    layers = None
    if name != "mobilenet_v2":
        started = time.perf_counter()
        tool = compress(original, CompressOptions(ratio=0.3, scope="chains"))
        layers = [(l.name, l.next_layer, l.channels_before) for l in tool.report.layers]
        emulated = _variant(original, name, layers, 0.3, "exact")
        record["tool_at_0.3"] = {
            "compress_s": round(time.perf_counter() - started, 1),
            "chains_pruned": tool.report.chains_pruned,
            "macs_ratio_tool": round(tool.report.macs_after / tool.report.macs_before, 4),
            "macs_ratio_sliced": round(model_cost(emulated).macs / macs_before, 4),
            **{k: v for k, v in _point(original, tool.model, feeds, macs_before, runs, args).items() if k != "macs_ratio"},
        }
        assert record["tool_at_0.3"]["macs_ratio_tool"] == record["tool_at_0.3"]["macs_ratio_sliced"], record
        big = random_inputs(original, 8)
        c = compare_latency(original, tool.model, big, runs=3, warmup=1, threads=0)
        record["cli_benchmark_at_0.3"] = {"batch": 8, "threads": "default", "runs": 3, "latency_ratio": c.ratio,
                                          "original_ms": c.original.median_ms, "pruned_ms": c.pruned.median_ms}
        del tool
    else:
        record["note"] = ("not prunable by the tool (ReLU6, depthwise); rows time the hidden width of every "
                          "inverted residual reduced, as a depthwise-aware pruner would")
    for ratio in args.ratios:
        timed: dict[tuple[int, ...], dict] = {}
        for rounding in args.rounding:
            widths = _widths(name, layers, ratio, rounding)
            if widths in timed:  # already a multiple (e.g. 64 * 0.5): the same model, timed once
                point = {**timed[widths], "rounding": rounding, "same_as": timed[widths]["rounding"]}
            else:
                variant = _variant(original, name, layers, ratio, rounding)
                point = {"ratio": ratio, "rounding": rounding,
                         **_point(original, variant, feeds, macs_before, runs, args, layout=abs(ratio - 0.3) < 1e-9)}
                timed[widths] = point
            record["points"].append(point)
            layout = f"{point['nchwc_convs']:>7}/{point['convs']}" if "convs" in point else ""
            print(f"{name:<13}{ratio:>6.1f}  {rounding:<7}{point['macs_ratio']:>8.3f}{point['latency_ratio']:>9.3f}"
                  f"{point['original_ms']:>10.1f}{point['pruned_ms']:>10.1f}{layout}", flush=True)
    return record


def plot(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for r in records:
        pts = sorted((p["macs_ratio"], p["latency_ratio"]) for p in r["points"] if p["rounding"] == "exact")
        if pts:
            ax.plot(*zip(*pts), "o-", label=r["model"] + (" (emulated)" if r["model"] == "mobilenet_v2" else ""))
    ax.plot([0.3, 1], [0.3, 1], ":", color="grey", label="latency = MACs")
    ax.set(xlabel="MACs after / before", ylabel="latency after / before",
           title="Latency vs MACs, ratios 0.1-0.5 (batch 1, 1 thread)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(records), figsize=(4.2 * len(records), 4), squeeze=False)
    for ax, r in zip(axes[0], records):
        for rounding in ROUNDING:
            pts = sorted((p["macs_ratio"], p["latency_ratio"]) for p in r["points"] if p["rounding"] == rounding)
            if pts:
                ax.plot(*zip(*pts), "o-", label=rounding, markersize=4)
        ax.plot([0.3, 1], [0.3, 1], ":", color="grey")
        ax.set(xlabel="MACs after / before", ylabel="latency after / before", title=r["model"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_rounding.png", dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    p.add_argument("--rounding", nargs="+", default=["exact", "up4", "up16"], choices=list(ROUNDING))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=5, help="timed runs per model and point, at least")
    p.add_argument("--seconds", type=float, default=1.0, help="more runs for fast models, up to this much time (max 40 runs)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default=str(BENCH / "results"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"{'model':<13}{'ratio':>6}  {'round':<7}{'MACs x':>8}{'lat x':>9}{'orig ms':>10}{'pruned ms':>10}{'NCHWc':>7}")
    records = [bench_model(name, args) for name in args.models]
    plot(records, out)
    result = {"protocol": {"batch": args.batch, "threads": args.threads, "min_runs": args.runs, "target_seconds": args.seconds,
                           "warmup": args.warmup,
                           "statistic": "median; original and pruned runs alternate"},
              "onnxruntime": ort.__version__, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "models": records, "bench_seconds": round(time.perf_counter() - started, 1)}
    (out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'latency.json'} in {result['bench_seconds']} s")


if __name__ == "__main__":
    main()
