"""Data-free statistics of the chains' pre-activations, by running the unpruned model once on
synthetic input (used when a model has no BatchNormalization statistics, e.g. BN folded at
export).

The synthetic input (`synthetic_images`) assumes the model's input is a normalised image
(every channel zero mean, unit variance) and gives it the two best-known statistics of
natural images: a power-law amplitude spectrum (energy concentrated at low spatial
frequencies) and strongly correlated colour channels (a shared luminance). No real data and
no labels are involved. The exponent was chosen, without labels or images, as the one whose
probed pre-activation statistics best matched the BatchNormalization statistics stored in the
`_bn` exports of the CIFAR ResNets (median |mean error| 0.23 gamma and |std ratio - 1| 0.15 on
ResNet-32 for exponent 1.5, against 0.36 / 0.25 for 1 and 0.19 / 0.30 for 2; white noise is
worse still). The probe reads each chain's Relu input, which is the folded
pre-activation z of MATH.md §1 whether or not a BatchNormalization node is present.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from ..numerics.statistics import GaussianMoments
from .chains import Chain
from .external import Scratch, is_large


SPECTRUM_EXPONENT = 1.5
LUMINANCE_WEIGHT = 0.9  # shared component of the colour channels (before normalising)
CHANNEL_WEIGHT = 0.45  # independent component per channel


def synthetic_images(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random (N, C, H, W) 'images': Gaussian fields with amplitude spectrum 1/f^SPECTRUM_EXPONENT,
    channels sharing a luminance field, each channel standardised to zero mean, unit variance."""
    n, c, h, w = shape
    x = CHANNEL_WEIGHT * rng.standard_normal(shape) + LUMINANCE_WEIGHT * rng.standard_normal((n, 1, h, w))
    fy, fx = np.fft.fftfreq(h), np.fft.fftfreq(w)
    radius = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    radius[0, 0] = 1.0 / max(h, w)  # the lowest nonzero frequency: keeps the mean finite
    x = np.real(np.fft.ifft2(np.fft.fft2(x) / radius**SPECTRUM_EXPONENT))
    x = x - x.mean(axis=(0, 2, 3), keepdims=True)
    return x / x.std(axis=(0, 2, 3), keepdims=True)


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


# Published per-channel pixel statistics of natural images on a [0, 1] scale (the ImageNet
# mean and std every torchvision model uses), averaged over the colour channels: how bright and
# how contrasted synthetic pixels are when a model declares its preprocessing.
NATURAL_PIXEL_MEAN = 0.449
NATURAL_PIXEL_STD = 0.226


def synthetic_pixels(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """synthetic_images moved to the pixel domain: uint8 (N, C, H, W) with natural images'
    mean and contrast, for models whose preprocessing of raw pixels is known (their inputs
    are then what the model sees in use, e.g. raw 0..255 values for a model without
    normalisation, rather than an assumed zero mean and unit variance)."""
    pixels = NATURAL_PIXEL_MEAN + NATURAL_PIXEL_STD * synthetic_images(shape, rng)
    return np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)


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
    rows = min(int(np.shape(v)[0]) for v in feeds.values())
    fixed = [i.shape[0] for i in session.get_inputs() if isinstance(i.shape[0], int) and i.shape[0] > 0]
    step = fixed[0] if fixed else max(1, batch)
    stops = range(step, rows + 1, step) if fixed else range(step, rows + step, step)
    pre = [_Accumulator() for _ in chains]
    post = [_Accumulator() for _ in chains]
    for stop in stops:
        start = stop - step
        part = {k: v[start:min(stop, rows)] for k, v in feeds.items()}
        values = session.run(names, part)
        for index, value in enumerate(values):
            flat = np.moveaxis(np.asarray(value, dtype=np.float64), 1, 0).reshape(value.shape[1], -1)
            (pre if index < len(chains) else post)[index % len(chains)].add(flat)
    if pre and pre[0].count == 0:
        raise ValueError(f"no complete batch of {step} rows in the probe data ({rows} rows)")
    result = {}
    for chain, zs, acts in zip(chains, pre, post):
        mean, cov = zs.moments()
        a_mean, a_cov = acts.moments()
        result[chain.name] = ProbedStatistics(GaussianMoments(mean, cov), a_mean, a_cov)
    return result


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
