"""The compression pass: find chains, choose channels, solve compensation, rewrite, validate.

This is the one place that joins the graph layer (onnx_lbyl.graph) to the mathematics
(onnx_lbyl.numerics); the command line only calls `compress` and prints its report.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from fnmatch import fnmatchcase
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import __version__
from .errors import InputError, LbylError, NothingToPruneError, first_line
from .canonical import canonicalise
from .graph.chains import Chain, Skipped, find_chains, node_label
from .graph.cost import model_cost, node_macs, target_node_macs
from .graph.input_shapes import resolve_input_shapes
from .graph.unsupported import refuse_quantized, refuse_unsupported, subgraph_layers
from .graph.shapes import infer_shapes
from .graph.layers import HANDLERS
from .graph.external import Scratch, StagedModel, is_large, without_weights
from .graph.io import check_input_model, load_model, save_atomic
from .graph.sanity import check_model_sanity
from .graph.probe import ProbedStatistics
from .graph.surgery import add_to_next_bias, apply_pruning, channel_layer, next_layer_weight
from .numerics.compensation import LbylLambdas, fold_into_next_layer
from .numerics.elimination import energy_weighted_view, greedy_output_elimination, removal_curve
from .numerics.folding import ChannelLayer
from .numerics.lambda_choice import choose_lbyl_lambdas
from .numerics.selection import select_channels
from .numerics.statistics import bias_correction, residual_mean
from .methods import Method, group_methods
from .options import CompressOptions
from .group_pruning import group_curve, group_readers, group_shape, measure, prune_groups
from .groups import Group, analyse
from .groups.graph import attach_shapes
from .planning import ChainShape, GroupShape, allocate, kept_channels, kept_per_chain, layer_ratios, ratio_for_target_macs
from .sensitivity import SENSITIVITY_KEPT, SENSITIVITY_ROWS, measure_sensitivity, scaled_curves
from .report import CandidateReport, CompressionReport, LayerReport, SkippedReport
from .sources import (GROUP_PROBE_IMAGES, GROUP_PROBE_MAX_VALUES, activation_moments, calibration_feeds,
                      fixed_batch, probe_chains, synthetic_feeds, validation_feeds)
from .validate import check_drift, load_inputs, validate

Progress = Callable[[int, int, LayerReport], None]
PATTERN = (
    "Conv/Gemm/MatMul -> [BatchNormalization] -> Relu -> [channel-wise ops] -> Conv/Gemm/MatMul "
    "(group=1 Convs, constant unshared weights, intermediate tensors read by nothing else)"
)


@dataclass
class CompressionResult:
    """The pruned model and its report.

    `staged` is set for a large model compressed with an `output`: the validated files,
    waiting beside the output; `save` moves them into place, `discard` removes them.
    `feeds` is the batch it was validated on (the CLI's --benchmark times both models on it)."""

    model: onnx.ModelProto
    report: CompressionReport
    staged: StagedModel | None = None
    feeds: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, output: str | os.PathLike) -> None:
        """Write the model to `output` atomically (OUT.onnx + OUT.onnx.data when large)."""
        if self.staged is not None and self.staged.folder is not None and self.staged.output == Path(output):
            try:
                self.staged.commit()
            except OSError as exc:
                raise InputError(f"cannot write {output}: {exc.strerror or exc}")
        else:
            save_atomic(self.model, output)

    def discard(self) -> None:
        """Remove staged files not moved into place (safe to call after `save`)."""
        if self.staged is not None:
            self.staged.discard()


def compress(
    model: onnx.ModelProto | str | os.PathLike,
    options: CompressOptions | None = None,
    inputs: str | os.PathLike | dict[str, np.ndarray] | None = None,
    progress: Progress | None = None,
    output: str | os.PathLike | None = None,
    stage: Callable[[str], None] | None = None,
) -> CompressionResult:
    """Prune and restore `model` (a ModelProto or a path) and return the validated result.

    `inputs` optionally replaces the random validation batch: an .npz path or a dict of
    arrays keyed by input name. The input model is never modified. Raises InputError for
    unusable input and ValidationError if the result fails a check.

    Large models (graph.external.is_large; a path may name a model with external data) are
    checked and run from files: temporary folders beside `output` when it is given (then
    the validated pruned files are kept for CompressionResult.save), else in the system's
    temporary folder. Nothing temporary outlives the call except those staged files.
    """
    scratch = Scratch(None if output is None else Path(output).parent)
    try:
        return _compress(model, (options or CompressOptions()).check(), inputs, progress, output, scratch,
                         stage or (lambda text: None))
    finally:
        scratch.close()


