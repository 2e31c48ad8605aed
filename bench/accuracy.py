"""Accuracy after data-free pruning: every model x method x criterion x ratio, no fine-tuning.

    python bench/accuracy.py                      # everything (see accuracy.md for the time taken)
    python bench/accuracy.py --models akamaster_resnet20_cifar10_bn --ratios 0.3
    python bench/accuracy.py --seed 1 --methods moments-greedy --out bench/results/seeds/seed1   # another probe draw
    python bench/accuracy.py --only onnxsim       # only the peer's rows, merged into the existing accuracy.json

Protocol, fixed before any scoring (the JSON records it): one ratio for every prunable
layer, the l2 criterion unless --criteria says otherwise, every other setting the
CompressOptions default (no lambda or anything else tuned on the test set), the full
test set, preprocessing from each model's `lbyl_eval.preprocess` metadata. Compression goes
through the public API (onnx_lbyl.compress) and scoring through onnx_lbyl.evaluate, the same
code `onnx-lbyl` and `onnx-lbyl eval` run.

The settings run in --jobs worker processes (default: one per CPU) with one onnxruntime
thread each. Writes bench/results/accuracy.json, accuracy.md and one accuracy_<model>.png
per model; --update-readme then regenerates the README section (bench/update_readme.py).
A partial run overwrites them too: pass --out elsewhere to keep a full run's results.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import os
import multiprocessing
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

import onnx_lbyl
from onnx_lbyl import CompressOptions, NothingToPruneError, compress
from onnx_lbyl.evaluate import Dataset, evaluate, load_dataset, resolve_preprocess
from onnx_lbyl.graph.cost import model_cost
from onnx_lbyl.methods import METHODS

import tables

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_SHARED = ROOT.parent / "shared"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
# The default method, the default with calibration data, LBYL (as given and with its lambdas
# chosen per layer without labels) and the two baselines; every other method can be asked for
# with --methods.
CALIBRATED = "+calibration"
CALIBRATION_IMAGES = 512  # the first 512 test images calibrate; the other 9,488 score
# The peer: onnxsim's structured pruning through its Python API (onnxsim.simplify, then
# apply_structured_pruning: filter L2 norms, no compensation; apply_structured_wanda_pruning:
# ||filter|| x ||activation|| on the same calibration images as our calibrated rows). The bench
# extra pins it; it is imported only when one of these methods runs.
PEER = "onnxsim"
PEER_METHODS = ("onnxsim-filter-norm", "onnxsim-wanda" + CALIBRATED)
DEFAULT_METHODS = ("moments-greedy", "moments-greedy" + CALIBRATED, "lbyl", "lbyl-auto", "merge", "prune") + PEER_METHODS
ALL_METHODS = tuple(METHODS) + tuple(m + CALIBRATED for m in METHODS) + PEER_METHODS
PEER_BATCH = 64  # calibration images per batch handed to onnxsim (8 batches, its default num_samples)
DATASETS = {"cifar10": "cifar10_test.npz", "fashion_mnist": "fashion_mnist_test.npz"}
PROTOCOL = ("One ratio for every prunable layer; criterion as listed (l2 unless stated); every other "
            "compression setting is the CompressOptions default, fixed before this run (no setting is chosen "
            "per model or ratio; the data-free probe's design was chosen in development with test scores in "
            "view, see bench/results/probe_variants.md); no fine-tuning, no data used by compression; top-1 on the full test set with "
            "the preprocessing in each model's lbyl_eval.preprocess metadata.")

PEER_PROTOCOL = ("onnxsim 0.8.1, called in-process: onnxsim.simplify (which folds BatchNormalization into the "
                 "convs), then onnxsim.apply_structured_pruning(sparsity=ratio, importance_norm='l2') (filter norms, "
                 "no compensation) or onnxsim.apply_structured_wanda_pruning(calibration_data=the same first 512 test "
                 "images as our calibrated rows, preprocessed as the model's metadata says, sparsity=ratio, "
                 "importance_norm='l2'); nothing else set. onnxsim cannot be told which layers to prune: it prunes "
                 "every producer -> consumer chain it matches, and each of its rows records the layers and channels "
                 "it removed beside ours.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(Path(args.out))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `kill` also stops the workers
    started = time.perf_counter()
    if args.only and not args.models:  # the models of the JSON merged into, no others
        existing = json.loads((Path(args.out) / "accuracy.json").read_text())
        args.models = [m["file"] for m in existing["models"] if m["status"] == "ok"]
    models, not_run = pick_models(args)
    if not models:
        print("accuracy.py: no model with test data to run", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only:
        args.methods = list(PEER_METHODS)
    data = {
        "tool_version": onnx_lbyl.__version__,
        "git": git_state(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                    "numpy": np.__version__},
        "protocol": PROTOCOL,
        "peer_protocol": PEER_PROTOCOL,
        "options": {"methods": args.methods, "criteria": args.criteria, "ratios": args.ratios, "seed": args.seed,
                    "batch_size": args.batch_size, "jobs": args.jobs,
                    "compress_defaults": CompressOptions().to_dict()},
        "models": [],
        "seconds": 0.0,
    }
    settings = [(c, m, r) for c in args.criteria for m in args.methods for r in args.ratios]
    # unpruned first; --only takes the unpruned scores from the JSON it merges into (the file is
    # checked by its sha256), so its rows carry no agreement_with_unpruned
    tasks = [] if args.only else [Task(str(path), str(data_path), None) for path, _, data_path in models]
    tasks += [Task(str(path), str(data_path), setting, args.seed) for path, _, data_path in models for setting in settings]
    outcomes: dict[Task, dict] = {}
    for done, (task, outcome) in enumerate(run_tasks(tasks, args), start=1):
        outcomes[task] = outcome
        if not args.quiet:
            print(f"[{done}/{len(tasks)}] {describe(task, outcome)}", file=sys.stderr, flush=True)
    for path, dataset, data_path in models:
        data["models"].append(model_record(path, dataset, data_path, settings, outcomes))
    data["models"].extend(not_run)
    data["seconds"] = round(time.perf_counter() - started, 1)
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    data["cpu_seconds"] = round(own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime, 1)
    seconds, cpu_seconds = data["seconds"], data["cpu_seconds"]
    if args.only or args.merge:
        data = merge_into(json.loads((out / "accuracy.json").read_text()), data)

    (out / "accuracy.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "accuracy.md").write_text(markdown(data) + "\n")
    pngs = plot(data, out)
    print("\n".join(tables.accuracy_table(data)))
    for line in tables.not_run_lines(data):
        print(line)
    print(f"\n{len(tasks)} evaluations in {seconds:.0f} s ({cpu_seconds:.0f} CPU-s) with "
          f"{args.jobs} process(es); wrote "
          f"{out / 'accuracy.json'}, {out / 'accuracy.md'} and {len(pngs)} plot(s)")
    if args.update_readme:
        import update_readme

        return update_readme.main(["--results", str(out / "accuracy.json")])
    return 0


def git_state() -> dict | None:
    """The commit the tool was measured at, and whether the working tree differed from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "modified_files": bool(status.strip())}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", default=str(DEFAULT_SHARED),
                   help="folder with models/*.onnx and data/*.npz (default: ../shared beside the repository)")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="model names in SHARED/models (with or without .onnx) or paths to .onnx files "
                        "(default: every model whose lbyl_eval.dataset has test data)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(ALL_METHODS),
                   help=f"methods to run; METHOD{CALIBRATED} calibrates on the first {CALIBRATION_IMAGES} test "
                        "images (no labels) and is scored on the rest")
    p.add_argument("--criteria", nargs="+", default=["l2"], metavar="CRITERION",
                   help="selection criteria (default: l2)")
    p.add_argument("--ratios", nargs="+", type=float, default=list(DEFAULT_RATIOS))
    p.add_argument("--seed", type=int, default=0,
                   help="CompressOptions.seed for every setting (it seeds the data-free probe's images)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                   help="worker processes, each with one onnxruntime thread (default: one per CPU; "
                        "1 runs in this process with onnxruntime's own threading)")
    p.add_argument("--out", default=str(BENCH / "results"), help="output folder (default: bench/results)")
    p.add_argument("--update-readme", action="store_true",
                   help="then regenerate the README section (bench/update_readme.py) from the new results")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-setting progress lines")
    p.add_argument("--merge", action="store_true",
                   help="merge the rows of these --models and --methods into OUT/accuracy.json, replacing earlier "
                        "rows of those methods on those models; the rest of it is kept")
    p.add_argument("--render", action="store_true",
                   help="run nothing: rewrite OUT/accuracy.md and the plots from OUT/accuracy.json")
    p.add_argument("--only", choices=[PEER],
                   help=f"run only the peer's methods ({', '.join(PEER_METHODS)}, and the unpruned models) and merge "
                        "them into OUT/accuracy.json, replacing earlier rows of those methods; the rest of it is kept")
    args = p.parse_args(argv)
    try:  # fail before minutes of work, not after
        for criterion in args.criteria:
            CompressOptions(criterion=criterion).check()
        for ratio in args.ratios:
            CompressOptions(ratio=ratio).check()
    except onnx_lbyl.InputError as exc:
        p.error(str(exc))
    if args.batch_size < 1 or args.jobs < 1:
        p.error("--batch-size and --jobs must be at least 1")
    if args.only and not (Path(args.out) / "accuracy.json").is_file():
        p.error(f"--only merges into {Path(args.out) / 'accuracy.json'}, which does not exist")
    if any(m in PEER_METHODS for m in ([] if args.only else args.methods)) or args.only:
        try:
            import onnxsim  # noqa: F401
        except ImportError:
            p.error("the onnxsim rows need onnxsim: pip install -e '.[bench]' (or leave them out with --methods)")
    return args


def pick_models(args) -> tuple[list[tuple[Path, str, Path]], list[dict]]:
    """(model, dataset name, test-set path) to run, and records of models left out."""
    shared = Path(args.shared)
    if args.models:
        paths = []
        for name in args.models:
            path = Path(name) if name.endswith(".onnx") and Path(name).exists() else \
                shared / "models" / (name if name.endswith(".onnx") else name + ".onnx")
            if not path.is_file():
                sys.exit(f"accuracy.py: model not found: {name}")
            paths.append(path)
    else:
        paths = sorted((shared / "models").glob("*.onnx"))
    runs, not_run = [], []
    for path in paths:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        dataset = props.get("lbyl_eval.dataset")
        data_path = shared / "data" / DATASETS.get(dataset or "", f"{dataset}_test.npz")
        if dataset and data_path.is_file():
            runs.append((path, dataset, data_path))
        elif args.models:
            sys.exit(f"accuracy.py: no test data for {path.name} (lbyl_eval.dataset={dataset!r})")
        else:
            not_run.append({"name": path.stem, "file": path.name, "dataset": dataset, "status": "no_test_data",
                            "message": f"no {data_path.name} in {shared / 'data'}", "results": []})
    return runs, not_run


# ---------------------------------------------------------------------------------------
# The work: one task = compress one model with one setting (or not at all) and score it.


@dataclass(frozen=True)
class Task:
    model: str
    data: str
    setting: tuple[str, str, float] | None  # (criterion, method, ratio); None = the unpruned model
    seed: int = field(default=0, compare=False)  # CompressOptions.seed; one per run, so not part of the key


_THREADS: int | None = None  # onnxruntime threads in this process; set per worker


def _init_worker(threads: int | None) -> None:
    global _THREADS
    _THREADS = threads


@functools.lru_cache(maxsize=None)
def _dataset(path: str) -> Dataset:
    return load_dataset(path)


@functools.lru_cache(maxsize=4)
def _model(path: str) -> onnx.ModelProto:
    return onnx.load(path)


def score(task: Task, batch_size: int) -> dict:
    """Compress (unless unpruned) and evaluate; what the JSON records, plus the predictions."""
    model = _model(task.model)
    compress_seconds, report = 0.0, None
    if task.setting is not None and task.setting[1] in PEER_METHODS:
        criterion, method, ratio = task.setting
        images = _dataset(task.data).images[:CALIBRATION_IMAGES] if method.endswith(CALIBRATED) else None
        started = time.perf_counter()
        model, peer = peer_compress(model, method, ratio, criterion, images)
        compress_seconds = time.perf_counter() - started
    elif task.setting is not None:
        criterion, method, ratio = task.setting
        calibration = None
        if method.endswith(CALIBRATED):
            method = method[: -len(CALIBRATED)]
            calibration = {"images": _dataset(task.data).images[:CALIBRATION_IMAGES]}
        started = time.perf_counter()
        try:
            result = compress(model, CompressOptions(ratio=ratio, scope="chains", method=method, criterion=criterion,
                                                     calibration=calibration, seed=task.seed,
                                                     round_to=1))  # the papers' exact kept counts
        except NothingToPruneError as exc:
            return {"nothing_to_prune": str(exc)}
        compress_seconds = time.perf_counter() - started
        model, report = result.model, result.report
    dataset = _dataset(task.data)
    scored = evaluate(model, dataset, batch_size=batch_size, threads=_THREADS)
    held_out = float(np.mean(np.asarray(scored.predictions)[CALIBRATION_IMAGES:] == dataset.labels[CALIBRATION_IMAGES:]))
    outcome = {"top1": scored.top1, "top5": scored.top5, "count": scored.count, "preprocess": scored.preprocess,
               "eval_seconds": scored.seconds, "predictions": scored.predictions,
               "top1_heldout": held_out}  # on the images no calibration ever sees, for every setting
    if task.setting is not None and task.setting[1].endswith(CALIBRATED):
        outcome.update(top1=held_out, top5=None, count=len(dataset) - CALIBRATION_IMAGES,
                       scored_on=f"test images {CALIBRATION_IMAGES}..{len(dataset) - 1} (calibrated on the first "
                                 f"{CALIBRATION_IMAGES}, without labels)")
    if task.setting is not None and task.setting[1] in PEER_METHODS:
        outcome.update(peer, calibration_images=CALIBRATION_IMAGES if task.setting[1].endswith(CALIBRATED) else 0,
                       compress_seconds=round(compress_seconds, 3))
    elif report is None:
        cost = model_cost(model)
        outcome.update(parameters=cost.parameters, macs=cost.macs)
    else:
        outcomes = report.validation.outputs if report.validation else []
        outcome.update(
            options={k: v for k, v in report.options.items() if k != "calibration"},
            calibration_images=CALIBRATION_IMAGES if task.setting[1].endswith(CALIBRATED) else 0,
            parameters=report.parameters_after,
            macs=report.macs_after,
            chains_pruned=report.chains_pruned,
            chains_found=report.chains_found,
            validation_relative_l2_error=outcomes[0].relative_l2_error if outcomes else None,
            compress_seconds=round(compress_seconds, 3),
        )
    return outcome


def output_channels(model: onnx.ModelProto) -> dict[str, int]:
    """Output channels of every Conv, Gemm and MatMul with a constant weight, by node name."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    channels = {}
    for node in model.graph.node:
        dims = weights.get(node.input[1]) if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 else None
        if not dims or len(dims) < 2:
            continue
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            channels[node.name] = dims[0] if trans_b else dims[1]
        else:
            channels[node.name] = dims[0] if node.op_type == "Conv" else dims[-1]
    return channels


def removed_channels(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    """{layer: [channels before, after]} for the layers whose output channels shrank."""
    return {name: [n, after[name]] for name, n in before.items() if name in after and after[name] < n}


def peer_compress(model: onnx.ModelProto, method: str, ratio: float, criterion: str,
                  images: np.ndarray | None) -> tuple[onnx.ModelProto, dict]:
    """Prune `model` with onnxsim's Python API, the way its documentation says: simplify (which
    folds BatchNormalization into the convs, as its pruning expects), then its structured
    pruning at `ratio` per matched layer (it has no way to pick layers: it prunes every
    producer -> consumer chain it matches). `images` (uint8, the same calibration images our
    calibrated rows get) feed the wanda variant, preprocessed as the model's metadata says.
    Also returns what it removed, beside what our chains scope removes at the same ratio."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim.simplify could not check its result")
    norm = {"l2": "l2", "l1": "l1"}.get(criterion)
    if norm is None:
        raise ValueError(f"onnxsim ranks by l1 or l2 filter norms, not {criterion}")
    if method == "onnxsim-wanda" + CALIBRATED:
        prep = resolve_preprocess(model, np.issubdtype(images.dtype, np.integer))
        name = simplified.graph.input[0].name
        batches = [{name: prep.apply(images[i:i + PEER_BATCH])} for i in range(0, len(images), PEER_BATCH)]
        pruned = onnxsim.apply_structured_wanda_pruning(simplified, calibration_data=batches, sparsity=ratio,
                                                        importance_norm=norm)
        call = (f"onnxsim.apply_structured_wanda_pruning(onnxsim.simplify(model)[0], calibration_data={len(batches)} "
                f"batches of <= {PEER_BATCH} images, sparsity={ratio}, importance_norm={norm!r})")
    else:
        pruned = onnxsim.apply_structured_pruning(simplified, sparsity=ratio, importance_norm=norm)
        call = f"onnxsim.apply_structured_pruning(onnxsim.simplify(model)[0], sparsity={ratio}, importance_norm={norm!r})"
    del pruned.metadata_props[:]  # the preprocessing metadata the scorer reads, whatever simplify kept
    pruned.metadata_props.extend(model.metadata_props)
    # What our benchmark protocol (scope="chains") removes at the same ratio; the layers and
    # channel counts are the same for every one of our methods, so "prune" stands for all.
    ours = compress(model, CompressOptions(ratio=ratio, scope="chains", method="prune", criterion="l2")).model
    before = output_channels(model)
    theirs, mine = removed_channels(before, output_channels(pruned)), removed_channels(before, output_channels(ours))
    cost, cost_ours = model_cost(pruned), model_cost(ours)
    return pruned, {
        "options": {"onnxsim": onnxsim.__version__, "call": call},
        "parameters": cost.parameters, "macs": cost.macs,
        "layers_pruned": theirs,
        "channels_removed": sum(n - k for n, k in theirs.values()),
        "same_layers_as_ours": sorted(theirs) == sorted(mine),
        "ours": {"parameters": cost_ours.parameters, "macs": cost_ours.macs,
                 "channels_removed": sum(n - k for n, k in mine.values()), "layers_pruned": mine},
    }


