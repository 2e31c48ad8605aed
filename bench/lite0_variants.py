"""The EfficientNet-Lite0 budget variants of bench/results/lite0_budget_variants.md, re-runnable.

    python bench/lite0_variants.py default --seed 2        # one row of the table (about 1 minute)
    python bench/lite0_variants.py rounds2 --seed 1
    python bench/lite0_variants.py rounds2 --model akamaster_resnet20_cifar10_bn --target 0.5
    python bench/lite0_variants.py --mismatch 0 1 2 3 4    # the BN-input variance mismatch per seed

Each variant is the shipped pipeline with one function replaced (a monkeypatch of
onnx_lbyl.pipeline or onnx_lbyl.sensitivity, at the commit that added this script); none of
them is in the tool, because none won (see the results file). Protocol as
bench/budget_accuracy.py: target_macs 0.25, round_to=1, data-free unless `calibrated`
(the 250 even-indexed images, no labels). Top-1 on the 500-image ImageNet sample: all, even
250, odd 250, and agreement with the unpruned model; a CIFAR model is scored on its full test
set. Prints one JSON line per run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parent.parent / "shared"

import onnx_lbyl.pipeline as P  # noqa: E402
import onnx_lbyl.sensitivity as S  # noqa: E402
from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.evaluate import evaluate, load_dataset  # noqa: E402


def cap_at_measured_share() -> None:
    """No unit removes more channels than its sensitivity was measured at."""
    original = P.scaled_curves

    def capped(curves, measured, removed, *args, **kwargs):
        out = {}
        for name, (sizes, errors) in original(curves, measured, removed, *args, **kwargs).items():
            steps = int(np.searchsorted(np.cumsum(sizes), removed.get(name, 0), side="right"))
            out[name] = (np.asarray(sizes)[:steps], np.asarray(errors)[:steps])
        return out

    P.scaled_curves = capped


def two_point_sensitivity(second_kept: float = 0.25) -> None:
    """Drift measured at 50 % and at `second_kept` kept; steps past the first point scaled by
    the second interval's measured / predicted drift."""

    def curves_two_point(model, shapes, curves, options, probed, group_stats, scratch, stage):
        widths = {s.name: s.channels for s in shapes}
        opset = P._opset(model)
        feeds = P.synthetic_feeds(model, options.seed, scratch, rows=P.SENSITIVITY_ROWS, shapes=options.input_shapes)

        def prune_alone(name, count):
            graph, _chains, groups, _skipped, _shapes = P._find_units(model, options)
            P.prune_groups(graph, [g for g in groups if g.name == name], {name: widths[name] - count},
                           options.method_spec, group_stats, opset)
            return P._export(graph, model, options)

        first = {n: widths[n] - P.kept_channels(widths[n], 0.5, options.round_to) for n in curves}
        first = {n: c for n, c in first.items() if c > 0}
        second = {n: widths[n] - P.kept_channels(widths[n], 1 - second_kept, options.round_to) for n in curves}
        second = {n: c for n, c in second.items() if c > first.get(n, 0)}
        batch = P.fixed_batch(model, options.input_shapes)
        m1 = S.measure_sensitivity(model, first, prune_alone, feeds, batch)
        m2 = S.measure_sensitivity(model, second, prune_alone, feeds, batch)
        out = {}
        for name, (sizes, errors) in curves.items():
            sizes, errors = np.asarray(sizes), np.asarray(errors, dtype=np.float64)
            if name not in m1:
                out[name] = (sizes, errors)
                continue
            p1 = S.predicted_error((sizes, errors), first[name])
            scaled = errors * max(m1[name], 1e-12) / max(p1, 1e-30)
            if name in m2:
                p2 = S.predicted_error((sizes, errors), second[name])
                beyond = np.cumsum(sizes) - sizes >= first[name]
                scaled[beyond] = errors[beyond] * max(m2[name] - m1[name], 1e-12) / max(p2 - p1, 1e-30)
            out[name] = (sizes, scaled)
        return out

    P._sensitivity_curves = curves_two_point


