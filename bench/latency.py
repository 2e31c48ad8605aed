"""What pruning buys at run time: onnxruntime latency ratio vs MACs ratio, by channel rounding.

    python bench/latency.py                       # 12 min on the quiet 2-core machine, 30 at load average 9
    python bench/latency.py --models resnet50 --ratios 0.3 0.5 --rounding exact up8

Every point times what the tool itself writes: `compress(model, CompressOptions(ratio=r,
round_to=N, method="prune"))` with the default scope (channel groups: residual streams,
depthwise blocks, Concat/Split as well as chains). Latency depends on the architecture, not on
the weight values, and the kept counts do not depend on the method (for --ratio), so the fast
`prune` method gives the architecture the default method writes; at ratio 0.3 the default
method's own output is compressed too for the first model with `--check-default-method`
(`default_method_at_0.3`: same kept counts and MACs, asserted; 530 s for ResNet-50 at load 9). Models: ResNet-50/101, VGG-16-BN, MobileNetV2 (bench/zoo.py, random weights) and
EfficientNet-Lite0 (../shared/models/efficientnet_lite0_bn.onnx, a real export).

Rounding: kept counts exact (`exact`, --round-to 1, the papers' floor(n (1 - ratio))) or rounded
up to a multiple of 4, 8 or 16 (`up4`, `up8` = the default --round-to 8, `up16`). `exact` and
the default run at every ratio; the others at `--compare-ratios` (0.1 and 0.3). A variant whose
kept counts equal another's (64 * 0.5 = 32 is already a multiple of 16) is timed once. At ratio
0.3 the JSON also counts how many Convs onnxruntime turned into its blocked NCHWc kernels (it
does so when a Conv's *input* channels are a multiple of 4, or fewer than the block like an RGB
stem, and a depthwise Conv's channels a multiple of the block; output channels are padded up to
the block: 8 with AVX2, 16 with AVX-512; onnxruntime's nchwc_transformer.cc, measured here too).

Protocol (onnx_lbyl.latency): batch 1, 1 intra-op thread (this machine is shared; one thread is
the most repeatable figure), 1 warm-up run then at least 5 timed runs per model (more for fast
models: about 1 s of runs, at most 40), the original's and the pruned model's runs alternating,
median reported. At ratio 0.3, `exact` and the default are also timed at batch 8 with 1 thread,
and at batch 1 and batch 8 with onnxruntime's default threads (3 timed runs each): `settings_at_0.3`.

Writes bench/results/latency.json, latency.png (latency ratio vs MACs ratio, default rounding
and exact) and latency_rounding.png (every rounding, per model).
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

import onnx
import onnxruntime as ort

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import zoo  # noqa: E402
from accuracy import git_state  # noqa: E402
from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.graph.cost import model_cost  # noqa: E402
from onnx_lbyl.latency import compare_latency, measure_latency  # noqa: E402
from onnx_lbyl.options import DEFAULT_ROUND_TO  # noqa: E402
from onnx_lbyl.validate import random_inputs  # noqa: E402

SHARED = BENCH.parent.parent / "shared" / "models"
MODELS = ("resnet50", "resnet101", "vgg16_bn", "mobilenet_v2", "efficientnet_lite0")
FILES = {"efficientnet_lite0": SHARED / "efficientnet_lite0_bn.onnx"}
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
COMPARE_RATIOS = (0.1, 0.3)
ROUNDING = {"exact": 1, "up4": 4, "up8": 8, "up16": 16}  # label -> --round-to
DEFAULT = next(label for label, n in ROUNDING.items() if n == DEFAULT_ROUND_TO)
SETTINGS = ((8, 1), (1, 0), (8, 0))  # (batch, threads) also timed at 0.3; threads 0 = onnxruntime's default


def load(name: str) -> onnx.ModelProto:
    return onnx.load(FILES[name]) if name in FILES else zoo.build(name)


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
def pruned(original: onnx.ModelProto, ratio: float, round_to: int, feeds, method: str = "prune"):
    """The tool's output at `ratio` and `round_to` (default scope), and its kept counts."""
    result = compress(original, CompressOptions(ratio=ratio, round_to=round_to, method=method), inputs=feeds)
    return result.model, tuple(layer.channels_after for layer in result.report.layers)


def _point(original, model, feeds, macs_before: int, runs: int, args, layout: bool = False) -> dict:
    c = compare_latency(original, model, feeds, runs=runs, warmup=args.warmup, threads=args.threads)
    point = {"macs_ratio": round(model_cost(model).macs / macs_before, 4), "latency_ratio": c.ratio,
             "original_ms": c.original.median_ms, "pruned_ms": c.pruned.median_ms, "runs": runs}
    if layout:
        point["nchwc_convs"], point["convs"] = nchwc_convs(model)
    return point