def merge_into(existing: dict, new: dict) -> dict:
    """`existing` (a full run's JSON) with the rows of `new`'s methods replaced by `new`'s, model
    by model (models `new` did not run keep their rows); each must be the same file (sha256)
    with the same unpruned top-1."""
    methods = new["options"]["methods"]
    fresh = {m["name"]: m for m in new["models"] if m["status"] == "ok"}
    for model in existing["models"]:
        if model["status"] != "ok":
            continue
        if model["name"] not in fresh:
            continue
        got = fresh[model["name"]]
        if got["sha256"] != model["sha256"]:
            sys.exit(f"accuracy.py: {model['name']} is not the file {existing.get('created')} measured")
        model["results"] = [r for r in model["results"] if r["method"] not in methods] + got["results"]
    existing["peer_protocol"] = new["peer_protocol"]
    # the table's row order is this list's: methods it already has keep their place
    existing["options"]["methods"] += [m for m in methods if m not in existing["options"]["methods"]]
    names = sorted(fresh)
    existing["merged"] = [r for r in existing.get("merged", []) if r["methods"] != methods
                          or not set(r.get("models", [])) <= set(names)] + [
        {"methods": methods, "models": names, "created": new["created"], "git": new["git"],
         "machine": new["machine"], "seconds": new["seconds"], "cpu_seconds": new["cpu_seconds"]}]
    return existing