def drift_as(kind: str) -> None:
    """The sensitivity's output drift as softmax KL divergence (`kl`) or the relative L2 of
    row-centred logits (`centred`), instead of the logits' relative L2."""

    def drift(before, after):
        a, b = np.asarray(before[0], np.float64), np.asarray(after[0], np.float64)
        if kind == "kl":
            la = a - a.max(1, keepdims=True)
            la -= np.log(np.exp(la).sum(1, keepdims=True))
            lb = b - b.max(1, keepdims=True)
            lb -= np.log(np.exp(lb).sum(1, keepdims=True))
            return float(np.mean(np.sum(np.exp(la) * (la - lb), axis=1)))
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return float(np.sum((b - a) ** 2) / np.sum(a ** 2))

    S.output_drift = drift


def group_probe_images(count: int) -> None:
    P.GROUP_PROBE_IMAGES = count
    P.GROUP_PROBE_MAX_VALUES = 1 << 27


def pooled_group_statistics(draws: int = 2) -> None:
    """Group statistics pooled (first and second moments averaged) over `draws` synthetic
    draws, seeds s, s + 1000, ..."""
    original = P._group_statistics

    def pooled(model, groups, options, scratch):
        runs = [original(model, groups, dataclasses.replace(options, seed=options.seed + 1000 * k), scratch)
                for k in range(draws)]
        out = {}
        for key, first in runs[0].items():
            mean = np.mean([r[key].mean for r in runs], axis=0)
            second = np.mean([r[key].cov + np.outer(r[key].mean, r[key].mean) for r in runs], axis=0)
            out[key] = type(first)(mean, second - np.outer(mean, mean))
        return out

    P._group_statistics = pooled


def sensitivity_images_of(seed: int) -> None:
    """The sensitivity's synthetic images drawn with `seed`, everything else with --seed."""
    original = P.synthetic_feeds

    def feeds(model, own_seed, scratch=None, rows=None, shapes=(), **kwargs):
        return original(model, seed if rows == P.SENSITIVITY_ROWS else own_seed, scratch, rows=rows, shapes=shapes,
                        **kwargs)

    P.synthetic_feeds = feeds


def real_sensitivity_images(images: np.ndarray) -> None:
    """Diagnostic, not data-free: the sensitivity measured on real images."""
    original = P.synthetic_feeds

    def feeds(model, seed, scratch=None, rows=None, shapes=(), **kwargs):
        if rows == P.SENSITIVITY_ROWS:
            return P.calibration_feeds(model, {"images": images})
        return original(model, seed, scratch, rows=rows, shapes=shapes, **kwargs)

    P.synthetic_feeds = feeds


def synthetic_sensitivity_images() -> None:
    """Diagnostic with calibration: the sensitivity measured on synthetic images all the same."""
    original_feeds, original_curves = P.calibration_feeds, P._sensitivity_curves
    inside = [False]

    def feeds(model, calibration):
        if inside[0]:
            return P.synthetic_feeds(model, 0, None, rows=P.SENSITIVITY_ROWS, shapes=())
        return original_feeds(model, calibration)

    def curves(*args, **kwargs):
        inside[0] = True
        try:
            return original_curves(*args, **kwargs)
        finally:
            inside[0] = False

    P.calibration_feeds, P._sensitivity_curves = feeds, curves


VARIANTS = ("default", "round8", "cap", "two-point", "kl", "centred", "probe64", "probe256", "pooled2",
            "sensitivity-seed2", "sensitivity-seed0", "rounds2", "rounds3", "rounds4",
            "calibrated", "calibrated-synthetic-sensitivity", "real-sensitivity")


