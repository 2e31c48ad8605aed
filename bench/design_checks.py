"""The measurements behind the channel-group statistics defaults, rerun from scratch.

Two choices of how groups (residual streams, depthwise blocks, ...) get their data-free
statistics, and one of how a MACs budget is shared out, each compared with its alternative:

- BN-matched probe: every BatchNormalization of the probe normalises by the synthetic batch's
  own statistics (graph.probe.batch_statistics_bn), or by its running statistics as the model
  does;
- probe images for groups: sources.GROUP_PROBE_IMAGES (128) or the chains' 32;
- allocation of --target-macs: uniform ratio, or by error per MAC (planning.allocate).

Development models (the choices were made on them): ResNet-20 and ResNet-8, both exports, scored
on the first 1,000 CIFAR-10 test images at --ratio 0.3 (allocation: --target-macs 0.4).
EfficientNet-Lite0 (BN export, --target-macs 0.25, scored on the 250 odd-indexed images of the
ImageNet sample) was looked at too while the groups were developed: it is reported here, and it
is not a held-out model for these choices.

    python bench/design_checks.py        # about 10 minutes; writes bench/results/design_checks.{json,md}
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
sys.path.insert(0, str(HERE.parent))

import onnx_lbyl.group_pruning as group_pruning  # noqa: E402
import onnx_lbyl.pipeline as pipeline  # noqa: E402
from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.evaluate import evaluate  # noqa: E402

DEV = ["akamaster_resnet20_cifar10_bn", "akamaster_resnet20_cifar10_folded",
       "mlcommons_tiny_resnet8_cifar10_bn", "mlcommons_tiny_resnet8_cifar10_folded"]


@contextmanager
def variant(batch_statistics: bool = True, probe_images: int | None = None):
    """Run compress with the group probe's BN normalisation and image count replaced."""
    measure, images = group_pruning.measure, pipeline.GROUP_PROBE_IMAGES

    def patched(*args, **kwargs):
        kwargs["batch_statistics"] = kwargs.get("batch_statistics", False) and batch_statistics
        return measure(*args, **kwargs)

    pipeline.measure = patched
    if probe_images is not None:
        pipeline.GROUP_PROBE_IMAGES = probe_images
    try:
        yield
    finally:
        pipeline.measure, pipeline.GROUP_PROBE_IMAGES = measure, images


def top1(model, data: Path) -> float:
    return round(100 * evaluate(model, str(data)).top1, 2)


def main() -> None:
    out = HERE / "results"
    scratch = out / "design_checks_data"
    scratch.mkdir(parents=True, exist_ok=True)
    cifar = np.load(SHARED / "data" / "cifar10_test.npz")
    np.savez(scratch / "cifar1000.npz", images=cifar["images"][:1000], labels=cifar["labels"][:1000])
    imagenet = np.load(SHARED / "data" / "imagenet_sample500_test.npz")
    np.savez(scratch / "imagenet_odd250.npz", images=imagenet["images"][1::2], labels=imagenet["labels"][1::2])
    rows, started = [], time.perf_counter()

    def record(model_name, choice, setting, options, data, **kind):
        with variant(**kind):
            model = compress(str(SHARED / "models" / f"{model_name}.onnx"), options).model
        score = top1(model, data)
        rows.append({"model": model_name, "choice": choice, "setting": setting, "top1": score})
        print(f"{model_name:40s} {choice:22s} {setting:28s} {score:6.2f}", flush=True)

    for name in DEV:
        ratio = CompressOptions(ratio=0.3, round_to=1)
        record(name, "BN-matched probe", "running statistics", ratio, scratch / "cifar1000.npz", batch_statistics=False)
        record(name, "BN-matched probe", "batch statistics (default)", ratio, scratch / "cifar1000.npz")
        record(name, "group probe images", "32", ratio, scratch / "cifar1000.npz", probe_images=32)
        record(name, "group probe images", "128 (default)", ratio, scratch / "cifar1000.npz")
        for allocation in ("uniform", "error"):
            record(name, "allocation", f"{allocation} at --target-macs 0.4",
                   CompressOptions(target_macs=0.4, allocation=allocation, round_to=1), scratch / "cifar1000.npz")
    lite = "efficientnet_lite0_bn"
    budget = CompressOptions(target_macs=0.25, allocation="error", round_to=1)  # as these checks were made
    record(lite, "BN-matched probe", "running statistics", budget, scratch / "imagenet_odd250.npz", batch_statistics=False)
    record(lite, "group probe images", "32", budget, scratch / "imagenet_odd250.npz", probe_images=32)
    record(lite, "defaults", "both (allocation error)", budget, scratch / "imagenet_odd250.npz")
    record(lite, "allocation", "uniform at --target-macs 0.25", CompressOptions(target_macs=0.25, allocation="uniform", round_to=1),
           scratch / "imagenet_odd250.npz")
    seconds = round(time.perf_counter() - started)
    (out / "design_checks.json").write_text(json.dumps({"seconds": seconds, "rows": rows}, indent=2) + "\n")
    lines = ["# Design checks for the channel-group statistics", "",
             f"`python bench/design_checks.py`, {seconds} s on this machine (2 cores). Development models: "
             "ResNet-20 and ResNet-8, both exports, first 1,000 CIFAR-10 test images. EfficientNet-Lite0 "
             "(250 odd-indexed ImageNet-sample images) was looked at while developing, so it is not held out.", "",
             "| model | choice | setting | top-1 |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['choice']} | {r['setting']} | {r['top1']:.2f} |" for r in rows]
    (out / "design_checks.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