@dataclass
class Analysis:
    """What the graph pass found in a model before any channel is chosen: the canonical model
    and its graph, the chains and groups that can be pruned, everything left whole with its
    reason, and the MACs each of them narrows. `compress` goes on from here; `inspect` (the
    CLI's `inspect` command) only reports it."""

    user_model: onnx.ModelProto  # as given: validated and costed against
    model: onnx.ModelProto  # its canonical copy: pruned
    canonicalised: list[str]
    graph: gs.Graph
    chains: list[Chain]
    groups: list[Group]
    skipped: list[Skipped]
    unit_macs: dict[str, int | None]
    options: CompressOptions  # with the input shapes resolved

    def candidates(self) -> list[CandidateReport]:
        """Every chain and group that can go, for the report."""
        found = [CandidateReport(c.name, "chain", HANDLERS[c.producer.op].out_channels(c.producer),
                                 node_label(c.consumer), 1, self.unit_macs.get(c.name)) for c in self.chains]
        found += [CandidateReport(g.name, "group", g.channels, group_readers(g), len(g.producers),
                                  self.unit_macs.get(g.name)) for g in self.groups]
        return found


def analyse_model(model: onnx.ModelProto, options: CompressOptions) -> Analysis:
    """Refuse what cannot be pruned at all (quantized models, dynamic shapes nothing states),
    canonicalise, and find the chains and channel groups (onnx_lbyl.groups) of `model`."""
    refuse_quantized(model)
    model = check_model_sanity(model)  # NaN/Inf or inconsistent weights, types, BN; stale value_info dropped
    options = replace(options, input_shapes=resolve_input_shapes(model, options.input_shapes, options.calibration))
    user_model, canonical_log = model, []
    if not is_large(model):  # a model over 2 GB is taken as it is (canonicalise copies it whole)
        # nothing changed: canonicalise returns `model` itself, and the one ModelProto serves as
        # both (nothing below writes to either; the probe restores what it edits)
        model, canonical_log = canonicalise(model)
    graph, chains, groups, skipped, skipped_shapes = _find_units(model, options)
    skipped += [Skipped(layer, f"inside {where}, a body the analysis does not enter")
                for layer, where in subgraph_layers(model)]
    unit_macs = _unit_macs(model, options, [_chain_shape(c) for c in chains] + [group_shape(g) for g in groups],
                           skipped_shapes)
    return Analysis(user_model, model, canonical_log, graph, chains, groups, skipped, unit_macs, options)


def _find_units(model: onnx.ModelProto, options: CompressOptions
                ) -> tuple[gs.Graph, list[Chain], list[Group], list[Skipped], dict[str, GroupShape]]:
    """A fresh graph of `model` with its chains and groups (deterministic: the same names on
    every call, so a unit can be found again in a new copy), and what is left whole."""
    graph = gs.import_onnx(model)
    chains, skipped = find_chains(graph, {i.name for i in model.graph.input}, frozenset(options.allow_approximate))
    groups: list[Group] = []
    skipped_shapes: dict[str, GroupShape] = {}
    if options.scope == "groups":
        attach_shapes(graph, model, options.input_shapes)
        groups, skipped, skipped_shapes = _groups_beyond_chains(analyse(graph), chains, options.method_spec)
    return graph, chains, groups, skipped, skipped_shapes


