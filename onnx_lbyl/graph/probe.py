"""Statistics of the chains' pre-activations, measured by running the unpruned model on
inputs: calibration data a user gives, or synthetic images (onnx_lbyl.synthetic) when a model
has no BatchNormalization statistics (e.g. BN folded at export). The probe reads each chain's
Relu input, which is the folded pre-activation z of MATH.md §1 whether or not a
BatchNormalization node is present.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import InputError, first_line
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
    """Running sums for a mean and covariance over columns, in float64. The sums are of the
    values minus a per-channel shift (the first batch's mean), so that the raw second moments
    do not cancel catastrophically when a channel's mean is large against its spread."""

    def __init__(self) -> None:
        self.count, self.total, self.outer, self.shift = 0, None, None, None

    def add(self, rows: np.ndarray, scratch: bool = False) -> None:  # rows: (channels, samples)
        """Add the columns of `rows`; `scratch` says they are a float64 copy the sums may
        overwrite (channel_rows), which saves a copy of every probed tensor."""
        if self.total is None:
            self.shift = rows.mean(axis=1)
            self.total, self.outer = np.zeros(rows.shape[0]), np.zeros((rows.shape[0],) * 2)
        if scratch:
            shifted = rows
            shifted -= self.shift[:, None]
        else:
            shifted = rows - self.shift[:, None]
        self.count += rows.shape[1]
        self.total += shifted.sum(axis=1)
        self.outer += shifted @ shifted.T

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / self.count  # of the shifted values
        cov = (self.outer - self.count * np.outer(mean, mean)) / max(self.count - 1, 1)
        return mean + self.shift, 0.5 * (cov + cov.T)


class _DiagonalWhenShortAccumulator(_Accumulator):
    """_Accumulator whose covariance keeps only its diagonal when it has fewer samples than
    channels. Why: a tensor read after global pooling gives one sample per image, so a
    1280-channel covariance from a few dozen probe images (or a few hundred calibration images)
    has rank below its size; its zero conditional variances would say that any channel can be
    removed for free (EfficientNet-Lite0's 1280-channel head read after pooling: 128 samples).

    With at least as many samples as channels the covariance is left as measured. Shrinking it
    there by the Schaefer-Strimmer intensity (the estimated variances of the off-diagonal entries
    over their squares) was tried: computed correctly (commit 25e2c30) it is about 1e-3 on a
    convolution's outputs, enough to blur an exact dependence between channels that the
    compensation should recover exactly (tests/test_groups.py); on the development models it
    moved top-1 by no more than noise (bench/results/sensitivity_allocation.md), and its
    fourth-moment sums cost as much per batch as the covariance product on wide tensors."""

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        mean, cov = super().moments()
        if 2 <= self.count < cov.shape[0]:
            return mean, np.diag(np.diag(cov))
        return mean, cov


def probe_statistics(
    model: onnx.ModelProto,
    chains: list[Chain],
    feeds: dict[str, np.ndarray],
    batch: int = 64,
    scratch: Scratch | None = None,
    batch_statistics: bool = False,
) -> dict[str, ProbedStatistics]:
    """Per chain (keyed by chain.name): the statistics of its Relu input and output, measured
    on `feeds` with the unpruned `model`, `batch` rows per onnxruntime call (all inputs must
    share the first axis; a model whose batch axis is fixed gets batches of that size, and a
    final shorter remainder is not used). `batch_statistics`: every BN normalises each call's
    batch by its own statistics (batch_statistics_bn), for synthetic input.

    A large model (graph.external) needs `scratch`: it is run from a copy written there with
    external data, since protobuf cannot serialise it."""
    names = [chain.activation.inputs[0].name for chain in chains] + [chain.activation.outputs[0].name for chain in chains]
    session = _open(_probe_model(model, names, scratch, batch_statistics))
    pre = [_Accumulator() for _ in chains]
    post = [_Accumulator() for _ in chains]
    parts = _batches(session, feeds, batch)
    for part in parts:
        values = _finite(names, _run(session, names, part))
        for index, value in enumerate(values):
            (pre if index < len(chains) else post)[index % len(chains)].add(channel_rows(value), scratch=True)
    if not parts:
        rows = min(int(np.shape(v)[0]) for v in feeds.values())
        raise InputError(f"no complete batch of the model's fixed size in the probe data ({rows} rows)")
    del session, parts
    release_freed_memory()
    result = {}
    for chain, zs, acts in zip(chains, pre, post):
        mean, cov = zs.moments()
        a_mean, a_cov = acts.moments()
        result[chain.name] = ProbedStatistics(GaussianMoments(mean, cov), a_mean, a_cov)
    return result


def release_freed_memory() -> None:
    """Hand the heap pages a probe freed back to the operating system (glibc's malloc_trim).
    onnxruntime's buffers and the probed tensors are freed when a probe ends, but glibc keeps
    their pages, so the next stage's peak would start from this one's (on ResNet-50 the chain
    probe left 1059 MB resident, 665 MB above where it started). A no-op without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


SCORING_BATCH = 8  # rows per call when scoring candidates: an inference model scores each row alone, and
# onnxruntime holds a whole batch's activations (at 64 rows of 224x224, 1.2 GB on ResNet-50)


def classifier_scores(model: onnx.ModelProto, feeds: dict[str, np.ndarray], batch: int = SCORING_BATCH,
                      scratch: Scratch | None = None) -> np.ndarray | None:
    """The model's first output on `feeds`, `batch` rows per call (a fixed batch axis sets its
    own), if it looks like class scores: (rows, K) with K >= 2 (trailing axes of size 1 are
    allowed). None otherwise (detectors, segmenters, feature extractors)."""
    session = _open(_probe_model(model, [], scratch))
    name = session.get_outputs()[0].name
    parts = [_run(session, [name], part)[0] for part in _batches(session, feeds, batch)]
    del session
    release_freed_memory()
    if not parts:
        return None
    scores = np.concatenate(parts)
    if scores.ndim < 2 or scores.shape[1] < 2 or any(d != 1 for d in scores.shape[2:]):
        return None
    return scores.reshape(scores.shape[0], -1)


def _open(data: bytes | str) -> ort.InferenceSession:
    """An onnxruntime session of the (unpruned) model the probe runs: a model onnxruntime cannot
    load (an operator or type it has no kernel for, say) is the input's problem, exit 2.
    Without onnxruntime's memory arena: a probe asks for most tensors as outputs, and the
    arena keeps its largest run's buffers until the session closes. Errors only in its log: a
    BN rewritten to batch statistics leaves its running statistics unused, which it warns of."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"onnxruntime cannot load the model: {first_line(exc)}")


