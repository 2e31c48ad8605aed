"""Where the statistics of a chain's activations come from: the BatchNormalization node's
statistics, a data-free probe (the unpruned model run on synthetic images), or calibration
data the user gives (real unlabeled inputs).

The statistical methods need E[a] and Cov(a) of a = ReLU(z) for every chain; this module
decides which source serves which chain and turns it into those moments. It knows the graph
only through graph.probe and the chain objects, and the mathematics only through
numerics.statistics.
"""
from __future__ import annotations

import numpy as np
import onnx

from .arrays import check_feeds, check_real, read_npz
from .errors import InputError, first_line
from .graph.chains import Chain
from .graph.external import Scratch, is_large
from .graph.layers import HANDLERS
from .graph.probe import ProbedStatistics, classifier_scores, probe_statistics
from .numerics.folding import ChannelLayer
from .numerics.statistics import GaussianMoments, moments_from_batchnorm, relu_covariance, relu_mean
from .options import CompressOptions
from .synthetic import recognised_rows, synthetic_images, synthetic_pool
from .graph.input_shapes import declared_dims, shaped_inputs
from .validate import model_inputs, random_inputs


PROBE_BATCH = 32  # synthetic images for the data-free probe (graph.probe)
PROBE_POOL = 256  # candidates the model chooses them from (synthetic.recognised_rows) ...
PROBE_POOL_VALUES = 1 << 22  # ... fewer for large images (at most this many numbers), but at least 2 per pick
# A Conv chain gets a sample per image and position, thousands from PROBE_BATCH images; a Gemm or
# MatMul chain gets one per image, so a 300-wide MLP layer would estimate its 300x300 covariance
# from 32 samples. Such chains get SAMPLES_PER_CHANNEL images per channel, as long as the probe
# input stays within PROBE_MAX_VALUES numbers (LeNet-300-100: 1,200 images of 28x28).
SAMPLES_PER_CHANNEL = 4
PROBE_MAX_VALUES = 1 << 21
PROBE_CALL_MAX_VALUES = 1 << 21  # input numbers per chain-probe call (probe_call_rows): 8 images of 224x224
# Channel groups are measured on more images: their reads include late layers of few positions
# and global pooling (one sample per image) for covariances of a thousand channels, which
# graph.probe reduces to their diagonal while they have fewer samples than channels. Chosen on
# the development models; bench/results/design_checks.md.
GROUP_PROBE_IMAGES = 128
GROUP_PROBE_MAX_VALUES = 1 << 25
# The validation batch (pipeline): between 8 and 64 samples, as many as fit in this many numbers
# per input (64 CIFAR images, 13 ImageNet ones), so a classifier's top-1 agreement is measured on
# more than a handful of samples while large inputs stay cheap to run twice.
VALIDATION_ROWS = (8, 64)
VALIDATION_MAX_VALUES = 1 << 21


def probe_chains(model: onnx.ModelProto, chains: list[Chain], options: CompressOptions,
           scratch: Scratch | None = None) -> dict[str, ProbedStatistics]:
    """Statistics measured on the calibration data for every chain when there is some, else on
    synthetic input for the chains that need them (graph.probe)."""
    if not options.method_spec.needs_statistics or not chains:
        return {}
    if options.calibration is not None:
        return probe_statistics(model, chains, calibration_feeds(model, options.calibration), scratch=scratch)
    # a model over 2 GB takes its BN statistics where it has them (as "auto"): probing it would
    # mean onnxruntime holding a second copy of its weights while it runs on synthetic images
    statistics = "auto" if options.statistics == "probe" and is_large(model) else options.statistics
    wanted = [c for c in chains if statistics == "probe" or (statistics == "auto" and c.batchnorm is None)]
    if not wanted:
        return {}
    dense = [SAMPLES_PER_CHANNEL * HANDLERS[c.producer.op].out_channels(c.producer)
             for c in wanted if c.producer.op in ("Gemm", "MatMul")]
    feeds = synthetic_feeds(model, options.seed, scratch, rows=max(dense, default=PROBE_BATCH),
                            shapes=options.input_shapes)
    # every BN normalises by the synthetic batch's own statistics, as for groups: each BN output
    # then has the mean and variance the model records for real data, and only the correlations
    # come from the images (bench/results/chain_statistics.md; no BN, nothing changes)
    return probe_statistics(model, wanted, feeds, batch=probe_call_rows(feeds), scratch=scratch, batch_statistics=True)