def run_tasks(tasks: list[Task], args):
    """Yield (task, outcome) as tasks finish: in this process for --jobs 1, otherwise in a
    pool of single-threaded workers, which uses 2 cores better than one process with 2
    onnxruntime threads on these small per-image workloads."""
    if args.jobs == 1:
        for task in tasks:
            yield task, score(task, args.batch_size)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding thread pools
    # leaving the block (also on an error or Ctrl-C) terminates the workers
    with context.Pool(args.jobs, initializer=_init_worker, initargs=(1,)) as pool:
        yield from pool.imap_unordered(functools.partial(_score_task, batch_size=args.batch_size), tasks)


def _score_task(task: Task, batch_size: int) -> tuple[Task, dict]:
    return task, score(task, batch_size)


def describe(task: Task, outcome: dict) -> str:
    name = Path(task.model).stem
    if "nothing_to_prune" in outcome:
        return f"{name}: nothing to prune"
    what = "unpruned" if task.setting is None else "{1} {0} {2:g}".format(*task.setting)
    timing = f"eval {outcome['eval_seconds']:.1f} s"
    if task.setting is not None:
        timing = f"compress {outcome['compress_seconds']:.1f} s, " + timing
    return f"{name} {what}: top-1 {100 * outcome['top1']:.2f}% ({timing})"