def _run(session: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(names, feeds)
    except Exception as exc:
        raise InputError(f"the model does not run in onnxruntime on the probe's input: {first_line(exc)}")


def _finite(names: list[str], values: list[np.ndarray]) -> list[np.ndarray]:
    """The probed tensors, or InputError: NaN or an overflow in the unpruned model's own
    activations on ordinary input says its weights are unusable, not the statistics."""
    for name, value in zip(names, values):
        if not np.isfinite(value).all():
            raise InputError(f"tensor {name!r} of the model is not finite (NaN or overflow) on the probe's input: "
                             "the weights before it are unusable")
    return values


def _batches(session: ort.InferenceSession, feeds: dict[str, np.ndarray], batch: int) -> list[dict[str, np.ndarray]]:
    """`feeds` cut into runs of `batch` rows (all inputs share the first axis); a model whose
    batch axis is fixed gets runs of that size, and a final shorter remainder is dropped."""
    rows = min(int(np.shape(v)[0]) for v in feeds.values())
    fixed = [i.shape[0] for i in session.get_inputs() if isinstance(i.shape[0], int) and i.shape[0] > 0]
    step = fixed[0] if fixed else max(1, batch)
    starts = range(0, rows - step + 1, step) if fixed else range(0, rows, step)
    return [{k: v[start:start + step] for k, v in feeds.items()} for start in starts]


def _probe_model(model: onnx.ModelProto, names: list[str], scratch: Scratch | None,
                 batch_statistics: bool = False) -> bytes | str:
    """`model` with `names` as extra outputs, serialised, or for a large model the path of a
    model file beside the scratch copy of its weights (so they are written only once).
    `batch_statistics` makes every BatchNormalization normalise with the batch's own statistics
    (batch_statistics_bn)."""
    if not (scratch is not None and is_large(model)):
        with _as_probe(model, names, batch_statistics):  # no copy of the weights: restored after
            return model.SerializeToString()
    path = scratch.original(model)
    probe = onnx.load(str(path), load_external_data=False)  # the graph alone
    with _as_probe(probe, names, batch_statistics):
        probe_path = path.with_name("probe.onnx")
        onnx.save_model(probe, str(probe_path))
    return str(probe_path)


@contextmanager
def _as_probe(model: onnx.ModelProto, names: list[str], batch_statistics: bool):
    """`model` changed in place into the probe's model (extra outputs `names`, BN by batch
    statistics) while the block runs, then restored: a copy to change would double the weights
    in memory for the moment of serialising (1.1 GB on VGG-16-BN)."""
    graph = model.graph
    outputs, initializers = len(graph.output), len(graph.initializer)
    nodes = onnx.GraphProto()
    if batch_statistics:
        nodes.node.extend(graph.node)  # copies of the nodes: small against the weights
    try:
        if batch_statistics:
            batch_statistics_bn(model)
        existing = {o.name for o in graph.output}
        for name in dict.fromkeys(names):
            if name not in existing:
                graph.output.append(onnx.ValueInfoProto(name=name))
        yield model
    finally:
        del graph.output[outputs:]
        del graph.initializer[initializers:]
        if batch_statistics:
            del graph.node[:]
            graph.node.extend(nodes.node)


def batch_statistics_bn(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every inference BatchNormalization as normalisation by the batch's own
    per-channel mean and variance, then gamma and beta: z = gamma (u - mean_b) / sqrt(var_b + eps)
    + beta. Why: synthetic images do not have the statistics of the data a model was trained on,
    and errors compound layer by layer; with this, every BN output of the probe has exactly the
    mean (beta) and variance (gamma^2) per channel that the model's BN says the real data have,
    whatever the images, and only the correlations come from the images. Returns how many."""
    from .shapes import inferred_value_info  # ranks of the BN inputs, without the weights

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 11)
    try:
        inferred = inferred_value_info(model)
        infos = list(inferred.value_info) + list(inferred.input)
        ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in infos if i.type.tensor_type.HasField("shape")}
        types = {i.name: i.type.tensor_type.elem_type for i in infos}
    except Exception:  # without shapes, no BN is rewritten: the probe stays as it was
        return 0
    nodes, count = [], 0
    for node in model.graph.node:
        rank = ranks.get(node.input[0]) if node.input else None
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or not rank or rank < 2:
            nodes.append(node)
            continue
        axes = [0, *range(2, rank)]
        count += 1
        x, gamma, beta = node.input[0], node.input[1], node.input[2]
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        tag = f"__lbyl_bn{count}_"
        axes_name = tag + "axes"
        shape_name = tag + "shape"
        made = []

        def reduce_mean(src: str, dst: str) -> None:
            if opset >= 18:
                made.append(onnx.helper.make_node("ReduceMean", [src, axes_name], [dst], keepdims=1))
            else:
                made.append(onnx.helper.make_node("ReduceMean", [src], [dst], axes=axes, keepdims=1))

        constants = [onnx.numpy_helper.from_array(np.asarray([1, -1] + [1] * (rank - 2), dtype=np.int64), shape_name),
                     onnx.numpy_helper.from_array(np.asarray(eps, dtype=_numpy_type(types.get(x))), tag + "eps")]
        if opset >= 18:
            constants.append(onnx.numpy_helper.from_array(np.asarray(axes, dtype=np.int64), axes_name))
        model.graph.initializer.extend(constants)
        reduce_mean(x, tag + "mean")
        made.append(onnx.helper.make_node("Sub", [x, tag + "mean"], [tag + "centred"]))
        made.append(onnx.helper.make_node("Mul", [tag + "centred", tag + "centred"], [tag + "square"]))
        reduce_mean(tag + "square", tag + "var")
        made.append(onnx.helper.make_node("Add", [tag + "var", tag + "eps"], [tag + "var_eps"]))
        made.append(onnx.helper.make_node("Sqrt", [tag + "var_eps"], [tag + "std"]))
        made.append(onnx.helper.make_node("Div", [tag + "centred", tag + "std"], [tag + "unit"]))
        made.append(onnx.helper.make_node("Reshape", [gamma, shape_name], [tag + "gamma"]))
        made.append(onnx.helper.make_node("Reshape", [beta, shape_name], [tag + "beta"]))
        made.append(onnx.helper.make_node("Mul", [tag + "unit", tag + "gamma"], [tag + "scaled"]))
        made.append(onnx.helper.make_node("Add", [tag + "scaled", tag + "beta"], [node.output[0]]))
        nodes.extend(made)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def _numpy_type(elem_type: int | None):
    """The numpy type of an ONNX element type (float32 when unknown): the constants added
    beside a BN must have its input's type (an fp16 model's Add takes no float32 epsilon)."""
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else np.float32
    except (KeyError, TypeError, ValueError):
        return np.float32


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
    batch_statistics: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(mean, covariance) over batch and positions of every requested tensor's channels,
    measured with the unpruned `model` on `feeds`, `batch` rows per onnxruntime call (with
    `batch_statistics`, BN normalises each call's batch by its own statistics)."""
    unique = list({r.name: r for r in requests}.values())
    names = [r.name for r in unique]
    session = _open(_probe_model(model, names, scratch, batch_statistics))
    sums = [_DiagonalWhenShortAccumulator() for _ in unique]
    parts = _batches(session, feeds, batch)
    if not parts:
        rows = min(int(np.shape(v)[0]) for v in feeds.values())
        raise InputError(f"no complete batch of the model's fixed size in the probe data ({rows} rows)")
    for part in parts:
        for request, value, acc in zip(unique, _finite(names, _run(session, names, part)), sums):
            if request.outer != 1 or request.inner != 1:
                value = value.reshape(value.shape[0], request.outer, request.total, request.inner)
                acc.add(channel_rows(value, axis=2), scratch=True)
            else:
                acc.add(channel_rows(value, axis=request.axis), scratch=True)
    del session, parts
    release_freed_memory()
    return {request.name: acc.moments() for request, acc in zip(unique, sums)}


def channel_rows(value: np.ndarray, axis: int = 1) -> np.ndarray:
    """A probed tensor as float64 rows (channels along `axis`, samples: every other axis), made
    in one copy: converting first and moving the axis after took two, the largest part of the
    probe's own time on ImageNet-sized tensors."""
    moved = np.moveaxis(value, axis, 0)
    return np.array(moved, dtype=np.float64, order="C").reshape(moved.shape[0], -1)
