"""Where a compression's peak memory is: wall time and peak RSS of each stage of `compress`.

    python bench/memory_stages.py MODEL.onnx [--ratio 0.3]
    python bench/memory_stages.py resnet50            # a bench/zoo.py model, built into --workdir

bench/speed.py gives one peak per run; this says which stage reaches it. Linux only: before
each wrapped stage the process's peak (VmHWM) is reset by writing 5 to /proc/self/clear_refs,
and read when the stage returns. A nested stage resets the peak of the stage around it, so
read an outer line's peak as "after its last inner stage"; the lines are printed as the stages
end, inner ones indented. What the issue-13 work of 2026-12-04 measured with it is in that
stop's closing note (ResNet-50: the probe's candidate scoring 1.90 GB -> 1.1 GB).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import onnx_lbyl.pipeline as pipeline  # noqa: E402
import onnx_lbyl.sources as sources  # noqa: E402
from onnx_lbyl import CompressOptions, compress  # noqa: E402
from onnx_lbyl.graph.io import save_atomic  # noqa: E402
from speed import proc_status_mb  # noqa: E402  (bench/speed.py: /proc/self/status in MB)

# (module, function) pairs timed, in the modules that call them
STAGES = [
    (sources, "synthetic_pool"), (sources, "_to_model_input"), (sources, "classifier_scores"),
    (pipeline, "synthetic_feeds"), (pipeline, "probe_chains"), (pipeline, "measure"),
    (pipeline, "prune_groups"), (pipeline, "validate"),
]


def _wrap(module, name: str, depth: list[int]) -> None:
    inner = getattr(module, name)

    def timed(*args, **kwargs):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current RSS
        start, started = proc_status_mb("VmRSS"), time.perf_counter()
        depth[0] += 1
        try:
            return inner(*args, **kwargs)
        finally:
            depth[0] -= 1
            print(f"{'  ' * depth[0]}{module.__name__.split('.')[-1] + '.' + name:<32} start {start:6.0f} MB  "
                  f"peak {proc_status_mb('VmHWM'):6.0f} MB  end {proc_status_mb('VmRSS'):6.0f} MB  "
                  f"{time.perf_counter() - started:6.1f} s", flush=True)

    setattr(module, name, timed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="an .onnx path, or a bench/zoo.py model name")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "onnx-lbyl-bench"))
    args = p.parse_args()
    path = Path(args.model)
    if not path.exists():
        import speed  # the zoo model as a file, built once and reused

        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        path = speed.model_file(args.model, Path(args.workdir))
    depth = [0]
    for module, name in STAGES:
        _wrap(module, name, depth)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        save_atomic(compress(str(path), CompressOptions(ratio=args.ratio)).model, str(Path(folder) / "out.onnx"))
    print(f"total {time.perf_counter() - started:.1f} s; peak of the run: see the largest 'peak' above "
          f"(each stage resets it); RSS now {proc_status_mb('VmRSS'):.0f} MB")


if __name__ == "__main__":
    main()