def inspect(model: onnx.ModelProto | str | os.PathLike, options: CompressOptions | None = None) -> CompressionReport:
    """What `compress` would find in `model`, without pruning anything: every candidate chain
    or group and everything left whole with its reason, with their MACs (the CLI's `inspect`)."""
    options = (options or CompressOptions()).check()
    started = time.perf_counter()
    source = str(model) if isinstance(model, (str, os.PathLike)) else None
    report = CompressionReport(tool_version=__version__, options=options.to_dict(), input=source, outcome="inspected")
    found = analyse_model(_loaded(model), options)
    _describe_analysis(report, found)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _loaded(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """The model a path names, read and checked; a ModelProto checked as it is."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    check_input_model(model)
    return model


def _describe_analysis(report: CompressionReport, found: Analysis) -> None:
    """Fill in what the analysis knows: a refusal's report says at least this much."""
    report.options = found.options.to_dict()
    report.canonicalised = found.canonicalised
    report.candidates = found.candidates()
    report.skipped = [SkippedReport(s.node, s.reason, found.unit_macs.get(s.node)) for s in found.skipped]
    cost = model_cost(found.user_model, found.options.input_shapes)
    report.parameters_before, report.macs_before = cost.parameters, cost.macs


def _compress(model, options: CompressOptions, inputs, progress: Progress | None,
              output: str | os.PathLike | None, scratch: Scratch, stage: Callable[[str], None]) -> CompressionResult:
    """`compress`, with a report that grows stage by stage: a run refused or failed on the
    way hands what it knew to the error (LbylError.report), for the CLI's --report."""
    started = time.perf_counter()
    source = str(model) if isinstance(model, (str, os.PathLike)) else None
    report = CompressionReport(tool_version=__version__, options=options.to_dict(), input=source)
    try:
        return _compress_stages(model, options, inputs, progress, output, scratch, report, stage)
    except LbylError as exc:
        report.outcome = "failed validation" if exc.exit_code == 1 else "refused"
        report.error = str(exc)
        exc.report = report
        raise
    finally:
        report.seconds = round(time.perf_counter() - started, 3)


def _compress_stages(model, options: CompressOptions, inputs, progress: Progress | None,
                     output: str | os.PathLike | None, scratch: Scratch, report: CompressionReport,
                     stage: Callable[[str], None]) -> CompressionResult:
    source = report.input
    model = _loaded(model)
    if isinstance(options.calibration, (str, os.PathLike)):
        calibration_feeds(model, options.calibration)  # an unusable file is refused before any work
    feeds, label = None, None
    if isinstance(inputs, (str, os.PathLike)):  # read once, refused before any work
        feeds, label = load_inputs(inputs, model), os.path.basename(str(inputs))
    elif isinstance(inputs, dict):
        feeds, label = inputs, "given"
    found = analyse_model(model, options)  # no stage line before it: its refusals stay one line
    _describe_analysis(report, found)
    options, model, graph, chains, groups = found.options, found.model, found.graph, found.chains, found.groups
    refuse_unsupported(model)  # every layer inside an If/Loop/Scan body: says so, not "nothing found"
    if not chains and not groups:
        raise NothingToPruneError(_nothing_found(found.skipped, options.scope))
    rng = np.random.default_rng(options.seed)
    stage(f"measuring activation statistics ({'calibration data' if options.calibration is not None else 'data-free'})")
    probed = probe_chains(model, chains, options, scratch)
    group_stats = _group_statistics(model, groups, options, scratch)
    keeps, report.plan = _kept_per_unit(model, chains, groups, options, probed, group_stats, scratch, stage)
    layers = report.layers
    total = len(chains) + len(groups)
    for index, chain in enumerate(chains, start=1):
        layers.append(_prune_chain(chain, keeps[chain.name], options, rng, graph, probed.get(chain.name)))
        if progress is not None:
            progress(index, total, layers[-1])
    if groups:
        for index, layer in enumerate(prune_groups(graph, groups, keeps, options.method_spec, group_stats,
                                                   _opset(model)),
                                      start=len(chains) + 1):
            layers.append(layer)
            if progress is not None:
                progress(index, total, layer)
    for layer in layers:
        layer.macs = found.unit_macs.get(layer.name)
    pruned = _export(graph, model, options)
    model = found.user_model  # validated and costed against what the user gave, not its canonical copy
    del graph, chains, groups, found  # they hold the edited weights, now copied into `pruned`
    original_path = None
    if is_large(model):
        # onnxruntime reads the original from a file; the weights we hold can go, if ours
        original_path = source if source is not None else scratch.original(model)
        if source is not None:
            model = without_weights(model)
    if feeds is None:
        feeds, label = _validation_batch(model, options)
    stage(f"validating on {next(iter(feeds.values())).shape[0] if feeds else 0} {label} sample(s)")
    nothing_removed = not any(layer.removed for layer in layers)
    if nothing_removed and options.round_to > 1 and (options.ratio > 0 or options.target_macs is not None):
        report.warnings.append(f"nothing was removed: kept counts rounded up to multiples of {options.round_to} "
                               "(or of 4 and 2 in narrow layers) keep every layer whole here; give a larger "
                               "--ratio, or --round-to 1 for exact counts")
    staged = None
    if is_large(pruned):
        staged = StagedModel(pruned, output if output is not None else scratch.folder / "pruned.onnx")
    try:
        report.validation = validate(model, pruned, feeds, label, expect_identical=nothing_removed,
                                     original_path=original_path,
                                     pruned_path=None if staged is None else staged.path)
        after = model_cost(pruned, options.input_shapes)
        report.parameters_after, report.macs_after = after.parameters, after.macs
        report.warnings += check_drift(report.validation, options.max_drift)
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if output is None and staged is not None:
        staged.discard()
        staged = None
    report.outcome = "pruned"
    return CompressionResult(pruned, report, staged, feeds)


def _opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset, which the group rewrite writes Split/Slice/Pad for."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 11)


def _groups_beyond_chains(groups: list[Group], chains: list[Chain], method: Method
                          ) -> tuple[list[Group], list[Skipped], dict[str, GroupShape]]:
    """The prunable groups that are not chains (those keep the chain path, with every method
    and BN statistics), why each other group that a layer produces stays whole, and the
    layers each of those touches (for its MACs in the report)."""
    chained = {(id(c.producer), id(c.consumer)) for c in chains}
    beyond, skipped, shapes = [], [], {}
    for group in groups:
        if not group.prunable:
            if group.layer:
                skipped.append(Skipped(group.name, "; ".join(group.reasons[:3])))
                shapes[group.name] = group_shape(group)
            continue
        if (len(group.producers) == 1 and len(group.reads) == 1
                and (id(group.producers[0].node), id(group.reads[0].node)) in chained):
            continue
        if not method.prunes_groups:
            names = ", ".join(m.name for m in group_methods())
            skipped.append(Skipped(group.name, f"method {method.name} compensates chains only (one producer, "
                                               f"one consumer); {names} prune any group"))
            shapes[group.name] = group_shape(group)
            continue
        beyond.append(group)
    return beyond, skipped, shapes


def _chain_shape(chain: Chain) -> GroupShape:
    return ChainShape(chain.name, chain.producer.outputs[0].name, chain.consumer.outputs[0].name,
                      HANDLERS[chain.producer.op].out_channels(chain.producer))


def _unit_macs(model: onnx.ModelProto, options: CompressOptions, units: list[GroupShape],
               skipped: dict[str, GroupShape]) -> dict[str, int | None]:
    """Per unit (chain, group, or group left whole): the MACs of the layers whose channels it
    narrows, each layer counted once per unit (a layer two units narrow counts in both)."""
    macs = node_macs(model, options.input_shapes)
    out = {}
    for unit in [*units, *skipped.values()]:
        layers = dict.fromkeys(node for node, _c in (*unit.outputs, *unit.inputs))
        values = [macs.get(node) for node in layers]
        out[unit.name] = None if any(v is None for v in values) else int(sum(values))
    return out


def _nothing_found(skipped: list[Skipped], scope: str) -> str:
    """The one-line refusal: what was looked for, the most common reason, how many others."""
    what = "chain" if scope == "chains" else "layer"
    looked_for = PATTERN if scope == "chains" else "channel groups that a layer produces and another reads"
    head = f"no prunable {what} found: looked for {looked_for}; {len(skipped)} layer(s) checked"
    if not skipped:
        return head
    reasons = Counter(s.reason for s in skipped)
    reason, count = reasons.most_common(1)[0]
    example = next(s.node for s in skipped if s.reason == reason)
    others = len(skipped) - count
    return (f"{head}, {count} because {reason} (e.g. {example})"
            + (f"; {others} for {len(reasons) - 1} other reason(s), listed by --report" if others else ""))


def _group_statistics(model: onnx.ModelProto, groups: list[Group], options: CompressOptions, scratch):
    """Measured statistics of every group read (calibration data, else the synthetic probe)."""
    if not groups or not options.method_spec.needs_statistics:
        return {}
    feeds = (calibration_feeds(model, options.calibration) if options.calibration is not None
             else synthetic_feeds(model, options.seed, scratch, rows=GROUP_PROBE_IMAGES, shapes=options.input_shapes,
                                  max_values=GROUP_PROBE_MAX_VALUES))
    # data-free: every BN of the probe normalises by the synthetic batch's own statistics, so each
    # BN output has the mean and variance the model's BN records for real data (graph.probe);
    # measured on the development models, bench/results/design_checks.md
    return measure(model, groups, feeds, scratch, batch_statistics=options.calibration is None)


def _kept_per_unit(model: onnx.ModelProto, chains: list[Chain], groups: list[Group],
                   options: CompressOptions, probed, group_stats, scratch=None,
                   stage: Callable[[str], None] = lambda text: None) -> tuple[dict[str, int], str]:
    """The channels every chain and group keeps after per-layer rules, the MACs target and rounding.

    A MACs target with a method that chooses channels by output error (Method.greedy_selection,
    the default moments-greedy) is met by error-priced allocation (planning.allocate
    over each unit's removal curve, rescaled by each unit's measured output drift with
    allocation="sensitivity"); otherwise, and with allocation="uniform", by the smallest
    uniform ratio that reaches it."""
    shapes = [_chain_shape(c) for c in chains] + [group_shape(g) for g in groups]
    ratio = options.ratio
    if (options.target_macs is not None and options.allocation in ("error", "sensitivity")
            and options.method_spec.greedy_selection):
        ruled = layer_ratios(shapes, 0.0, options.layer_ratios, options.exclude)
        fixed = {s.name: kept_channels(s.channels, ruled[s.name]) for s in shapes
                 if any(fnmatchcase(s.name, p) for p, _r in options.layer_ratios)
                 or any(fnmatchcase(s.name, p) for p in options.exclude)}
        curves = {c.name: _chain_curve(c, options, probed.get(c.name)) for c in chains if c.name not in fixed}
        curves.update({g.name: group_curve(g, group_stats) for g in groups if g.name not in fixed})
        how = "error per MAC"
        if options.allocation == "sensitivity" and is_large(model):
            how = "error per MAC; sensitivity not measured on a model over 2 GB"
        elif options.allocation == "sensitivity":
            curves = _sensitivity_curves(model, shapes, curves, options, probed, group_stats, scratch, stage)
            how = "error per MAC, scaled by measured output drift"
        keeps = allocate(shapes, curves, target_node_macs(model, options.input_shapes), options.target_macs,
                         fixed, options.round_to)
        return keeps, f"target-macs={options.target_macs} (allocated by {how})"
    if options.target_macs is not None:
        ratio = ratio_for_target_macs(shapes, target_node_macs(model, options.input_shapes), options.target_macs,
                                      options.layer_ratios, options.exclude, options.round_to)
    keeps = kept_per_chain(shapes, layer_ratios(shapes, ratio, options.layer_ratios, options.exclude), options.round_to)
    if options.target_macs is not None:
        return keeps, f"target-macs={options.target_macs} (uniform ratio {ratio:g})"
    return keeps, f"ratio={ratio:g}"


def _sensitivity_curves(model: onnx.ModelProto, shapes: list[GroupShape], curves: dict, options: CompressOptions,
                        probed, group_stats, scratch, stage: Callable[[str], None]) -> dict:
    """`curves` rescaled by each unit's output drift when pruned alone (onnx_lbyl.sensitivity)."""
    widths = {s.name: s.channels for s in shapes}
    removed = {name: widths[name] - kept_channels(widths[name], SENSITIVITY_KEPT, options.round_to)
               for name in curves}
    removed = {name: count for name, count in removed.items() if count > 0}
    feeds = (calibration_feeds(model, options.calibration) if options.calibration is not None
             else synthetic_feeds(model, options.seed, scratch, rows=SENSITIVITY_ROWS, shapes=options.input_shapes))
    opset = _opset(model)

    def prune_alone(name: str, count: int) -> onnx.ModelProto:
        graph, chains, groups, _skipped, _shapes = _find_units(model, options)
        keep = widths[name] - count
        chain = next((c for c in chains if c.name == name), None)
        if chain is not None:
            _prune_chain(chain, keep, options, np.random.default_rng(options.seed), graph, probed.get(name))
        else:
            prune_groups(graph, [g for g in groups if g.name == name], {name: keep}, options.method_spec,
                         group_stats, opset)
        return _export(graph, model, options)

    stage(f"measuring the output drift of {len(removed)} layer(s), each pruned alone")
    measured = measure_sensitivity(model, removed, prune_alone, feeds, fixed_batch(model, options.input_shapes))
    return scaled_curves(curves, measured, removed)


def _chain_curve(chain: Chain, options: CompressOptions, probed: ProbedStatistics | None):
    """A chain's removal curve (numerics.elimination.removal_curve), its error relative to the
    consumer's expected output energy as for groups."""
    layer = channel_layer(chain)
    _mean, cov = activation_moments(chain, layer, options, probed, covariance=True)
    weight = next_layer_weight(chain)
    rows = np.moveaxis(np.asarray(weight, dtype=np.float64), 1, 0).reshape(layer.channels, -1)
    return removal_curve([energy_weighted_view(cov, rows)], keep=1)


def _prune_chain(
    chain: Chain,
    keep: int,
    options: CompressOptions,
    rng: np.random.Generator,
    graph: gs.Graph | None = None,
    probed: ProbedStatistics | None = None,
) -> LayerReport:
    """Choose, solve and rewrite one chain, reading weights as earlier chains left them."""
    layer = channel_layer(chain)
    old_next = next_layer_weight(chain)
    chosen = None
    method = options.method_spec
    if method.lambdas_per_layer:
        # LBYL itself, its lambdas chosen per layer; no mean correction (that would be lbyl-mean's)
        activation_mean, activation_cov = activation_moments(chain, layer, options, probed)
        kept, removed = select_channels(layer, keep, options.criterion, rng)
        choice = choose_lbyl_lambdas(layer, kept, removed, activation_mean, activation_cov, old_next)
        coefficients, delta = choice.coefficients, None
        chosen = [choice.lambdas.lambda1, choice.lambdas.lambda2]
    elif method.mean_corrected:  # every statistical method but lbyl-auto: S, then E[residual] into the bias
        activation_mean, activation_cov = activation_moments(chain, layer, options, probed)
        if method.greedy_selection:
            kept, removed, coefficients, _ = greedy_output_elimination(
                activation_cov, old_next, keep)
        else:
            kept, removed = select_channels(layer, keep, options.criterion, rng)
            coefficients = _coefficients(method, layer, kept, removed, options, activation_cov)
        delta = bias_correction(old_next, removed, residual_mean(coefficients, kept, removed, activation_mean))
    else:
        kept, removed = select_channels(layer, keep, options.criterion, rng)
        coefficients, delta = _coefficients(method, layer, kept, removed, options, None), None
    new_next = fold_into_next_layer(old_next, kept, removed, coefficients)
    apply_pruning(chain, kept, new_next)
    if delta is not None and removed.size:
        add_to_next_bias(chain, delta, graph)
    return LayerReport(
        name=chain.name,
        next_layer=node_label(chain.consumer),
        has_batchnorm=chain.batchnorm is not None,
        channels_before=layer.channels,
        channels_after=int(kept.size),
        removed=[int(i) for i in removed],
        approximations=list(chain.approximations),
        compensated=int(np.count_nonzero(np.any(coefficients != 0, axis=0))),
        lambdas=chosen,
    )


def _coefficients(method: Method, layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray,
                  options: CompressOptions, activation_cov: np.ndarray | None) -> np.ndarray:
    """S of a chain whose channels the criterion chose (the mean correction, if any, is added after)."""
    return method.chain_coefficients(layer, kept, removed, LbylLambdas(options.lambda1, options.lambda2),
                                     activation_cov)


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
        return infer_shapes(model)
    except Exception:
        return model  # strict inference in validation says what is wrong


def _validation_batch(model: onnx.ModelProto, options: CompressOptions) -> tuple[dict[str, np.ndarray], str]:
    """The batch both models run on for validation when the user gives no --inputs, and what it
    is, for the summary: the first rows of the calibration data, else synthetic natural-looking
    images through the model's preprocessing (sources.validation_feeds); always at the stated or
    declared shapes, never at 1x1 spatial dimensions (graph.input_shapes refuses to guess)."""
    return validation_feeds(model, options.seed, options.calibration, options.validation_batch,
                            options.input_shapes)
