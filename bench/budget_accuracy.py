"""Accuracy at a MACs budget: channel groups (residual streams, depthwise blocks, ...) against
block-internal chains only, uniform against error-per-MAC allocation, unscaled and scaled by
measured sensitivity. No fine-tuning.

    python bench/budget_accuracy.py                  # everything (see budget_accuracy.md for the time taken)
    python bench/budget_accuracy.py --only cifar     # the CIFAR ResNets only (or: imagenet, curve)

What it measures (issues 10 and 11):

1. EfficientNet-Lite0 (both exports) at target_macs=0.25 on the 500-image ImageNet sample:
   data-free with allocation uniform, error and sensitivity; calibrated on the 250 even-indexed images
   (no labels) and scored on the 250 odd-indexed ones, every other row also reported on those
   250 so the rows compare; scope="chains" rows (EfficientNet has no ReLU chain: recorded as
   "nothing to prune").
2. The CIFAR ResNets (ResNet-8, -20, -32, both exports) at target_macs 0.5 and 0.3 on the full
   CIFAR-10 test set: scope chains (uniform; the block-internal-only baseline), scope groups
   uniform, scope groups with allocation error and with sensitivity (the default).
3. ResNet-32 (bn): top-1 against the MACs kept for the four configurations at targets
   0.1 to 0.6 (bench/results/budget_accuracy_<model>.png).

Every other setting is the CompressOptions default (method moments-greedy, statistics probe,
seed 0). Compression goes through onnx_lbyl.compress and scoring through
onnx_lbyl.evaluate.evaluate, the code `onnx-lbyl` and `onnx-lbyl eval` run. A row that the
tool refuses (NothingToPruneError, InputError such as an unreachable target) is recorded
with its message; any other exception is recorded as an internal error, never stops the run.

Development set: ResNet-20 and ResNet-8 (both exports) were looked at while designing the
probe's BN-batch statistics and the allocation, and EfficientNet-Lite0 while developing the
groups: their numbers are not held out. ResNet-32 (both exports) is held out.

Runs in --jobs worker processes (default 2) with one onnxruntime thread each. Writes
bench/results/budget_accuracy.json, budget_accuracy.md and budget_accuracy_<model>.png.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import multiprocessing
import os
import platform
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

import onnx_lbyl
from onnx_lbyl import CompressOptions, InputError, NothingToPruneError, compress
from onnx_lbyl.evaluate import Dataset, evaluate, load_dataset
from onnx_lbyl.graph.cost import model_cost

from accuracy import git_state

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_SHARED = ROOT.parent / "shared"

EFFICIENTNET = ("efficientnet_lite0_bn", "efficientnet_lite0_folded")
RESNETS = ("mlcommons_tiny_resnet8_cifar10_bn", "mlcommons_tiny_resnet8_cifar10_folded",
           "akamaster_resnet20_cifar10_bn", "akamaster_resnet20_cifar10_folded",
           "akamaster_resnet32_cifar10_bn", "akamaster_resnet32_cifar10_folded")
CURVE_MODEL = "akamaster_resnet32_cifar10_bn"
DATA = {"imagenet": "imagenet_sample500_test.npz", "cifar10": "cifar10_test.npz"}
HELD_OUT = ("akamaster_resnet32_cifar10_bn", "akamaster_resnet32_cifar10_folded")
# (scope, allocation) of every configuration, in table order
CONFIGS = {"chains-uniform": ("chains", "uniform"), "groups-uniform": ("groups", "uniform"),
           "groups-error": ("groups", "error"), "groups-sensitivity": ("groups", "sensitivity")}
CONFIG_NAMES = {"chains-uniform": "chains only (block-internal), uniform",
                "groups-uniform": "groups, uniform",
                "groups-error": "groups, allocation error",
                "groups-sensitivity": "groups, allocation sensitivity (default)"}
IMAGENET_TARGET = 0.25
CIFAR_TARGETS = (0.5, 0.3)
CURVE_TARGETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
PROTOCOL = ("target_macs as listed (the fraction of MACs removed); scope and allocation as listed; every other "
            "compression setting is the CompressOptions default (moments-greedy, statistics probe (auto before 517290b: the same for models without chains, such as EfficientNet-Lite0), seed 0); no "
            "fine-tuning. Data-free rows use no data. Calibrated rows (ImageNet only) calibrate on the 250 "
            "even-indexed images of imagenet_sample500_test (no labels) and are scored on the 250 odd-indexed "
            "ones. CIFAR rows are scored on the full 10,000-image test set. Preprocessing from each model's "
            "lbyl_eval.preprocess metadata. Development set (looked at while designing the probe statistics, the "
            "allocation and the groups): ResNet-8, ResNet-20 and EfficientNet-Lite0, both exports; held out: "
            "ResNet-32, both exports (its error-allocation results were in view when that became the default; "
            "the sensitivity allocation was chosen before ResNet-32 ran with it: sensitivity_allocation.md).")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `kill` also stops the workers
    started = time.perf_counter()
    shared = Path(args.shared)
    for name in EFFICIENTNET + RESNETS:
        if not (shared / "models" / f"{name}.onnx").is_file():
            sys.exit(f"budget_accuracy.py: model not found: {shared / 'models' / name}.onnx")
    for file in DATA.values():
        if not (shared / "data" / file).is_file():
            sys.exit(f"budget_accuracy.py: data not found: {shared / 'data' / file}")
    tasks = make_tasks(args.only)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for done, row in enumerate(run_tasks(tasks, args), start=1):
        rows.append(row)
        if not args.quiet:
            print(f"[{done}/{len(tasks)}] {describe(row)}", file=sys.stderr, flush=True)
    order = {task: i for i, task in enumerate(tasks)}
    rows.sort(key=lambda r: order[Task(r["model"], r["config"], r["target"], r["calibrated"])])
    attach_unpruned(rows)
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    data = {
        "tool_version": onnx_lbyl.__version__,
        "git": git_state(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": np.__version__},
        "protocol": PROTOCOL,
        "options": {"only": args.only, "jobs": args.jobs, "batch_size": args.batch_size,
                    "imagenet_target": IMAGENET_TARGET, "cifar_targets": list(CIFAR_TARGETS),
                    "curve_model": CURVE_MODEL, "curve_targets": list(CURVE_TARGETS),
                    "configs": {k: {"scope": s, "allocation": a} for k, (s, a) in CONFIGS.items()},
                    "compress_defaults": CompressOptions().to_dict()},
        "development_set": [m for m in EFFICIENTNET + RESNETS if m not in HELD_OUT],
        "held_out": list(HELD_OUT),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime, 1),
    }
    if args.merge and (out / "budget_accuracy.json").is_file():
        earlier = json.loads((out / "budget_accuracy.json").read_text())
        redone = {(r["model"], r["config"], r["target"], r["calibrated"]) for r in rows}
        kept = [r for r in earlier["rows"] if (r["model"], r["config"], r["target"], r["calibrated"]) not in redone]
        data["rows"] = kept + rows
        data["kept_rows_from"] = earlier.get("kept_rows_from") or {
            key: earlier.get(key) for key in ("git", "created", "seconds", "cpu_seconds", "machine")}
        data["kept_rows_from"]["models"] = sorted({r["model"] for r in kept})
    (out / "budget_accuracy.json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    (out / "budget_accuracy.md").write_text(text + "\n")
    written = plot(data, out)
    print(text)
    print(f"\n{len(tasks)} settings in {data['seconds']:.0f} s ({data['cpu_seconds']:.0f} CPU-s) with {args.jobs} "
          f"process(es); wrote {out / 'budget_accuracy.json'}, {out / 'budget_accuracy.md'}"
          + "".join(f", {p}" for p in written))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", default=str(DEFAULT_SHARED),
                   help="folder with models/*.onnx and data/*.npz (default: ../shared beside the repository)")
    p.add_argument("--only", choices=("all", "imagenet", "cifar", "curve", "resnets"), default="all",
                   help="run one part only (default: all; resnets = cifar and curve); a partial run overwrites "
                        "the results too, unless --merge")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of the existing budget_accuracy.json that this run does not redo "
                        "(the header then names the run they come from)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--jobs", "-j", type=int, default=2,
                   help="worker processes, each with one onnxruntime thread (default 2; 1 runs in this process)")
    p.add_argument("--out", default=str(BENCH / "results"), help="output folder (default: bench/results)")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-setting progress lines")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.jobs < 1:
        p.error("--batch-size and --jobs must be at least 1")
    return args


# ---------------------------------------------------------------------------------------
# The work: one task = compress one model with one configuration (or not at all) and score it.


@dataclass(frozen=True)
class Task:
    model: str  # name in SHARED/models, without .onnx
    config: str | None  # key of CONFIGS; None = the unpruned model
    target: float | None = None  # target_macs
    calibrated: bool = False  # ImageNet only: calibrate on the even-indexed images


def make_tasks(only: str) -> list[Task]:
    """The unpruned models first, then the slow EfficientNet compressions (so two workers
    stay busy to the end), then the ResNets."""
    tasks: list[Task] = []
    imagenet = only in ("all", "imagenet")
    cifar = only in ("all", "cifar", "resnets")
    curve = only in ("all", "curve", "resnets")
    models = (EFFICIENTNET if imagenet else ()) + (RESNETS if cifar else ((CURVE_MODEL,) if curve else ()))
    tasks += [Task(m, None) for m in models]
    if imagenet:
        for calibrated in (True, False):
            for model in EFFICIENTNET:
                for config in ("groups-uniform", "groups-error", "groups-sensitivity", "chains-uniform"):
                    tasks.append(Task(model, config, IMAGENET_TARGET, calibrated))
    targets: dict[str, tuple[float, ...]] = {}
    if cifar:
        targets.update({m: CIFAR_TARGETS for m in RESNETS})
    if curve:
        targets[CURVE_MODEL] = tuple(sorted(set(targets.get(CURVE_MODEL, ())) | set(CURVE_TARGETS)))
    for model, model_targets in targets.items():
        for target in model_targets:
            for config in CONFIGS:
                tasks.append(Task(model, config, target))
    return tasks


_THREADS: int | None = None  # onnxruntime threads in this process; set per worker
_SHARED: Path = DEFAULT_SHARED


def _init_worker(threads: int | None, shared: str) -> None:
    global _THREADS, _SHARED
    _THREADS, _SHARED = threads, Path(shared)


def dataset_name(model: str) -> str:
    return "imagenet" if model.startswith("efficientnet") else "cifar10"


@functools.lru_cache(maxsize=2)
def _dataset(name: str) -> Dataset:
    return load_dataset(_SHARED / "data" / DATA[name])


@functools.lru_cache(maxsize=2)
def _model(name: str) -> onnx.ModelProto:
    return onnx.load(str(_SHARED / "models" / f"{name}.onnx"))


def _subset(data: Dataset, index: slice, label: str) -> Dataset:
    return Dataset(data.images[index], data.labels[index], f"{data.source} {label}", data.classes)


def run_task(task: Task, batch_size: int) -> dict:
    """Compress (unless unpruned) and score; the JSON row, with predictions for the
    agreement with the unpruned model (dropped before writing)."""
    name = dataset_name(task.model)
    data = _dataset(name)
    row = {"model": task.model, "set": "held out" if task.model in HELD_OUT else "development",
           "dataset": name, "config": task.config, "target": task.target, "calibrated": task.calibrated,
           "scope": None, "allocation": None, "status": "ok", "message": ""}
    model = _model(task.model)
    report = None
    if task.config is not None:
        scope, allocation = CONFIGS[task.config]
        row.update(scope=scope, allocation=allocation)
        calibration = {"images": data.images[::2]} if task.calibrated else None
        # round_to=1: allocations compared on exact counts, as recorded (rounding would blur them)
        options = CompressOptions(target_macs=task.target, scope=scope, allocation=allocation, calibration=calibration,
                                  round_to=1)
        started = time.perf_counter()
        try:
            result = compress(model, options)
        except NothingToPruneError as exc:
            row.update(status="nothing_to_prune", message=str(exc))
        except InputError as exc:  # e.g. a target out of reach for chains only
            row.update(status="unreachable" if "out of reach" in str(exc) else "refused", message=str(exc))
        except Exception as exc:  # an internal error is a finding, not a reason to lose the run
            row.update(status="internal_error", message=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc())
        row["compress_seconds"] = round(time.perf_counter() - started, 2)
        if row["status"] != "ok":
            return row
        model, report = result.model, result.report
        kinds = [layer.kind for layer in report.layers]
        outputs = report.validation.outputs if report.validation else []
        row.update(macs_before=report.macs_before, macs_after=report.macs_after,
                   parameters_before=report.parameters_before, parameters_after=report.parameters_after,
                   chains_pruned=kinds.count("chain"), groups_pruned=kinds.count("group"),
                   layers=[{"name": l.name, "kind": l.kind, "channels_before": l.channels_before,
                            "channels_after": l.channels_after, "producers": l.producers} for l in report.layers],
                   validation_relative_l2_error=outputs[0].relative_l2_error if outputs else None,
                   options={k: v for k, v in report.options.items() if k != "calibration"},
                   calibration_images=len(calibration["images"]) if calibration else 0)
    else:
        cost = model_cost(model)
        row.update(macs_before=cost.macs, macs_after=cost.macs, parameters_before=cost.parameters,
                   parameters_after=cost.parameters)
    # Calibrated rows are scored on the odd-indexed images only (the even ones calibrated);
    # every other row on all images, with the odd-indexed half reported beside it.
    scored_on = _subset(data, slice(1, None, 2), "odd-indexed") if task.calibrated else data
    started = time.perf_counter()
    try:
        scored = evaluate(model, scored_on, batch_size=batch_size, threads=_THREADS)
    except Exception as exc:
        row.update(status="internal_error" if not isinstance(exc, InputError) else "refused",
                   message=f"scoring failed: {type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return row
    row["score_seconds"] = round(time.perf_counter() - started, 2)
    predictions = np.asarray(scored.predictions)
    row.update(top1=scored.top1, correct=int(scored.correct), count=int(scored.count))
    if name == "imagenet":
        odd = predictions if task.calibrated else predictions[1::2]
        row.update(top1_odd=float(np.mean(odd == data.labels[1::2])), correct_odd=int(np.sum(odd == data.labels[1::2])),
                   count_odd=int(len(odd)))
        row["predictions_odd"] = odd.tolist()
    if not task.calibrated:
        row["predictions"] = predictions.tolist()
    return row


def run_tasks(tasks: list[Task], args):
    """Yield rows as tasks finish: in this process for --jobs 1, otherwise in a pool of
    single-threaded workers."""
    if args.jobs == 1:
        _init_worker(None, args.shared)
        for task in tasks:
            yield run_task(task, args.batch_size)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding thread pools
    with context.Pool(args.jobs, initializer=_init_worker, initargs=(1, args.shared)) as pool:
        yield from pool.imap_unordered(functools.partial(run_task, batch_size=args.batch_size), tasks)


def attach_unpruned(rows: list[dict]) -> None:
    """Each pruned row gets the unpruned model's top-1 on the same images and the share of
    images on which both predict the same class; the predictions are then dropped."""
    base = {r["model"]: r for r in rows if r["config"] is None}
    for row in rows:
        ref = base.get(row["model"])
        if row["config"] is not None and ref is not None and row["status"] == "ok":
            if row["calibrated"]:
                row.update(unpruned_top1=ref["top1_odd"], unpruned_correct=ref["correct_odd"])
                row["agreement_with_unpruned"] = float(np.mean(np.array(row["predictions_odd"]) ==
                                                               np.array(ref["predictions_odd"])))
            else:
                row.update(unpruned_top1=ref["top1"], unpruned_correct=ref["correct"])
                row["agreement_with_unpruned"] = float(np.mean(np.array(row["predictions"]) ==
                                                               np.array(ref["predictions"])))
                if "top1_odd" in row:
                    row.update(unpruned_top1_odd=ref["top1_odd"], unpruned_correct_odd=ref["correct_odd"])
    for row in rows:
        row.pop("predictions", None)
        row.pop("predictions_odd", None)


def describe(row: dict) -> str:
    what = "unpruned" if row["config"] is None else \
        f"{row['config']} target {row['target']:g}{' calibrated' if row['calibrated'] else ''}"
    if row["status"] != "ok":
        return f"{row['model']} {what}: {row['status']}: {row['message'].splitlines()[0][:160]}"
    timing = f"score {row['score_seconds']:.1f} s"
    if row["config"] is not None:
        timing = f"compress {row['compress_seconds']:.1f} s, " + timing
    return (f"{row['model']} {what}: MACs kept {row['macs_after'] / row['macs_before']:.3f}, top-1 "
            f"{100 * row['top1']:.2f}% ({row['correct']}/{row['count']}; {timing})")


# ---------------------------------------------------------------------------------------
# Rendering


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _top1(row: dict, suffix: str = "") -> str:
    return f"{_pct(row['top1' + suffix])} ({row['correct' + suffix]}/{row['count' + suffix]})"


def _delta(row: dict, suffix: str = "") -> str:
    top1, base = row.get("top1" + suffix), row.get("unpruned_top1" + suffix)
    return "–" if top1 is None or base is None else f"{100 * (top1 - base):+.1f}"


def _status(row: dict) -> str:
    label = {"nothing_to_prune": "nothing to prune", "internal_error": "**internal error**"}.get(row["status"],
                                                                                               row["status"])
    return f"{label}: {row['message'].splitlines()[0][:200]}"


def _size(row: dict) -> tuple[str, str]:
    return (f"{row['macs_after'] / 1e6:.1f}M ({_pct(row['macs_after'] / row['macs_before'])}%)",
            f"{row['parameters_after']:,} ({_pct(row['parameters_after'] / row['parameters_before'])}%)")


def imagenet_table(rows: list[dict]) -> list[str]:
    lines = ["| model | configuration | data | MACs after (kept) | parameters after (kept) | top-1, all 500 | Δ | "
             "top-1, odd 250 | Δ odd 250 | agreement | compress s | score s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["dataset"] != "imagenet":
            continue
        name = row["model"].replace("efficientnet_lite0_", "EfficientNet-Lite0 ")
        if row["config"] is None:
            macs, params = _size(row)
            lines.append(f"| {name} | unpruned | – | {macs} | {params} | {_top1(row)} | | {_top1(row, '_odd')} | | | – | "
                         f"{row['score_seconds']:.1f} |")
            continue
        data = "250 even images" if row["calibrated"] else "none"
        head = f"| {name} | {CONFIG_NAMES[row['config']]} | {data} |"
        if row["status"] != "ok":
            lines.append(f"{head} {_status(row)} | | | | | | | {row['compress_seconds']:.1f} | |")
            continue
        macs, params = _size(row)
        all500 = ("– (scored on odd 250 only)", "") if row["calibrated"] else (_top1(row), _delta(row))
        odd = (_top1(row), _delta(row)) if row["calibrated"] else (_top1(row, "_odd"), _delta(row, "_odd"))
        lines.append(f"{head} {macs} | {params} | {all500[0]} | {all500[1]} | {odd[0]} | {odd[1]} | "
                     f"{_pct(row['agreement_with_unpruned'])} | {row['compress_seconds']:.1f} | {row['score_seconds']:.1f} |")
    return lines


def cifar_table(rows: list[dict], targets: tuple[float, ...] | None = None, models: tuple[str, ...] | None = None) -> list[str]:
    lines = ["| model | set | target | configuration | MACs after (kept) | parameters after (kept) | top-1 (correct/10,000) | "
             "Δ vs unpruned | agreement | compress s | score s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["dataset"] != "cifar10" or (models and row["model"] not in models):
            continue
        if row["config"] is not None and targets and row["target"] not in targets:
            continue
        name = row["model"].replace("_cifar10", "")
        if row["config"] is None:
            macs, params = _size(row)
            lines.append(f"| {name} | {row['set']} | – | unpruned | {macs} | {params} | {_top1(row)} | | | – | "
                         f"{row['score_seconds']:.1f} |")
            continue
        head = f"| {name} | {row['set']} | {row['target']:g} | {CONFIG_NAMES[row['config']]} |"
        if row["status"] != "ok":
            lines.append(f"{head} {_status(row)} | | | | | {row['compress_seconds']:.1f} | |")
            continue
        macs, params = _size(row)
        lines.append(f"{head} {macs} | {params} | {_top1(row)} | {_delta(row)} | {_pct(row['agreement_with_unpruned'])} | "
                     f"{row['compress_seconds']:.1f} | {row['score_seconds']:.1f} |")
    return lines


def summary_table(rows: list[dict]) -> list[str]:
    """Top-1 (%) per model and target, one column per configuration: the comparison the
    issue asks for, at a glance."""
    lines = ["| model | set | unpruned | target | " + " | ".join(CONFIG_NAMES[c] for c in CONFIGS) + " |",
             "|---|---|---|---|" + "---|" * len(CONFIGS)]
    base = {r["model"]: r for r in rows if r["config"] is None}
    cells: dict[tuple[str, float], dict[str, str]] = {}
    for row in rows:
        if row["dataset"] != "cifar10" or row["config"] is None:
            continue
        text = row["status"].replace("_", " ")
        if row["status"] == "ok":
            text = f"{_pct(row['top1'])} ({_pct(row['macs_after'] / row['macs_before'], 0)}%)"
        cells.setdefault((row["model"], row["target"]), {})[row["config"]] = text
    for (model, target), by_config in cells.items():
        ref = base.get(model)
        lines.append(f"| {model.replace('_cifar10', '')} | {'held out' if model in HELD_OUT else 'development'} | "
                     f"{_pct(ref['top1']) if ref else '–'} | {target:g} | "
                     + " | ".join(by_config.get(c, "–") for c in CONFIGS) + " |")
    return lines


def goal_lines(rows: list[dict]) -> list[str]:
    """Issue 10's EfficientNet criteria, checked against the rows."""
    lines = []
    for row in rows:
        if row["dataset"] != "imagenet" or row["config"] not in ("groups-uniform", "groups-error", "groups-sensitivity"):
            continue
        if row["status"] != "ok" or row.get("unpruned_top1") is None:
            continue
        loss = 100 * (row["unpruned_top1"] - row["top1"])
        limit = 5 if row["calibrated"] else 10
        where = "odd 250" if row["calibrated"] else "all 500"
        verdict = "met" if loss <= limit else "**not met**"
        lines.append(f"- {row['model']}, {CONFIG_NAMES[row['config']]}, "
                     f"{'calibrated' if row['calibrated'] else 'data-free'}: loses {loss:.1f} points on {where} "
                     f"(limit {limit}): {verdict}")
    return lines


