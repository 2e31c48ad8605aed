"""Measured sensitivity for a MACs budget (`--allocation sensitivity`).

The error allocation (planning.allocate) prices every removal by the expected error it adds at
the unit's own consumers, relative to their output energy. That makes units comparable only if a
unit of relative error at one layer costs the network's output as much as at any other, which a
deep net does not honour: a late stream channel and an early expand channel differ by orders of
magnitude in what they do to the logits. Here each unit is pruned alone, at half its channels,
and the model's outputs on the statistics batch (calibration data, else the probe's synthetic
images) are compared with the unpruned model's. The ratio of that measured output drift to the
error the unit's curve predicts at the same count rescales the unit's whole curve, so the shape
comes from the statistics and the scale from the network. The exponent could damp the
correction (the measured drift is a noisy, non-additive estimate); on the development models
the full correction (1) did better than 0.5 and than none (bench/results/sensitivity_allocation.md,
chosen there before the held-out models ran; bench/results/held_out.md).

This module only measures and rescales; which unit is pruned how is the pipeline's
(`prune_alone`), so it imports neither the graph code nor the solver.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from .validate import session

SENSITIVITY_KEPT = 0.5  # each unit pruned alone to this share of its channels
# Rows of the statistics batch the outputs are compared on: 256 beat 32 on 7 of the 11 development
# cells (bench/results/sensitivity_allocation.md); fewer when one input would exceed
# SENSITIVITY_MAX_VALUES numbers, so large inputs are not slowed down by it.
SENSITIVITY_ROWS = 256
SENSITIVITY_MAX_VALUES = 1 << 23
SENSITIVITY_EXPONENT = 1.0  # curve scale = (measured / predicted) ** this; 1 beat 0.5 on the development models


def sensitivity_feeds(feeds: Mapping[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
    """The first rows of the statistics batch: SENSITIVITY_ROWS, fewer for large inputs (at
    least one); exactly one batch when the model fixes its batch size to `batch`."""
    widest = max((int(np.prod(v.shape[1:])) for v in feeds.values() if v.ndim), default=1)
    rows = max(1, min(SENSITIVITY_ROWS, SENSITIVITY_MAX_VALUES // max(widest, 1))) if batch is None else batch
    return {name: np.ascontiguousarray(value[:rows]) if value.ndim else value for name, value in feeds.items()}


def output_drift(before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> float:
    """Mean over the float outputs of ||after - before||^2 / ||before||^2 (0 with no float output)."""
    drifts = []
    for a, b in zip(before, after):
        a, b = np.asarray(a), np.asarray(b)
        if not np.issubdtype(a.dtype, np.floating) or a.shape != b.shape:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        drifts.append(float(np.sum((b64 - a64) ** 2)) / max(float(np.sum(a64 ** 2)), 1e-30))
    return float(np.mean(drifts)) if drifts else 0.0


def predicted_error(curve: tuple[Sequence[int], Sequence[float]], removed: int) -> float:
    """The curve's error once at least `removed` channels are gone (whole steps)."""
    sizes, errors = curve
    total, gone = 0.0, 0
    for size, error in zip(sizes, errors):
        if gone >= removed:
            break
        total += float(error)
        gone += int(size)
    return total


def measure_sensitivity(
    model: onnx.ModelProto,
    removed: Mapping[str, int],
    prune_alone: Callable[[str, int], onnx.ModelProto],
    feeds: Mapping[str, np.ndarray],
    fixed_batch: int | None = None,
) -> dict[str, float]:
    """Output drift of `model` with each unit of `removed` (name -> channels removed) pruned
    alone by `prune_alone(name, channels removed)`, on the first rows of `feeds` (one whole
    batch when the model fixes its batch size at `fixed_batch`)."""
    batch = sensitivity_feeds(feeds, fixed_batch)
    before = session(model).run(None, batch)
    measured = {}
    for name, count in removed.items():
        pruned = prune_alone(name, count)
        measured[name] = output_drift(before, session(pruned).run(None, batch))
        del pruned
    return measured


def scaled_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    measured: Mapping[str, float],
    removed: Mapping[str, int],
    exponent: float = SENSITIVITY_EXPONENT,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every measured unit's curve times (measured drift / predicted error) ** exponent; the
    others as they are. A unit whose curve predicts no error keeps its curve (nothing to scale)."""
    out = {}
    for name, (sizes, errors) in curves.items():
        predicted = predicted_error((sizes, errors), removed.get(name, 0))
        if name in measured and predicted > 0:
            factor = (max(measured[name], 1e-12) / predicted) ** exponent
            out[name] = (sizes, np.asarray(errors, dtype=np.float64) * factor)
        else:
            out[name] = (sizes, errors)
    return out
