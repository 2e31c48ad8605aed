"""How fast a model runs in onnxruntime: the speed a user gains by pruning, measured.

MACs say how much arithmetic was removed; latency says what the user gets, and the two
differ (memory-bound operators that pruning does not touch, kernels that run best on
channel counts that are multiples of the SIMD width, fixed per-operator overhead).

Protocol: one CPU session per model, `warmup` untimed runs (the first runs pay for memory
allocation, weight pre-packing and page faults), then `runs` timed runs of the same feeds;
the median is the figure reported (robust to a run disturbed by other load), with min and
max beside it. Defaults: 2 warm-up runs, 5 timed runs. When two models are compared, their
timed runs alternate (A, B, A, B, ...), so a change of machine load during the measurement
affects both alike.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

DEFAULT_WARMUP = 2
DEFAULT_RUNS = 5


@dataclass
class Latency:
    """Wall time of `runs` onnxruntime runs of one model on one batch, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    runs: int
    warmup: int
    batch: int
    threads: int  # onnxruntime intra-op threads; 0 = its default (one per physical core)
    runs_ms: list[float] = field(default_factory=list)


@dataclass
class LatencyComparison:
    """Latency of the original and of the pruned model on the same batch.

    ratio is pruned / original (below 1 is faster), the same direction as MACs after/before.
    """

    original: Latency
    pruned: Latency
    ratio: float


def _session(model, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _batch(feeds: dict[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _summary(times: list[float], warmup: int, batch: int, threads: int) -> Latency:
    ms = [1000.0 * t for t in times]
    return Latency(round(statistics.median(ms), 3), round(min(ms), 3), round(max(ms), 3),
                   len(ms), warmup, batch, threads, [round(t, 3) for t in ms])


def _check_counts(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")


def _timed(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - started


def measure_latency(
    model: onnx.ModelProto | bytes | str | os.PathLike,
    feeds: dict[str, np.ndarray],
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = 0,
) -> Latency:
    """Latency of `model` (a ModelProto, its bytes or a path) on `feeds`: `warmup` untimed
    runs, then the median of `runs` timed ones."""
    _check_counts(runs, warmup)
    session = _session(model, threads)
    for _ in range(warmup):
        session.run(None, feeds)
    return _summary([_timed(session, feeds) for _ in range(runs)], warmup, _batch(feeds), threads)


def compare_latency(
    original: onnx.ModelProto | bytes | str | os.PathLike,
    pruned: onnx.ModelProto | bytes | str | os.PathLike,
    feeds: dict[str, np.ndarray],
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = 0,
) -> LatencyComparison:
    """Both models' latency on `feeds`, timed runs alternating between the two.

    Both sessions are open at once (memory for two models), which is the price of
    alternating; each model gets `warmup` untimed runs first.
    """
    _check_counts(runs, warmup)
    sessions = [_session(original, threads), _session(pruned, threads)]
    for session in sessions:
        for _ in range(warmup):
            session.run(None, feeds)
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for i, session in enumerate(sessions):
            times[i].append(_timed(session, feeds))
    batch = _batch(feeds)
    before, after = (_summary(t, warmup, batch, threads) for t in times)
    return LatencyComparison(before, after, round(after.median_ms / before.median_ms, 4))