def kept_rows_line(data: dict) -> list[str]:
    """With --merge: which rows this run did not redo, and the run they come from."""
    kept = data.get("kept_rows_from")
    if not kept:
        return []
    commit = (kept.get("git") or {}).get("commit", "?")[:10]
    return ["", f"This run redid the {data['options']['only']} part only; the rows of "
                f"{', '.join(kept['models'])} are from the run of {kept.get('created')} at commit {commit} "
                f"({kept.get('seconds', 0):.0f} s), which the change between the two does not affect."]


def markdown(data: dict) -> str:
    rows = data["rows"]
    git = data.get("git")
    commit = f"commit {git['commit'][:10]}{' with local changes' if git['modified_files'] else ''}, " if git else ""
    m = data["machine"]
    parts = [
        "# Accuracy at a MACs budget: channel groups against block-internal chains (no fine-tuning)",
        "",
        f"Generated by `python bench/budget_accuracy.py` from `budget_accuracy.json` (onnx-lbyl {data['tool_version']}, "
        f"{commit}{data['created']}); do not edit by hand. The whole run took {data['seconds']:.0f} s "
        f"({data['cpu_seconds']:.0f} CPU-seconds) with {data['options']['jobs']} worker process(es) of one "
        f"onnxruntime thread each, on {m['cpus']} CPU(s) ({m['processor']}, {m['platform']}; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, numpy {m['numpy']}) shared with other work, so the "
        "seconds are wall times under load.",
        *kept_rows_line(data),
        "",
        f"Protocol: {data['protocol']}",
        "",
        "Configurations: *chains only* = `scope=\"chains\"` (Conv→BN→ReLU→Conv inside blocks, the papers' protocol), "
        "uniform ratio; *groups* = `scope=\"groups\"` (the default: also residual streams, depthwise blocks, SE, "
        "Concat/Split, any activation), allocation `sensitivity` (the default for --target-macs: per-layer amounts "
        "by expected output error per MAC saved, each layer's prices scaled by the output drift measured with it "
        "alone pruned to half), `error` (the same prices unscaled) or `uniform`. Δ = top-1 minus the unpruned model's on the same images, in points; "
        "agreement = share of images where the pruned and unpruned models predict the same class.",
        "",
        f"## 1. EfficientNet-Lite0, target_macs={IMAGENET_TARGET:g}, ImageNet sample (500 images, one per class)",
        "",
        "A point of top-1 is 2 images on all 500, 4 on the odd 250. Calibrated rows calibrate on the 250 "
        "even-indexed images and are scored on the 250 odd-indexed ones only.",
        "",
        *imagenet_table(rows),
        "",
        "Issue 10's criteria (data-free within 10 points on the sample, calibrated within 5):",
        "",
        *(goal_lines(rows) or ["- no EfficientNet rows in this run"]),
        "",
        "## 2. CIFAR ResNets, full CIFAR-10 test set (10,000 images)",
        "",
        "Top-1 (%), with the MACs kept in parentheses:",
        "",
        *summary_table(rows),
        "",
        "Every row:",
        "",
        *cifar_table(rows, targets=CIFAR_TARGETS + (None,), models=RESNETS),
    ]
    curve = [r for r in rows if r["model"] == CURVE_MODEL and r["config"] is not None]
    if curve:
        parts += ["", f"## 3. {CURVE_MODEL}: top-1 against MACs kept, targets "
                      f"{', '.join(f'{t:g}' for t in CURVE_TARGETS)}",
                  "", f"Plot: `budget_accuracy_{CURVE_MODEL}.png`.", "",
                  *cifar_table(rows, models=(CURVE_MODEL,))]
    return "\n".join(parts)


def plot(data: dict, out: Path) -> list[Path]:
    """Top-1 against the fraction of MACs kept for CURVE_MODEL, one line per configuration."""
    rows = [r for r in data["rows"] if r["model"] == CURVE_MODEL]
    base = next((r for r in rows if r["config"] is None), None)
    if base is None or not any(r["config"] for r in rows):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=100)
    for config in CONFIGS:
        points = sorted((r["macs_after"] / r["macs_before"], r["top1"], r["target"]) for r in rows
                        if r["config"] == config and r["status"] == "ok")
        if points:
            ax.plot([100 * p[0] for p in points], [100 * p[1] for p in points], marker="o", label=CONFIG_NAMES[config])
    ax.axhline(100 * base["top1"], color="grey", linestyle="--", label=f"unpruned ({100 * base['top1']:.2f})")
    ax.set_xlabel("MACs kept (% of the unpruned model)")
    ax.set_ylabel("top-1 on CIFAR-10 test (%)")
    ax.set_title(f"{CURVE_MODEL} (held out): target_macs {min(CURVE_TARGETS):g}–{max(CURVE_TARGETS):g}, "
                 "no data, no fine-tuning", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"budget_accuracy_{CURVE_MODEL}.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    sys.exit(main())