def model_record(path: Path, dataset: str, data_path: Path, settings, outcomes: dict[Task, dict]) -> dict:
    """The JSON entry of one model: its unpruned score, then one result per setting."""
    props = {p.key: p.value for p in _model(str(path)).metadata_props}
    base = outcomes.get(Task(str(path), str(data_path), None))
    if base is None:  # --only: the unpruned model's record stays the merged JSON's
        base = {"count": None, "preprocess": None, "top1": None, "top5": None, "parameters": None, "macs": None,
                "eval_seconds": None, "predictions": None}
    record = {
        "name": path.stem,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "dataset": dataset,
        "data": data_path.name,
        "images": base["count"],
        "preprocess": base["preprocess"],
        "reported_top1": _number(props.get("lbyl_eval.reported_top1")),
        "unpruned": {k: base[k] for k in ("top1", "top5", "parameters", "macs", "eval_seconds")},
        "status": "ok",
        "message": "",
        "results": [],
    }
    for criterion, method, ratio in settings:
        outcome = outcomes[Task(str(path), str(data_path), (criterion, method, ratio))]
        if "nothing_to_prune" in outcome:
            record["status"], record["message"] = "nothing_to_prune", outcome["nothing_to_prune"]
            record["results"] = []
            break
        entry = {"method": method, "criterion": criterion, "ratio": ratio, "top1": outcome["top1"],
                 "top5": outcome["top5"],
                 "agreement_with_unpruned": None if base["predictions"] is None else
                 float(np.mean(outcome["predictions"] == base["predictions"]))}
        entry.update({k: v for k, v in outcome.items() if k not in entry and k not in ("predictions", "count",
                                                                                        "preprocess")})
        record["results"].append(entry)
    return record


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def markdown(data: dict) -> str:
    """accuracy.md: the tables, the protocol and what was left out, all from `data`."""
    parts = [
        "# Accuracy after data-free pruning (no fine-tuning)",
        "",
        f"Generated by `bench/accuracy.py` from `accuracy.json` (onnx-lbyl {data['tool_version']}, "
        f"{_commit(data)}onnxruntime {data['machine']['onnxruntime']}, {data['created']}); do not edit by hand.",
        "",
        f"Protocol: {data['protocol']}",
        "",
        "Compression defaults: " + ", ".join(f"{k}={v}" for k, v in data["options"]["compress_defaults"].items()
                                             if k not in ("ratio", "method", "criterion")) + ".",
        "",
        "## Top-1 (%) on the full test set",
        "",
        *tables.accuracy_table(data),
        "",
        tables.CALIBRATION_NOTE,
        "",
        tables.HELD_OUT_NOTE,
        "",
        "## What is left (% of the unpruned parameters / MACs per sample; the same for every method of ours)",
        "",
        *tables.size_table(data),
    ]
    peer = tables.peer_lines(data)
    if peer:
        parts += ["", "## What onnxsim pruned, against ours", "", data.get("peer_protocol", ""), "",
                  "Channels removed and MACs left (% of unpruned), onnxsim vs ours (our chains scope, the same for "
                  f"every method of ours; {tables.peer_counts_note(data)}):", "", *peer]
        merged = [m for m in data.get("merged", []) if set(m["methods"]) & set(tables.PEER_METHODS)]
        if merged:
            parts += ["", "The onnxsim rows were run on their own and merged into this run's JSON "
                          "(`python bench/accuracy.py --only onnxsim [--models ...]`): "
                      + "; ".join(f"{', '.join(m.get('models', ['all']))} at {_commit(m)}{m['created']}, "
                                  f"{m['seconds']:.0f} s" for m in merged) + "."]
    ours = [m for m in data.get("merged", []) if not set(m["methods"]) & set(tables.PEER_METHODS)]
    if ours:
        parts += ["", "Rows re-run on their own and merged into this run's JSON (`python bench/accuracy.py --merge "
                      "--models ... --methods ...`), after a change that affects only them: "
                  + "; ".join(f"{', '.join(m['methods'])} on {', '.join(m.get('models', ['all']))} at "
                              f"{_commit(m)}{m['created']}, {m['seconds']:.0f} s" for m in ours) + "."]
    skipped = tables.not_run_lines(data)
    if skipped:
        parts += ["", "## Not pruned", "", *skipped]
    parts += ["", f"The whole run took {data['seconds']:.0f} s on {data['machine']['cpus']} CPU(s) "
              f"({data.get('cpu_seconds', 0):.0f} CPU-seconds; wall time grows with other load on the machine)."]
    return "\n".join(parts)


