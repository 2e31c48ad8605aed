"""The compression pass: find chains, choose channels, solve compensation, rewrite, validate.

This is the one place that joins the graph layer (onnx_lbyl.graph) to the mathematics
(onnx_lbyl.numerics); the command line only calls `compress` and prints its report.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import __version__
from .errors import NothingToPruneError, first_line, InputError
from .graph.chains import Chain, find_chains, node_label
from .graph.cost import model_cost, node_macs
from .graph.layers import HANDLERS
from .graph.io import check_input_model, load_model
from .graph.probe import probe_moments, synthetic_images
from .graph.surgery import add_to_next_bias, apply_pruning, channel_layer, next_layer_weight
from .numerics.compensation import (
    LbylLambdas,
    fold_into_next_layer,
    lbyl_coefficients,
    merge_coefficients,
    moment_coefficients,
    prune_coefficients,
)
from .numerics.folding import ChannelLayer
from .numerics.selection import select_channels
from .numerics.statistics import (
    GaussianMoments,
    bias_correction,
    moments_from_batchnorm,
    relu_covariance,
    relu_mean,
    residual_mean,
)
from .options import STATISTICAL_METHODS, CompressOptions
from .planning import ChainShape, layer_ratios, ratio_for_target_macs
from .report import CompressionReport, LayerReport, SkippedReport
from .validate import load_inputs, random_inputs, validate

Progress = Callable[[int, int, LayerReport], None]
PATTERN = (
    "Conv/Gemm/MatMul -> [BatchNormalization] -> Relu -> [channel-wise ops] -> Conv/Gemm/MatMul "
    "(group=1 Convs, constant unshared weights, intermediate tensors read by nothing else)"
)


@dataclass
class CompressionResult:
    model: onnx.ModelProto
    report: CompressionReport


def compress(
    model: onnx.ModelProto | str | os.PathLike,
    options: CompressOptions | None = None,
    inputs: str | os.PathLike | dict[str, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> CompressionResult:
    """Prune and restore `model` (a ModelProto or a path) and return the validated result.

    `inputs` optionally replaces the random validation batch: an .npz path or a dict of
    arrays keyed by input name. The input model is never modified. Raises InputError for
    unusable input and ValidationError if the result fails a check.
    """
    started = time.perf_counter()
    options = (options or CompressOptions()).check()
    source = None
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        model = load_model(model)
    else:
        check_input_model(model)

    graph = gs.import_onnx(model)
    chains, skipped = find_chains(graph, {i.name for i in model.graph.input}, frozenset(options.allow_approximate))
    if not chains:
        raise NothingToPruneError(
            f"no prunable chain found: looked for {PATTERN}; {len(skipped)} layer(s) checked"
            + (f", e.g. {skipped[0].node}: {skipped[0].reason}" if skipped else "")
        )
    ratios = _chain_ratios(model, chains, options)

    rng = np.random.default_rng(options.seed)
    probed = _probe(model, chains, options)
    layers = []
    for index, chain in enumerate(chains, start=1):
        layers.append(_prune_chain(chain, ratios[chain.name], options, rng, graph, probed.get(chain.name)))
        if progress is not None:
            progress(index, len(chains), layers[-1])

    pruned = _export(graph, model, options)
    feeds, label = _validation_batch(model, inputs, options)
    nothing_removed = not any(layer.removed for layer in layers)
    validation = validate(model, pruned, feeds, label, expect_identical=nothing_removed)

    before, after = model_cost(model), model_cost(pruned)
    report = CompressionReport(
        tool_version=__version__,
        options=options.to_dict(),
        input=source,
        layers=layers,
        skipped=[SkippedReport(s.node, s.reason) for s in skipped],
        parameters_before=before.parameters,
        parameters_after=after.parameters,
        macs_before=before.macs,
        macs_after=after.macs,
        validation=validation,
    )
    report.seconds = round(time.perf_counter() - started, 3)
    return CompressionResult(pruned, report)


PROBE_BATCH = 32  # synthetic images for the data-free probe (graph.probe)


def _probe(model: onnx.ModelProto, chains: list[Chain], options: CompressOptions) -> dict[str, GaussianMoments]:
    """Statistics measured on synthetic input, for the chains that need them (graph.probe)."""
    if options.method not in STATISTICAL_METHODS:
        return {}
    wanted = [c for c in chains if options.statistics == "probe" or (options.statistics == "auto" and c.batchnorm is None)]
    if not wanted:
        return {}
    feeds = random_inputs(model, PROBE_BATCH, seed=options.seed)
    rng = np.random.default_rng(options.seed)
    for name, value in feeds.items():
        if value.ndim == 4 and np.issubdtype(value.dtype, np.floating):
            feeds[name] = synthetic_images(value.shape, rng).astype(value.dtype)
    return probe_moments(model, wanted, feeds)


def _chain_moments(chain: Chain, layer: ChannelLayer, options: CompressOptions, probed: GaussianMoments | None) -> GaussianMoments:
    if probed is not None:
        return probed
    if not layer.has_batchnorm:
        raise InputError(f"{chain.name}: no BatchNormalization statistics (use statistics='probe' or 'auto')")
    return moments_from_batchnorm(layer)


def _chain_ratios(model: onnx.ModelProto, chains: list[Chain], options: CompressOptions) -> dict[str, float]:
    """The ratio of every chain after per-layer rules and the MACs target (planning)."""
    shapes = [ChainShape(c.name, c.producer.outputs[0].name, c.consumer.outputs[0].name,
                         HANDLERS[c.producer.op].out_channels(c.producer)) for c in chains]
    ratio = options.ratio
    if options.target_macs is not None:
        ratio = ratio_for_target_macs(shapes, node_macs(model), options.target_macs, options.layer_ratios, options.exclude)
    return layer_ratios(shapes, ratio, options.layer_ratios, options.exclude)


def _prune_chain(
    chain: Chain,
    ratio: float,
    options: CompressOptions,
    rng: np.random.Generator,
    graph: gs.Graph | None = None,
    probed: GaussianMoments | None = None,
) -> LayerReport:
    """Choose, solve and rewrite one chain, reading weights as earlier chains left them."""
    layer = channel_layer(chain)
    kept, removed = select_channels(layer, ratio, options.criterion, rng)
    old_next = next_layer_weight(chain)
    if options.method in STATISTICAL_METHODS:
        moments = _chain_moments(chain, layer, options, probed)
        coefficients, activation_mean = _statistical_coefficients(layer, kept, removed, options, moments)
        delta = bias_correction(old_next, removed, residual_mean(coefficients, kept, removed, activation_mean))
    else:
        coefficients, delta = _coefficients(layer, kept, removed, options), None
    new_next = fold_into_next_layer(old_next, kept, removed, coefficients)
    apply_pruning(chain, kept, new_next)
    if delta is not None and removed.size:
        add_to_next_bias(chain, delta, graph)
    return LayerReport(
        name=chain.name,
        next_layer=node_label(chain.conv2),
        has_batchnorm=chain.batchnorm is not None,
        channels_before=layer.channels,
        channels_after=int(kept.size),
        removed=[int(i) for i in removed],
        approximations=list(chain.approximations),
        compensated=int(np.count_nonzero(np.any(coefficients != 0, axis=0))),
    )


def _statistical_coefficients(
    layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, options: CompressOptions, moments: GaussianMoments
) -> tuple[np.ndarray, np.ndarray]:
    """(S, E[a]) for the methods that use pre-activation statistics."""
    if options.method == "moments":
        activation_mean, activation_cov = relu_covariance(moments)
        return moment_coefficients(activation_mean, activation_cov, kept, removed), activation_mean
    base = {"lbyl-mean": "lbyl", "merge-mean": "merge", "prune-mean": "prune"}[options.method]
    coefficients = _coefficients(layer, kept, removed, replace(options, method=base))
    return coefficients, relu_mean(moments.mean, moments.std)


def _coefficients(layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, options: CompressOptions) -> np.ndarray:
    if options.method == "lbyl":
        return lbyl_coefficients(layer, kept, removed, LbylLambdas(options.lambda1, options.lambda2))
    if options.method == "merge":
        return merge_coefficients(layer, kept, removed)
    return prune_coefficients(layer, kept, removed)


def _export(graph: gs.Graph, template: onnx.ModelProto, options: CompressOptions) -> onnx.ModelProto:
    """Serialise the edited graph, keeping the original's model-level fields and metadata.

    Intermediate shapes recorded in the original are stale after pruning, so they are
    dropped and inferred again.
    """
    keep = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.name not in keep:
            tensor.shape = None
    try:
        model = gs.export_onnx(graph)
    except Exception as exc:  # pragma: no cover - would be a bug in the surgery
        raise InputError(f"could not serialise the pruned graph: {first_line(exc)}")
    model.ir_version = template.ir_version
    model.producer_name = template.producer_name
    model.producer_version = template.producer_version
    model.domain = template.domain
    model.model_version = template.model_version
    model.doc_string = template.doc_string
    del model.opset_import[:]
    model.opset_import.extend(template.opset_import)
    props = {p.key: p.value for p in template.metadata_props}
    props["onnx_lbyl.version"] = __version__
    props["onnx_lbyl.options"] = json.dumps(options.to_dict(), sort_keys=True)
    onnx.helper.set_model_props(model, props)
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:
        return model  # strict inference in validation says what is wrong


def _validation_batch(model, inputs, options: CompressOptions) -> tuple[dict[str, np.ndarray], str]:
    if inputs is None:
        return random_inputs(model, options.validation_batch), "random"
    if isinstance(inputs, dict):
        return inputs, "given"
    return load_inputs(inputs, model), os.path.basename(str(inputs))
