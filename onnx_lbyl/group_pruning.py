"""Pruning channel groups that are not simple chains: residual streams, depthwise blocks,
squeeze-excitation, Concat/Split, any activation.

For each group and each consumer read (groups.Read) the statistics are the measured mean and
covariance of the tensor that consumer reads (the probe's synthetic images, or calibration
data), so they hold whatever the activation or the path. The compensation of a read is the
best linear predictor of the removed channels from the kept ones, folded into that consumer,
plus the expected residual in its bias (MATH.md §5, read by read); `moments-greedy` chooses the
removed channels by the weighted sum of expected output errors over the group's reads (each
read's error relative to its expected output energy, so consumers of different scales count
alike). This module joins the graph side (groups) and the mathematics (numerics).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .graph.probe import TensorRequest, probe_tensors
from .groups import Group, Read
from .groups.graph import label
from .groups.rewrite import add_bias, apply_masks, fold_read, input_axis, read_view
from .methods import Method
from .numerics.compensation import moment_coefficients
from .numerics.elimination import ReadView, energy_weighted_view, greedy_group_elimination, removal_curve
from .numerics.statistics import residual_mean
from .planning import GroupShape
from .report import LayerReport

@dataclass(frozen=True)
class ReadStatistics:
    mean: np.ndarray
    cov: np.ndarray


def requests(groups: list[Group]) -> list[TensorRequest]:
    """The tensors whose channel statistics the groups' reads need."""
    out = []
    for group in groups:
        for read in group.reads:
            out.append(TensorRequest(read.tensor.name, read.axis, read.outer, read.inner, read.total))
    return out


def measure(model: onnx.ModelProto, groups: list[Group], feeds: dict[str, np.ndarray], scratch=None,
            batch: int = 8, batch_statistics: bool = False) -> dict[tuple[str, int], ReadStatistics]:
    """Statistics of every read of every group, keyed by (tensor name, offset)."""
    if not groups:
        return {}
    measured = probe_tensors(model, requests(groups), feeds, batch=batch, scratch=scratch,
                             batch_statistics=batch_statistics)
    stats = {}
    for group in groups:
        for read in group.reads:
            mean, cov = measured[read.tensor.name]
            span = slice(read.offset, read.offset + group.channels)
            stats[(read.tensor.name, read.offset)] = ReadStatistics(mean[span], cov[span, span])
    return stats


def prune_groups(graph: gs.Graph, groups: list[Group], keeps: dict[str, int], method: Method,
                 stats: dict[tuple[str, int], ReadStatistics], opset: int) -> list[LayerReport]:
    """Choose, compensate and remove the channels of every group; one report per group.
    `method` is one that prunes groups (Method.prunes_groups; the pipeline leaves the others'
    groups whole)."""
    reports, decided = [], []
    for group in groups:
        keep = keeps[group.name]
        views = [read_view(read, group.channels) for read in group.reads]
        read_stats = [stats.get((read.tensor.name, read.offset)) for read in group.reads]  # none for prune
        if method.greedy_selection:
            kept, removed, coefficients, _ = greedy_group_elimination(elimination_views(views, read_stats), keep)
        else:
            kept, removed = _by_producer_norm(group, keep)
            if method.compensates_groups:
                coefficients = [moment_coefficients(s.mean, s.cov, kept, removed) for s in read_stats]
            else:
                coefficients = [np.zeros((kept.size, removed.size)) for _ in group.reads]
        for index, (read, s, coef) in enumerate(zip(group.reads, read_stats, coefficients)):
            view, views[index] = views[index], None  # freed before fold_read makes its own float64 copy
            if method.mean_corrected and removed.size:
                residual = residual_mean(coef, kept, removed, s.mean)
                add_bias(read.node, view[:, removed].sum(axis=2) @ residual, graph)
            del view
            fold_read(read, group.channels, kept, removed, coef)
        decided.append((group, removed))
        reports.append(LayerReport(
            name=group.name,
            next_layer=group_readers(group),
            has_batchnorm=any(p.node.op == "BatchNormalization" for p in group.params),
            channels_before=group.channels,
            channels_after=int(kept.size),
            removed=[int(i) for i in removed],
            compensated=int(max((np.count_nonzero(np.any(c != 0, axis=0)) for c in coefficients), default=0)),
            kind="group",
            producers=len(group.producers),
        ))
    apply_masks(graph, decided, opset)
    return reports


def elimination_views(views: list[np.ndarray], read_stats: list[ReadStatistics]) -> list[ReadView]:
    """What the greedy elimination needs of each read: its covariance, the Gram matrix G G^T of
    the channels' outgoing weights (a row per channel), and a weight that makes its error
    relative to the read's expected output energy tr(Cov G G^T), so consumers of different
    scales count alike. The rows themselves are dropped at once (VGG-16's first classifier
    layer: 800 MB of them a read)."""
    return [energy_weighted_view(s.cov, view.transpose(1, 0, 2).reshape(view.shape[1], -1))
            for view, s in zip(views, read_stats)]


def group_curve(group: Group, stats: dict[tuple[str, int], ReadStatistics]) -> tuple[np.ndarray, np.ndarray]:
    """The group's removal curve (numerics.elimination.removal_curve), for budget allocation."""
    views = [read_view(read, group.channels) for read in group.reads]
    read_stats = [stats[(read.tensor.name, read.offset)] for read in group.reads]
    return removal_curve(elimination_views(views, read_stats), keep=1)


def _by_producer_norm(group: Group, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept and removed channels by the l2 norm of the producers' filters (summed over
    producers), highest kept; ties by channel index."""
    score = np.zeros(group.channels)
    for slot in group.producers:
        w = np.moveaxis(np.asarray(slot.tensor.values, dtype=np.float64), slot.axis, 0)
        rows = w[slot.offset:slot.offset + group.channels].reshape(group.channels, -1)
        score += np.sum(rows * rows, axis=1)
    order = np.argsort(-score, kind="stable")
    return np.sort(order[:keep]), np.sort(order[keep:])


def group_readers(group: Group) -> str:
    """The layers that read a group, for the report."""
    names = list(dict.fromkeys(label(r.node) for r in group.reads))
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"


def group_shape(group: Group) -> GroupShape:
    """What planning needs of a group: the layers whose MACs shrink with it."""
    outputs = [(s.node.outputs[0].name, int(s.tensor.shape[s.axis])) for s in group.producers]
    outputs += [(n.outputs[0].name, int(n.inputs[1].shape[0])) for n in group.channelwise]
    inputs = []
    for read in group.reads:
        if read.outer == 1 and read.inner == 1:
            total = int(read.node.inputs[1].shape[input_axis(read.node)])
            if read.node.op in ("Conv", "ConvTranspose"):
                total *= int(read.node.attrs.get("group", 1))
        else:
            total = read.total
        inputs.append((read.node.outputs[0].name, total))
    return GroupShape(group.name, group.channels, tuple(outputs), tuple(inputs))