def render(out: Path) -> int:
    """Rewrite accuracy.md and the plots from OUT/accuracy.json as it is (no run)."""
    data = json.loads((out / "accuracy.json").read_text())
    (out / "accuracy.md").write_text(markdown(data) + "\n")
    plot(data, out)
    print(f"wrote {out / 'accuracy.md'} and the plots from {out / 'accuracy.json'}")
    return 0


def _commit(data: dict) -> str:
    git = data.get("git")
    if not git:
        return ""
    return f"commit {git['commit'][:10]}{' with local changes' if git['modified_files'] else ''}, "


def plot(data: dict, out: Path) -> list[Path]:
    """One PNG per pruned model: top-1 against ratio, a line per method (and criterion),
    the unpruned top-1 as a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    many = len(data["options"]["criteria"]) > 1
    for model in tables.ran_models(data):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for criterion in data["options"]["criteria"]:
            for method in data["options"]["methods"]:
                points = sorted((r["ratio"], r["top1"]) for r in model["results"]
                                if r["method"] == method and r["criterion"] == criterion)
                if points:
                    label = tables.method_name(method).replace("**", "") + (f" ({criterion})" if many else "")
                    ax.plot([100 * p[0] for p in points], [100 * p[1] for p in points], marker="o", label=label)
        ax.axhline(100 * model["unpruned"]["top1"], color="grey", linestyle="--",
                   label=f"unpruned ({100 * model['unpruned']['top1']:.2f})")
        ax.set_xlabel("channels removed per prunable layer (%)")
        ax.set_ylabel(f"top-1 on {model['dataset']} test (%)")
        ax.set_title(f"{model['name']}: no data, no fine-tuning", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"accuracy_{model['name']}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":
    sys.exit(main())