def bench_model(name: str, args, first: bool) -> dict:
    original = load(name)
    macs_before = model_cost(original).macs
    feeds = random_inputs(original, args.batch)
    blocked, convs = nchwc_convs(original)
    # enough timed runs for about args.seconds of each model, at least args.runs
    estimate = measure_latency(original, feeds, runs=3, warmup=1, threads=args.threads).median_ms / 1000
    runs = int(min(40, max(args.runs, math.ceil(args.seconds / estimate))))
    record: dict = {"model": name, "macs": macs_before, "nchwc_convs": blocked, "convs": convs, "runs": runs,
                    "points": [], "settings_at_0.3": []}
    for ratio in args.ratios:
        timed: dict[tuple[int, ...], dict] = {}
        for rounding in args.rounding:
            if rounding not in ("exact", DEFAULT) and not any(abs(ratio - r) < 1e-9 for r in args.compare_ratios):
                continue
            started = time.perf_counter()
            model, widths = pruned(original, ratio, ROUNDING[rounding], feeds)
            compress_s = round(time.perf_counter() - started, 1)
            at_03 = abs(ratio - 0.3) < 1e-9
            if widths in timed:  # already a multiple (e.g. 64 * 0.5): the same model, timed once
                point = {**timed[widths], "rounding": rounding, "same_as": timed[widths]["rounding"]}
            else:
                point = {"ratio": ratio, "rounding": rounding, "round_to": ROUNDING[rounding],
                         "units": len(widths), "compress_s": compress_s,
                         **_point(original, model, feeds, macs_before, runs, args, layout=at_03)}
                timed[widths] = point
            record["points"].append(point)
            layout = f"{point['nchwc_convs']:>7}/{point['convs']}" if "convs" in point else ""
            print(f"{name:<19}{ratio:>6.1f}  {rounding:<7}{point['macs_ratio']:>8.3f}{point['latency_ratio']:>9.3f}"
                  f"{point['original_ms']:>10.1f}{point['pruned_ms']:>10.1f}{layout}", flush=True)
            if at_03 and rounding in ("exact", DEFAULT) and "same_as" not in point:
                for batch, threads in SETTINGS:
                    big = random_inputs(original, batch)
                    c = compare_latency(original, model, big, runs=3, warmup=1, threads=threads)
                    record["settings_at_0.3"].append({"rounding": rounding, "batch": batch,
                                                      "threads": threads or "default", "runs": 3,
                                                      "macs_ratio": point["macs_ratio"], "latency_ratio": c.ratio,
                                                      "original_ms": c.original.median_ms,
                                                      "pruned_ms": c.pruned.median_ms})
                    print(f"{'':<19}{'':>6}  {rounding:<7} batch {batch} threads {threads or 'default'}: "
                          f"latency x{c.ratio:.3f}", flush=True)
            if at_03 and rounding == DEFAULT and first:
                # the default method's own output: the same architecture as `prune`'s
                started = time.perf_counter()
                model, default_widths = pruned(original, ratio, DEFAULT_ROUND_TO, feeds, method="moments-greedy")
                check = {"compress_s": round(time.perf_counter() - started, 1),
                         "macs_ratio": round(model_cost(model).macs / macs_before, 4),
                         "same_kept_counts_as_prune": default_widths == widths}
                assert check["same_kept_counts_as_prune"] and check["macs_ratio"] == point["macs_ratio"], check
                record["default_method_at_0.3"] = check
            del model
    return record


def plot(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for i, r in enumerate(records):
        colour = f"C{i}"
        for rounding, style in ((DEFAULT, "o-"), ("exact", "x:")):
            pts = sorted((p["macs_ratio"], p["latency_ratio"]) for p in r["points"] if p["rounding"] == rounding)
            if pts:
                label = f"{r['model']} (--round-to {ROUNDING[rounding]})"
                ax.plot(*zip(*pts), style, color=colour, label=label, alpha=1.0 if rounding == DEFAULT else 0.5)
    ax.plot([0.3, 1], [0.3, 1], "-", color="grey", lw=0.8, label="latency = MACs")
    ax.plot([0.3, 1], [0.33, 1.1], "--", color="grey", lw=0.8, label="latency = 1.1 x MACs")
    ax.set(xlabel="MACs after / before", ylabel="latency after / before",
           title="Latency vs MACs, ratios 0.1-0.5 (batch 1, 1 thread)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(records), figsize=(4.2 * len(records), 4), squeeze=False)
    for ax, r in zip(axes[0], records):
        for rounding in ROUNDING:
            pts = sorted((p["macs_ratio"], p["latency_ratio"]) for p in r["points"] if p["rounding"] == rounding)
            if pts:
                ax.plot(*zip(*pts), "o-", label=rounding + (" (default)" if rounding == DEFAULT else ""), markersize=4)
        ax.plot([0.3, 1], [0.3, 1], ":", color="grey")
        ax.set(xlabel="MACs after / before", ylabel="latency after / before", title=r["model"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_rounding.png", dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    p.add_argument("--rounding", nargs="+", default=list(ROUNDING), choices=list(ROUNDING))
    p.add_argument("--compare-ratios", nargs="+", type=float, default=list(COMPARE_RATIOS),
                   help=f"ratios at which roundings other than exact and {DEFAULT} (the default) are timed")
    p.add_argument("--check-default-method", action="store_true",
                   help="also compress the first model at 0.3 with the default method and check its kept counts")
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
    load_before = os.getloadavg()
    print(f"{'model':<19}{'ratio':>6}  {'round':<7}{'MACs x':>8}{'lat x':>9}{'orig ms':>10}{'pruned ms':>10}{'NCHWc':>7}")
    records = [bench_model(name, args, first=i == 0 and args.check_default_method) for i, name in enumerate(args.models)]
    plot(records, out)
    result = {"protocol": {"batch": args.batch, "threads": args.threads, "min_runs": args.runs, "target_seconds": args.seconds,
                           "warmup": args.warmup,
                           "statistic": "median; original and pruned runs alternate"},
              "default_rounding": DEFAULT, "rounding": ROUNDING,
              "onnxruntime": ort.__version__, "cpus": os.cpu_count(), "cpu_flags": cpu_flags(),
              "load_average_before": load_before, "load_average": os.getloadavg(),
              "models": records, "bench_seconds": round(time.perf_counter() - started, 1), "git": git_state()}
    (out / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'latency.json'} in {result['bench_seconds']} s")


def cpu_flags() -> list[str]:
    """The SIMD extensions onnxruntime's MLAS picks its kernels by (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx_vnni",
                                            "avx512_vnni", "amx_tile"))


if __name__ == "__main__":
    main()
