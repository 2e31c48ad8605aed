"""Which channel counts onnxruntime's CPU Conv kernels like: one pruned layer, timed alone.

    python bench/conv_alignment.py            # about a minute

A Conv(n -> c) -> Relu -> Conv(c -> n) pair (the pruned width c is the first Conv's output and
the second's input, as in a pruned chain), against the unpruned pair (c = n), for c at and just
off multiples of 4, 8 and 16. Reported per c: how many of the two Convs onnxruntime runs in its
blocked NCHWc layout, the MACs ratio and the latency ratio (1 thread, batch 1, runs of the two
models alternating; the *minimum* over runs, the figure least disturbed by the other jobs of a
shared machine, and the median). Writes bench/results/conv_alignment.json and .md.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent / "results"
CASES = (  # (n, kernel, spatial size, widths c)
    (64, 3, 56, (64, 63, 60, 57, 56, 52, 49, 48, 45, 44, 40)),
    (256, 1, 28, (256, 255, 252, 249, 248, 244, 240, 236, 232, 230, 180, 179, 176)),
)
RUNS = 25


def pair(n: int, c: int, k: int, hw: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((c, n, k, k)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(c, np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((n, c, k, k)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["y"], pads=[k // 2] * 4),
             helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["z"], pads=[k // 2] * 4)]
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n, hw, hw])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, n, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def session(model: onnx.ModelProto) -> tuple[ort.InferenceSession, int]:
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        s = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return s, sum(1 for node in optimized.graph.node if node.domain == "com.microsoft.nchwc" and node.op_type == "Conv")


def once(s: ort.InferenceSession, feeds) -> float:
    started = time.perf_counter()
    s.run(None, feeds)
    return time.perf_counter() - started


def main() -> None:
    rows = []
    load = os.getloadavg()
    for n, k, hw, widths in CASES:
        feeds = {"x": np.random.default_rng(1).random((1, n, hw, hw), dtype=np.float32)}
        base, _ = session(pair(n, n, k, hw))
        for c in widths:
            s, blocked = session(pair(n, c, k, hw))
            for _ in range(2):
                once(base, feeds), once(s, feeds)
            a, b = [], []
            for _ in range(RUNS):
                a.append(once(base, feeds))
                b.append(once(s, feeds))
            row = {"n": n, "kernel": k, "size": hw, "c": c, "nchwc_convs": blocked, "macs_ratio": round(c / n, 4),
                   "latency_ratio_min": round(min(b) / min(a), 3),
                   "latency_ratio_median": round(statistics.median(b) / statistics.median(a), 3)}
            rows.append(row)
            print(row, flush=True)
    result = {"onnxruntime": ort.__version__, "cpus": os.cpu_count(), "load_average_before": load,
              "load_average": os.getloadavg(), "runs": RUNS, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "conv_alignment.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# One pruned layer: which widths onnxruntime's CPU kernels like", "",
             f"`python bench/conv_alignment.py`: Conv(n→c) → Relu → Conv(c→n) against c = n, onnxruntime "
             f"{ort.__version__}, 1 thread, batch 1, {RUNS} alternating runs; load average {load[0]:.1f} before, "
             f"{result['load_average'][0]:.1f} after (a shared 2-core machine: the minimum is the steadier figure).", "",
             "| n | kernel | size | c | c mod 4 / 8 / 16 | NCHWc Convs | MACs x | latency x (min) | latency x (median) | latency / MACs (min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['kernel']}x{r['kernel']} | {r['size']} | {r['c']} | {r['c'] % 4} / {r['c'] % 8} / "
                     f"{r['c'] % 16} | {r['nchwc_convs']}/2 | {r['macs_ratio']:.3f} | {r['latency_ratio_min']:.3f} | "
                     f"{r['latency_ratio_median']:.3f} | {r['latency_ratio_min'] / r['macs_ratio']:.2f} |")
    (OUT / "conv_alignment.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
