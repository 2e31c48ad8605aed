"""The compression pass: find chains, choose channels, solve compensation, rewrite, validate.

This is the one place that joins the graph layer (onnx_lbyl.graph) to the mathematics
(onnx_lbyl.numerics); the command line only calls `compress` and prints its report.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import __version__
from .errors import NothingToPruneError, first_line, InputError
from .graph.chains import Chain, find_chains, node_label
from .graph.cost import model_cost
from .graph.io import check_input_model, load_model
from .graph.surgery import apply_pruning, channel_layer, next_layer_weight
from .numerics.compensation import (
    LbylLambdas,
    fold_into_next_layer,
    lbyl_coefficients,
    merge_coefficients,
    prune_coefficients,
)
from .numerics.folding import ChannelLayer
from .numerics.selection import select_channels
from .options import CompressOptions
from .report import CompressionReport, LayerReport, SkippedReport
from .validate import load_inputs, random_inputs, validate

Progress = Callable[[int, int, LayerReport], None]
PATTERN = "Conv -> [BatchNormalization] -> Relu -> Conv (group=1 Convs, constant unshared weights, intermediate tensors read by nothing else)"


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
    chains, skipped = find_chains(graph, {i.name for i in model.graph.input})
    if not chains:
        raise NothingToPruneError(
            f"no prunable chain found: looked for {PATTERN}; {len(skipped)} Conv node(s) checked"
            + (f", e.g. {skipped[0].node}: {skipped[0].reason}" if skipped else "")
        )

    rng = np.random.default_rng(options.seed)
    layers = []
    for index, chain in enumerate(chains, start=1):
        layers.append(_prune_chain(chain, options, rng))
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


def _prune_chain(chain: Chain, options: CompressOptions, rng: np.random.Generator) -> LayerReport:
    """Choose, solve and rewrite one chain, reading weights as earlier chains left them."""
    layer = channel_layer(chain)
    kept, removed = select_channels(layer, options.ratio, options.criterion, rng)
    coefficients = _coefficients(layer, kept, removed, options)
    new_next = fold_into_next_layer(next_layer_weight(chain), kept, removed, coefficients)
    apply_pruning(chain, kept, new_next)
    return LayerReport(
        name=chain.name,
        next_layer=node_label(chain.conv2),
        has_batchnorm=chain.batchnorm is not None,
        channels_before=layer.channels,
        channels_after=int(kept.size),
        removed=[int(i) for i in removed],
        compensated=int(np.count_nonzero(np.any(coefficients != 0, axis=0))),
    )


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
