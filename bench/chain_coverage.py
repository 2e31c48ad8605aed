"""Which chains the tool finds, prunes and skips on the networks people export.

For each network of bench/zoo.py (BN kept and BN folded), a Keras/tf2onnx-style NHWC CNN and
an MLP, built small (width and image size reduced: the graph's structure is what matters
here), compress at ratio 0.3 with the default options and with the approximations allowed,
and tabulate chains found / pruned / skipped, the skip reasons, and whether the result ran.

    python bench/chain_coverage.py           # writes bench/results/coverage.{json,md}
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402

from onnx_lbyl import CompressOptions, NothingToPruneError, compress  # noqa: E402
from onnx_lbyl.graph.chains import find_chains  # noqa: E402


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


def networks(width: float, image: int) -> dict[str, onnx.ModelProto]:
    nets = {}
    for name in ("resnet18", "resnet50", "vgg16_bn", "mobilenet_v2"):
        for fold in (False, True):
            nets[f"{name}{'_folded' if fold else '_bn'}"] = zoo.build(name, width=width, image=image, fold_bn=fold, classes=10)
    nets["keras_nhwc_cnn"] = keras_style_cnn()
    nets["mlp_300_100"] = mlp()
    return nets


def survey(model: onnx.ModelProto, options: CompressOptions) -> dict:
    try:
        report = compress(model, options).report
    except NothingToPruneError:
        _, skipped = find_chains(gs.import_onnx(model), {i.name for i in model.graph.input},
                                 frozenset(options.allow_approximate))
        reasons = Counter(_reason_kind(s.reason) for s in skipped)
        return {"found": 0, "pruned": 0, "skipped": len(skipped), "reasons": dict(reasons.most_common()), "runs": True}
    reasons = Counter(_reason_kind(s.reason) for s in report.skipped)
    return {
        "found": report.chains_found,
        "pruned": report.chains_pruned,
        "approximate": sum(1 for layer in report.layers if layer.approximations),
        "skipped": len(report.skipped),
        "reasons": dict(reasons.most_common()),
        "runs": bool(report.validation and report.validation.runtime),
        "macs_before": report.macs_before,
        "macs_after": report.macs_after,
    }


def _reason_kind(reason: str) -> str:
    """Skip reasons without layer-specific names, so they can be counted."""
    for key in ("also feeds other nodes", "followed by", "expand/depthwise/project", "grouped/depthwise",
                "Clip/ReLU6", "MaxPool", "graph output", "feeds"):
        if key in reason:
            return reason.split(",")[0] if key == "feeds" else {
                "also feeds other nodes": "output also feeds a residual Add (or another node)",
                "followed by": "not followed by Relu (e.g. Conv->BN->Add)",
                "expand/depthwise/project": "feeds a depthwise Conv (MobileNetV2 expand)",
                "grouped/depthwise": "is a depthwise Conv",
                "Clip/ReLU6": "ReLU6 activation (approximation not allowed)",
                "MaxPool": "MaxPool before the next layer (approximation not allowed)",
                "graph output": "output is a graph output",
            }[key]
    return reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--image", type=int, default=64)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    rows = {}
    for name, model in networks(args.width, args.image).items():
        rows[name] = {
            "default": survey(model, CompressOptions(ratio=0.3)),
            "approximate": survey(model, CompressOptions(ratio=0.3, allow_approximate=("maxpool", "relu6"))),
        }
        d, a = rows[name]["default"], rows[name]["approximate"]
        print(f"{name:22s} found {d['found']:3d} pruned {d['pruned']:3d} skipped {d['skipped']}  "
              f"| with maxpool+relu6: found {a['found']:3d} ({a.get('approximate', 0)} approximate)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.json").write_text(json.dumps({"width": args.width, "image": args.image, "rows": rows}, indent=2) + "\n")
    lines = ["| model | chains found / pruned | Convs and layers left alone: why (count) | with `maxpool,relu6` allowed | runs in onnxruntime |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        d, a = r["default"], r["approximate"]
        why = "; ".join(f"{k} ({v})" for k, v in d["reasons"].items()) or "—"
        lines.append(f"| {name} | {d['found']} / {d['pruned']} | {why} | {a['found']} found, {a.get('approximate', 0)} approximate | "
                     f"{'yes' if d['runs'] and a['runs'] else 'no'} |")
    (out / "coverage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