def run(variant: str, model_name: str, target: float, seed: int) -> dict:
    imagenet = "cifar" not in model_name
    data = load_dataset(SHARED / "data" / ("imagenet_sample500_test.npz" if imagenet else "cifar10_test.npz"))
    options = {"round_to": 8 if variant == "round8" else 1, "seed": seed}
    patch = {"cap": cap_at_measured_share, "two-point": two_point_sensitivity, "kl": lambda: drift_as("kl"),
             "centred": lambda: drift_as("centred"), "probe64": lambda: group_probe_images(64),
             "probe256": lambda: group_probe_images(256), "pooled2": pooled_group_statistics,
             "sensitivity-seed2": lambda: sensitivity_images_of(2), "sensitivity-seed0": lambda: sensitivity_images_of(0),
             "calibrated-synthetic-sensitivity": synthetic_sensitivity_images,
             "real-sensitivity": lambda: real_sensitivity_images(data.images[::2])}.get(variant)
    if patch:
        patch()
    if variant.startswith("calibrated"):
        options["calibration"] = {"images": data.images[::2]}
    rounds = int(variant[-1]) if variant.startswith("rounds") else 1
    original = onnx.load(str(SHARED / "models" / f"{model_name}.onnx"))
    started, model = time.perf_counter(), original
    for k in range(rounds):  # round k takes the MACs kept from 1 - k t / n to 1 - (k + 1) t / n
        step = 1 - (1 - target * (k + 1) / rounds) / (1 - target * k / rounds)
        result = compress(model, CompressOptions(target_macs=step, **options))
        macs_before = result.report.macs_before if k == 0 else macs_before
        model = result.model
    row = {"variant": variant, "model": model_name, "target": target, "seed": seed,
           "macs_kept": round(result.report.macs_after / macs_before, 4),
           "compress_seconds": round(time.perf_counter() - started, 1)}
    predictions = np.asarray(evaluate(model, data, batch_size=50, threads=1).predictions)
    labels = np.asarray(data.labels)
    row["top1"] = round(100 * float(np.mean(predictions == labels)), 2)
    if imagenet:
        unpruned = np.asarray(evaluate(original, data, batch_size=50, threads=1).predictions)
        row.update(top1_even=round(100 * float(np.mean(predictions[::2] == labels[::2])), 2),
                   top1_odd=round(100 * float(np.mean(predictions[1::2] == labels[1::2])), 2),
                   agreement=round(100 * float(np.mean(predictions == unpruned)), 2))
    return row


def variance_mismatch(seeds: list[int]) -> None:
    """Per seed: mean over the BNs of mean over channels of log(batch var / running var)^2 of each
    BN's input, on the group probe's images run with the running statistics."""
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(SHARED / "models" / "efficientnet_lite0_bn.onnx"))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    del probed.graph.output[:]
    probed.graph.output.extend(onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None) for n in bns)
    session = ort.InferenceSession(probed.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in seeds:
        feeds = P.synthetic_feeds(model, seed, None, rows=P.GROUP_PROBE_IMAGES, max_values=P.GROUP_PROBE_MAX_VALUES)
        (name, images), = feeds.items()
        sums = [[0.0, 0.0, 0] for _ in bns]
        for start in range(0, len(images), 8):
            for total, out in zip(sums, session.run(None, {name: images[start:start + 8]})):
                out = out.astype(np.float64)
                total[0] += out.sum(axis=(0, 2, 3))
                total[1] += (out * out).sum(axis=(0, 2, 3))
                total[2] += out.size // out.shape[1]
        mismatch = []
        for (first, second, count), node in zip(sums, bns):
            mean, running = first / count, values[node.input[4]]
            live = running > 1e-6
            mismatch.append(np.mean(np.log(np.maximum(second / count - mean ** 2, 1e-12)[live] / running[live]) ** 2))
        print(json.dumps({"seed": seed, "log_variance_mismatch": round(float(np.mean(mismatch)), 4)}), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("variant", nargs="?", choices=VARIANTS, default="default")
    p.add_argument("--model", default="efficientnet_lite0_bn")
    p.add_argument("--target", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mismatch", type=int, nargs="+", metavar="SEED", help="only print the variance mismatch per seed")
    args = p.parse_args()
    if args.mismatch:
        variance_mismatch(args.mismatch)
    else:
        print(json.dumps(run(args.variant, args.model, args.target, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
