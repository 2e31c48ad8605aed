"""Statistics of the chains' pre-activations, measured by running the unpruned model on
inputs: calibration data a user gives, or synthetic images (onnx_lbyl.synthetic) when a model
has no BatchNormalization statistics (e.g. BN folded at export). The probe reads each chain's
Relu input, which is the folded pre-activation z of MATH.md §1 whether or not a
BatchNormalization node is present.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from ..numerics.statistics import GaussianMoments
from .chains import Chain
from .external import Scratch, is_large


@dataclass(frozen=True)
class ProbedStatistics:
    """What one probe run measured for one chain, over batch and positions.

    pre: mean and covariance of the Relu input z (the folded pre-activation).
    activation_mean, activation_cov: the same for a = Relu(z), measured directly; least squares
        on the sampled activations (with an intercept) is the `moments` solution with these.
    """

    pre: GaussianMoments
    activation_mean: np.ndarray
    activation_cov: np.ndarray


class _Accumulator:
    """Running sums for a mean and covariance over columns, in float64."""

    def __init__(self) -> None:
        self.count, self.total, self.outer = 0, None, None

    def add(self, rows: np.ndarray) -> None:  # rows: (channels, samples)
        if self.total is None:
            self.total, self.outer = np.zeros(rows.shape[0]), np.zeros((rows.shape[0],) * 2)
        self.count += rows.shape[1]
        self.total += rows.sum(axis=1)
        self.outer += rows @ rows.T

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / self.count
        cov = (self.outer - self.count * np.outer(mean, mean)) / max(self.count - 1, 1)
        return mean, 0.5 * (cov + cov.T)


def probe_statistics(
    model: onnx.ModelProto,
    chains: list[Chain],
    feeds: dict[str, np.ndarray],
    batch: int = 64,
    scratch: Scratch | None = None,
) -> dict[str, ProbedStatistics]:
    """Per chain (keyed by chain.name): the statistics of its Relu input and output, measured
    on `feeds` with the unpruned `model`, `batch` rows per onnxruntime call (all inputs must
    share the first axis; a model whose batch axis is fixed gets batches of that size, and a
    final shorter remainder is not used).

    A large model (graph.external) needs `scratch`: it is run from a copy written there with
    external data, since protobuf cannot serialise it."""
    names = [chain.activation.inputs[0].name for chain in chains] + [chain.activation.outputs[0].name for chain in chains]
    session = ort.InferenceSession(_probe_model(model, names, scratch), providers=["CPUExecutionProvider"])
    pre = [_Accumulator() for _ in chains]
    post = [_Accumulator() for _ in chains]
    parts = _batches(session, feeds, batch)
    for part in parts:
        values = session.run(names, part)
        for index, value in enumerate(values):
            flat = np.moveaxis(np.asarray(value, dtype=np.float64), 1, 0).reshape(value.shape[1], -1)
            (pre if index < len(chains) else post)[index % len(chains)].add(flat)
    if not parts:
        rows = min(int(np.shape(v)[0]) for v in feeds.values())
        raise ValueError(f"no complete batch of the model's fixed size in the probe data ({rows} rows)")
    result = {}
    for chain, zs, acts in zip(chains, pre, post):
        mean, cov = zs.moments()
        a_mean, a_cov = acts.moments()
        result[chain.name] = ProbedStatistics(GaussianMoments(mean, cov), a_mean, a_cov)
    return result


def classifier_scores(model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch: int = 64,
                      scratch: Scratch | None = None) -> np.ndarray | None:
    """The model's first output on `feeds`, `batch` rows per call (a fixed batch axis sets its
    own), if it looks like class scores: (rows, K) with K >= 2 (trailing axes of size 1 are
    allowed). None otherwise (detectors, segmenters, feature extractors)."""
    session = ort.InferenceSession(_probe_model(model, [], scratch), providers=["CPUExecutionProvider"])
    name = session.get_outputs()[0].name
    parts = [session.run([name], part)[0] for part in _batches(session, feeds, batch)]
    if not parts:
        return None
    scores = np.concatenate(parts)
    if scores.ndim < 2 or scores.shape[1] < 2 or any(d != 1 for d in scores.shape[2:]):
        return None
    return scores.reshape(scores.shape[0], -1)


def _batches(session: ort.InferenceSession, feeds: dict[str, np.ndarray], batch: int) -> list[dict[str, np.ndarray]]:
    """`feeds` cut into runs of `batch` rows (all inputs share the first axis); a model whose
    batch axis is fixed gets runs of that size, and a final shorter remainder is dropped."""
    rows = min(int(np.shape(v)[0]) for v in feeds.values())
    fixed = [i.shape[0] for i in session.get_inputs() if isinstance(i.shape[0], int) and i.shape[0] > 0]
    step = fixed[0] if fixed else max(1, batch)
    starts = range(0, rows - step + 1, step) if fixed else range(0, rows, step)
    return [{k: v[start:start + step] for k, v in feeds.items()} for start in starts]


def _probe_model(model: onnx.ModelProto, names: list[str], scratch: Scratch | None) -> bytes | str:
    """`model` with `names` as extra outputs, serialised, or for a large model the path of a
    model file beside the scratch copy of its weights (so they are written only once)."""
    large = scratch is not None and is_large(model)
    if large:
        path = scratch.original(model)
        probe = onnx.load(str(path), load_external_data=False)  # the graph alone
    else:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in dict.fromkeys(names):
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    if not large:
        return probe.SerializeToString()
    probe_path = path.with_name("probe.onnx")
    onnx.save_model(probe, str(probe_path))
    return str(probe_path)


@dataclass(frozen=True)
class TensorRequest:
    """Which channel statistics to measure on a tensor: its channels lie along `axis`, or, for
    a flattened tensor (2-D), as features (outer, total, inner) of axis 1."""

    name: str
    axis: int = 1
    outer: int = 1
    inner: int = 1
    total: int = 0


def probe_tensors(
    model: onnx.ModelProto,
    requests: list[TensorRequest],
    feeds: dict[str, np.ndarray],
    batch: int = 8,
    scratch: Scratch | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(mean, covariance) over batch and positions of every requested tensor's channels,
    measured with the unpruned `model` on `feeds`, `batch` rows per onnxruntime call."""
    unique = list({r.name: r for r in requests}.values())
    names = [r.name for r in unique]
    session = ort.InferenceSession(_probe_model(model, names, scratch), providers=["CPUExecutionProvider"])
    sums = [_Accumulator() for _ in unique]
    parts = _batches(session, feeds, batch)
    if not parts:
        rows = min(int(np.shape(v)[0]) for v in feeds.values())
        raise ValueError(f"no complete batch of the model's fixed size in the probe data ({rows} rows)")
    for part in parts:
        for request, value, acc in zip(unique, session.run(names, part), sums):
            value = np.asarray(value, dtype=np.float64)
            if request.outer != 1 or request.inner != 1:
                value = value.reshape(value.shape[0], request.outer, request.total, request.inner)
                rows = np.moveaxis(value, 2, 0).reshape(request.total, -1)
            else:
                rows = np.moveaxis(value, request.axis, 0).reshape(value.shape[request.axis], -1)
            acc.add(rows)
    return {request.name: acc.moments() for request, acc in zip(unique, sums)}
