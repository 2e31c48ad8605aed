"""The tool's own cost: wall time and peak memory of `compress` + save on ImageNet-sized CNNs.

    python bench/speed.py                    # the table, the scaling plot, the profile (~15 min)
    python bench/speed.py --models resnet50 --skip-scaling --skip-profile

For each model (bench/zoo.py, BN kept as nodes, ratio 0.3) two operations are measured,
each in a fresh Python process so that its peak RSS (VmHWM) is its own:
  floor:    onnx.load + onnx.save, the least any tool that rewrites the file must do;
  compress: onnx_lbyl.compress(path, CompressOptions(ratio=0.3)), every other option at its
          default (channel groups, data-free probe, validation), + the atomic save the CLI does.
Times exclude interpreter start-up and imports (reported apart as `baseline_rss_mb`, the
RSS after imports, so peak minus baseline is what the operation itself added). Each
operation runs --repeats times (default 2; a compression over 30 s only once) and the
fastest run is kept: the machine is shared, and the minimum is the figure least disturbed
by other load.
The issue's goals: compress time <= 3x the floor and peak RSS <= 3x the model's size.

Scaling: compress time and peak RSS for ResNet-18/34/50/101/152 (one run each; the models
the table above timed are not run again), plotted against model size. Profile: cProfile of compress on ResNet-50, top functions by
cumulative and by own time.

Writes bench/results/speed.json, speed_scaling.png and speed_profile_resnet50.txt. Model
files go to --workdir (default: a folder in the system temp dir, reused between runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SPEED_MODELS = ("resnet50", "resnet101", "vgg16_bn", "mobilenet_v2")
SCALING_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
RATIO = 0.3
GOAL = 3.0
SLOW = 30.0  # a compression slower than this is not repeated (the whole run stays short)


def proc_status_mb(key: str) -> float:
    """A memory field of this process's /proc/self/status (Linux), in MB; NaN elsewhere."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _vm_hwm_mb() -> float:
    """Peak resident set size of this process so far."""
    return proc_status_mb("VmHWM")


def _vm_rss_mb() -> float:
    """Resident set size of this process now."""
    return proc_status_mb("VmRSS")


def child(mode: str, path: str, out: str, ratio: float) -> dict:
    """One measurement, run inside a fresh process (see `measure`)."""
    import onnx

    if mode == "compress":
        from onnx_lbyl import CompressOptions, NothingToPruneError, compress
        from onnx_lbyl.graph.io import save_atomic
    baseline = _vm_rss_mb()
    started = time.perf_counter()
    record: dict = {}
    if mode == "floor":
        onnx.save(onnx.load(path), out)
    else:
        try:
            result = compress(path, CompressOptions(ratio=ratio))
            save_atomic(result.model, out)
            record["macs_ratio"] = result.report.macs_after / result.report.macs_before
        except NothingToPruneError as exc:  # the time to say so is measured
            record["error"] = str(exc)
    record.update(seconds=time.perf_counter() - started, peak_rss_mb=_vm_hwm_mb(), baseline_rss_mb=baseline)
    return record


def measure(mode: str, path: Path, workdir: Path, ratio: float = RATIO) -> dict:
    """Run `child` in a new interpreter and return its record (peak RSS is that process's)."""
    out = workdir / f"{path.stem}.{mode}.out.onnx"
    code = ("import json, sys; sys.path.insert(0, %r); import speed; "
            "print(json.dumps(speed.child(%r, %r, %r, %r)))" % (str(BENCH), mode, str(path), str(out), ratio))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {path.name} failed:\n{done.stderr}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    out.unlink(missing_ok=True)
    return record


def model_file(name: str, workdir: Path) -> Path:
    """The zoo model as a file in `workdir`, built once and reused."""
    path = workdir / f"{name}.onnx"
    if not path.exists():
        import zoo

        zoo.save(name, str(path))
    return path


def best(records: list[dict]) -> dict:
    return min(records, key=lambda r: r["seconds"])


def speed_table(models, workdir: Path, repeats: int) -> list[dict]:
    rows = []
    for name in models:
        path = model_file(name, workdir)
        size_mb = path.stat().st_size / 1e6
        floor = best([measure("floor", path, workdir) for _ in range(repeats)])
        comp = [measure("compress", path, workdir)]
        while len(comp) < repeats and comp[0]["seconds"] < SLOW:
            comp.append(measure("compress", path, workdir))
        comp = best(comp)
        row = {
            "model": name, "size_mb": round(size_mb, 1),
            "floor_s": round(floor["seconds"], 2), "floor_peak_rss_mb": round(floor["peak_rss_mb"]),
            "compress_s": round(comp["seconds"], 2), "time_ratio": round(comp["seconds"] / floor["seconds"], 2),
            "peak_rss_mb": round(comp["peak_rss_mb"]), "baseline_rss_mb": round(comp["baseline_rss_mb"]),
            "rss_ratio": round(comp["peak_rss_mb"] / size_mb, 2),
            "rss_ratio_above_baseline": round((comp["peak_rss_mb"] - comp["baseline_rss_mb"]) / size_mb, 2),
            "macs_ratio": comp.get("macs_ratio"), "note": comp.get("error", ""),
        }
        rows.append(row)
        print(_row_text(row), flush=True)
    return rows


HEADER = (f"{'model':<13}{'size MB':>8}{'load+save s':>12}{'compress s':>11}{'ratio':>7}"
          f"{'peak RSS MB':>12}{'x size':>7}{'x size*':>8}  note")