def probe_call_rows(feeds: dict[str, np.ndarray]) -> int:
    """Rows per onnxruntime call of the chain probe: PROBE_BATCH, halved while a call's input
    would exceed PROBE_CALL_MAX_VALUES numbers. Every probed tensor of a call is held at once
    (on ResNet-50, 32 images of 224x224 return 700 MB of them); small inputs keep the whole
    batch, and with it the batch the BNs normalise by."""
    values = max((int(np.prod(np.shape(v)[1:])) for v in feeds.values()), default=1)
    rows = PROBE_BATCH
    while rows > 1 and rows * values > PROBE_CALL_MAX_VALUES:
        rows //= 2
    return rows


def synthetic_feeds(model: onnx.ModelProto, seed: int, scratch: Scratch | None = None,
                    rows: int = PROBE_BATCH, shapes=(), max_values: int | None = None) -> dict[str, np.ndarray]:
    """Data-free probe input (onnx_lbyl.synthetic). A model with a single 4-D float input gets
    `rows` images (at least PROBE_BATCH, fewer if they would exceed PROBE_MAX_VALUES numbers)
    picked by the model itself from max(PROBE_POOL, 2 x rows) synthetic candidates (the ones
    it classifies most confidently, class by class; a random share when its output is not class
    scores). The images go through the model's declared preprocessing when its metadata has
    one, else are standardised to zero mean and unit variance per channel. Large images get a
    smaller pool (PROBE_POOL_VALUES), so a 224x224 model judges 64 candidates. Other models get
    Gaussian-field images for their 4-D float inputs and seeded random values for the rest.
    Inputs are made at the declared shapes, with `shapes` (CompressOptions.input_shapes) filling
    their dynamic dimensions past the batch (validate.random_inputs)."""
    feeds = random_inputs(model, PROBE_BATCH, seed=seed, shapes=shapes)
    rng = np.random.default_rng(seed)
    images = [name for name, value in feeds.items() if value.ndim == 4 and np.issubdtype(value.dtype, np.floating)]
    if len(feeds) != 1 or not images:
        for name in images:
            feeds[name] = synthetic_images(feeds[name].shape, rng).astype(feeds[name].dtype)
        return feeds
    name, (batch, *rest) = images[0], feeds[images[0]].shape
    dtype = feeds[name].dtype
    values = int(np.prod(rest))
    wanted = max(PROBE_BATCH, min(rows, (PROBE_MAX_VALUES if max_values is None else max_values) // values))
    step = 1 if batch == PROBE_BATCH else batch  # a fixed batch axis: whole batches only
    count = -(-wanted // step) * step
    candidates = max(2 * count, min(PROBE_POOL, PROBE_POOL_VALUES // values))
    pool = _to_model_input(model, synthetic_pool((-(-candidates // step) * step, *rest), rng), dtype)
    scores = classifier_scores(model, {name: pool}, scratch=scratch)
    picked = rng.permutation(pool.shape[0])[:count] if scores is None else recognised_rows(scores, count)
    return {name: np.ascontiguousarray(pool[np.sort(picked)])}


def fixed_batch(model: onnx.ModelProto, shapes=()) -> int | None:
    """The batch size the model's inputs fix, None when the batch axis is dynamic."""
    return next((dims[0] for dims in map(declared_dims, shaped_inputs(model, shapes)) if dims and dims[0] is not None),
                None)


def validation_feeds(model: onnx.ModelProto, seed: int, calibration=None, rows: int | None = None,
                     shapes=()) -> tuple[dict[str, np.ndarray], str]:
    """The validation batch when the user gives no --inputs, and what it is ("calibration",
    "synthetic image" or "random"): the first rows of the calibration data when there is some;
    else natural-looking synthetic images (synthetic.synthetic_pool, cheap: no model run) through
    the model's declared preprocessing for its 4-D float input, seeded random values for any
    other input. `rows` samples when the batch axis is dynamic (None: VALIDATION_ROWS bounds,
    VALIDATION_MAX_VALUES); a fixed batch axis keeps its size."""
    infos = shaped_inputs(model, shapes)
    batch = fixed_batch(model, shapes)
    per_row = max((int(np.prod([d or 1 for d in (declared_dims(i) or [1])[1:]])) for i in infos), default=1)
    low, high = VALIDATION_ROWS
    wanted = rows if rows is not None else max(low, min(high, VALIDATION_MAX_VALUES // max(per_row, 1)))
    if calibration is not None:
        feeds = calibration_feeds(model, calibration)
        count = min(len(v) for v in feeds.values())
        take = min(count, wanted) if batch is None else batch
        if count >= take:
            return {name: np.ascontiguousarray(value[:take]) for name, value in feeds.items()}, "calibration"
    feeds = random_inputs(model, wanted, seed=seed, shapes=shapes)
    rng = np.random.default_rng(seed)
    images = [name for name, value in feeds.items() if value.ndim == 4 and np.issubdtype(value.dtype, np.floating)]
    for name in images:
        pixels = synthetic_pool(feeds[name].shape, rng)
        feeds[name] = (_to_model_input(model, pixels, feeds[name].dtype) if len(feeds) == 1
                       else synthetic_images(feeds[name].shape, rng).astype(feeds[name].dtype))
    return feeds, "synthetic image" if images else "random"


def _to_model_input(model: onnx.ModelProto, pixels: np.ndarray, dtype) -> np.ndarray:
    """[0, 1] synthetic pixels as the model takes them: as uint8 images through the metadata's
    preprocessing, or standardised per channel when the model declares none. `pixels` is
    used up (overwritten in place): a pool of 256 ImageNet-sized candidates is 300 MB a copy."""
    from .evaluate import metadata_preprocess, resolve_preprocess  # deferred: only the probe needs them

    if metadata_preprocess(model):
        np.multiply(pixels, 255, out=pixels)
        images = np.round(pixels, out=pixels).astype(np.uint8)
        return resolve_preprocess(model, integer_images=True).apply(images, dtype)
    pixels -= pixels.mean(axis=(0, 2, 3), keepdims=True)
    spread = pixels.std(axis=(0, 2, 3), keepdims=True)
    pixels /= np.where(spread > 0, spread, 1.0)
    return pixels.astype(dtype)


def calibration_feeds(model: onnx.ModelProto, calibration) -> dict[str, np.ndarray]:
    """The model's inputs from calibration data (CompressOptions.calibration): arrays named like
    the model's inputs are used as they are; otherwise a single-input model takes the `images`
    array (or the only array) through the model's preprocessing (evaluate.resolve_preprocess:
    uint8 pixels are scaled as the metadata says, floats are taken as already in [0, 1])."""
    from .evaluate import resolve_preprocess  # deferred: only calibration needs it

    if isinstance(calibration, dict):
        arrays = {k: np.asarray(v) for k, v in calibration.items()}
    else:
        arrays = read_npz(calibration, "calibration data")
    infos = model_inputs(model)
    names = [i.name for i in infos]
    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in infos}
    if all(n in arrays for n in names):
        feeds = {n: arrays[n] for n in names}
    elif len(names) == 1 and arrays:
        images = arrays["images"] if "images" in arrays else next(iter(arrays.values()))
        if images.ndim < 2:
            raise InputError(f"calibration images must have a batch axis, got shape {images.shape}")
        check_real(images, "calibration images")
        integer = np.issubdtype(images.dtype, np.integer)
        feeds = {names[0]: resolve_preprocess(model, integer).apply(images, dtypes[names[0]])}
    else:
        raise InputError(f"calibration data must hold arrays named {', '.join(names)} (or `images`)")
    if any(np.ndim(v) == 0 or np.shape(v)[0] == 0 for v in feeds.values()):
        raise InputError("calibration data holds no samples")
    check_feeds(model, feeds, "calibration data", fixed_batch="at-least")
    return {n: np.ascontiguousarray(v.astype(dtypes[n], copy=False)) for n, v in feeds.items()}


def _chain_moments(chain: Chain, layer: ChannelLayer, options: CompressOptions, probed: ProbedStatistics | None) -> GaussianMoments:
    if probed is not None:
        return probed.pre
    if not layer.has_batchnorm:
        raise InputError(f"{chain.name}: no BatchNormalization statistics (use statistics='probe' or 'auto')")
    return moments_from_batchnorm(layer)


def activation_moments(
    chain: Chain, layer: ChannelLayer, options: CompressOptions, probed: ProbedStatistics | None,
    covariance: bool | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(E[a], Cov(a)) of the chain's activations a = ReLU(z).

    With calibration data and calibration_fit "activations" they are the sample moments of the
    measured activations (so `moments` is least squares with intercept on those samples);
    otherwise the Gaussian model of z (BN statistics, synthetic probe, or calibration) gives
    them in closed form. Cov(a) is None for the methods that need only the mean
    (Method.needs_covariance), unless `covariance` asks for it whatever the method.
    """
    if probed is not None and options.calibration is not None and options.calibration_fit == "activations":
        return probed.activation_mean, probed.activation_cov
    moments = _chain_moments(chain, layer, options, probed)
    if options.method_spec.needs_covariance if covariance is None else covariance:
        return relu_covariance(moments)
    return relu_mean(moments.mean, moments.std), None