def _row_text(r: dict) -> str:
    return (f"{r['model']:<13}{r['size_mb']:>8.1f}{r['floor_s']:>12.2f}{r['compress_s']:>11.2f}{r['time_ratio']:>7.2f}"
            f"{r['peak_rss_mb']:>12}{r['rss_ratio']:>7.2f}{r['rss_ratio_above_baseline']:>8.2f}  {r['note'][:60]}")


def scaling(workdir: Path, measured: list[dict]) -> list[dict]:
    """One point per SCALING_MODELS model; a model the speed table already timed (`measured`,
    its rows) is taken from there rather than compressed again."""
    known = {row["model"]: row for row in measured}
    rows = []
    for name in SCALING_MODELS:
        path = model_file(name, workdir)
        if name in known:
            row = known[name]
            compress_s, floor_s, peak = row["compress_s"], row["floor_s"], row["peak_rss_mb"]
        else:
            rec, floor = measure("compress", path, workdir), measure("floor", path, workdir)
            compress_s, floor_s, peak = rec["seconds"], floor["seconds"], rec["peak_rss_mb"]
        rows.append({"model": name, "size_mb": round(path.stat().st_size / 1e6, 1),
                     "compress_s": round(compress_s, 2), "floor_s": round(floor_s, 2), "peak_rss_mb": round(peak)})
        print(f"{name:<10} {rows[-1]['size_mb']:>7.1f} MB  compress {compress_s:6.2f} s  "
              f"load+save {floor_s:5.2f} s  peak {peak:6.0f} MB", flush=True)
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size_mb"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(sizes, [r["compress_s"] for r in rows], "o-", label="compress + save")
    ax1.plot(sizes, [r["floor_s"] for r in rows], "s--", label="onnx.load + onnx.save")
    ax1.plot(sizes, [GOAL * r["floor_s"] for r in rows], ":", color="grey", label="goal: 3x load+save")
    ax2.plot(sizes, [r["peak_rss_mb"] for r in rows], "o-", label="compress peak RSS")
    ax2.plot(sizes, [GOAL * s for s in sizes], ":", color="grey", label="goal: 3x model size")
    for r in rows:
        ax1.annotate(r["model"], (r["size_mb"], r["compress_s"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax1.set(xlabel="model size (MB)", ylabel="seconds", title="Time vs size (ResNet-18..152, ratio 0.3)")
    ax2.set(xlabel="model size (MB)", ylabel="MB", title="Peak memory vs size")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile(workdir: Path, out: Path, top: int = 30) -> list[dict]:
    """cProfile of compress + save on ResNet-50, in a child process like the timings."""
    path = model_file("resnet50", workdir)
    code = f"""
import cProfile, io, pstats, sys
from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.graph.io import save_atomic
profiler = cProfile.Profile()
profiler.enable()
save_atomic(compress({str(path)!r}, CompressOptions(ratio={RATIO})).model, {str(workdir / 'profile.out.onnx')!r})
profiler.disable()
text = io.StringIO()
stats = pstats.Stats(profiler, stream=text)
stats.sort_stats("cumulative").print_stats({top})
stats.sort_stats("tottime").print_stats({top})
print(text.getvalue())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out.write_text(done.stdout)
    (workdir / "profile.out.onnx").unlink(missing_ok=True)
    return _top_items(done.stdout)


def _top_items(text: str) -> list[dict]:
    """The cumulative-time section of a pstats print as records."""
    row = re.compile(r"^\s*(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(.+)$")
    items, section = [], 0
    for line in text.splitlines():
        if line.strip().startswith("ncalls"):
            section += 1
            continue
        match = row.match(line)
        if section == 1 and match:
            calls, own, _, cumulative, _, function = match.groups()
            items.append({"calls": calls, "own_s": float(own), "cumulative_s": float(cumulative), "function": function})
    return items


def machine() -> dict:
    import onnx
    import onnxruntime

    return {"python": platform.python_version(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(SPEED_MODELS))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "onnx-lbyl-bench"))
    p.add_argument("--out", default=str(BENCH / "results"))
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--skip-profile", action="store_true")
    args = p.parse_args()
    workdir, out = Path(args.workdir), Path(args.out)
    workdir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(BENCH))
    started = time.perf_counter()
    record = {"ratio": RATIO, "repeats": args.repeats, "machine_before": machine(), "goal": f"compress <= {GOAL}x load+save, peak RSS <= {GOAL}x model size"}

    print(HEADER + "\n(x size* = (peak - RSS after imports) / size)")
    record["speed"] = speed_table(args.models, workdir, args.repeats)
    if not args.skip_scaling:
        print("\nscaling (ResNet-18 -> 152, ratio 0.3, one run each)")
        record["scaling"] = scaling(workdir, record["speed"])
        plot_scaling(record["scaling"], out / "speed_scaling.png")
    if not args.skip_profile:
        record["profile_resnet50_top"] = profile(workdir, out / "speed_profile_resnet50.txt")
        print("\nprofile of compress on ResNet-50 (cumulative s, own s, function):")
        for item in record["profile_resnet50_top"][:20]:
            print(f"  {item['cumulative_s']:7.2f} {item['own_s']:7.2f}  {item['function'][:100]}")
    record["machine_after"] = machine()
    record["bench_seconds"] = round(time.perf_counter() - started, 1)
    from accuracy import git_state  # the commit measured, as the other benches record it

    record["git"] = git_state()
    (out / "speed.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out / 'speed.json'} in {record['bench_seconds']} s")


if __name__ == "__main__":
    main()
