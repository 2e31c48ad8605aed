"""Rewriting a graph for pruned channel groups: folds into consumers, then one slicing pass.

Two phases, because groups share nodes (a Conv reads one group and produces another, a Concat
consumer reads several): first every consumer read gets its compensation folded into its
weight and bias, on the full-width arrays; then every constant loses the removed channels of
every group at once (`apply_masks`), and shape arguments are recounted. Offsets recorded by
the analysis stay valid because nothing is sliced before the last phase.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx_graphsurgeon as gs

from ..graph.layers import LayerHandler
from ..graph.surgery import unique_name
from .graph import Group, Read

# the axis of a consumer's weight that indexes its input features
_INPUT_AXIS = {"Conv": 1, "ConvTranspose": 0, "MatMul": 0}


def input_axis(node: gs.Node) -> int:
    if node.op == "Gemm":
        return 1 if int(node.attrs.get("transB", 0)) else 0
    return _INPUT_AXIS[node.op]


def _weight(node: gs.Node) -> gs.Constant:
    return node.inputs[1]


def read_view(read: Read, channels: int) -> np.ndarray:
    """The consumer's weights for the group's channels at this read, in Conv layout
    (outputs, channels, taps): taps are kernel positions, or a flattened channel's features.
    Converted to float64 once, at the end (VGG-16's first classifier weight is 800 MB a
    float64 copy)."""
    w = np.asarray(_weight(read.node).values)
    if read.node.op in ("Conv", "ConvTranspose"):
        part = np.moveaxis(w, input_axis(read.node), 1)[:, read.offset:read.offset + channels]
        return np.array(part, dtype=np.float64, order="C").reshape(part.shape[0], channels, -1)
    features = np.moveaxis(w, input_axis(read.node), 0)  # (K, out)
    blocks = features.reshape(read.outer, read.total, read.inner, -1)[:, read.offset:read.offset + channels]
    moved = blocks.transpose(3, 1, 0, 2)
    return np.array(moved, dtype=np.float64, order="C").reshape(moved.shape[0], channels, -1)


def fold_read(read: Read, channels: int, kept: np.ndarray, removed: np.ndarray,
              coefficients: np.ndarray) -> None:
    """W[:, kept] += W[:, removed] S^T at this read (MATH.md §2), columns left in place for
    apply_masks to drop. Computed in float64, stored in the weight's dtype."""
    if not removed.size or not np.any(coefficients):
        return
    tensor = _weight(read.node)
    original = np.asarray(tensor.values)
    w = original.astype(np.float64)
    axis = input_axis(read.node)
    if read.node.op in ("Conv", "ConvTranspose"):
        moved = np.moveaxis(w, axis, 0)  # (C_in, ...)
        base = read.offset
        moved[base + kept] += np.tensordot(coefficients, moved[base + removed], axes=(1, 0))
        w = np.moveaxis(moved, 0, axis)
    else:
        features = np.moveaxis(w, axis, 0)
        shaped = features.reshape(read.outer, read.total, read.inner, -1)
        block = shaped[:, read.offset:read.offset + channels]  # view
        block[:, kept] += np.einsum("kj,ojif->okif", coefficients, block[:, removed])
        w = np.moveaxis(shaped.reshape(features.shape), 0, axis)
    tensor.values = np.ascontiguousarray(w.astype(original.dtype))


def add_bias(node: gs.Node, delta: np.ndarray, graph: gs.Graph) -> None:
    """b += delta on a consumer (Conv/ConvTranspose/Gemm bias input; a MatMul's following Add
    constant, or a new Add). A new bias is an unshared initializer of the weight's dtype."""
    delta = np.asarray(delta, dtype=np.float64)
    if not np.any(delta):
        return
    dtype = np.asarray(_weight(node).values).dtype
    if node.op == "MatMul":
        target = _following_bias(node)
        if target is None:
            product = node.outputs[0]
            unbiased = gs.Variable(unique_name(graph, f"{product.name}_unbiased"), dtype=product.dtype)
            node.outputs = [unbiased]
            constant = gs.Constant(unique_name(graph, f"{_weight(node).name}_bias"), np.ascontiguousarray(delta.astype(dtype)))
            graph.nodes.append(gs.Node("Add", name=unique_name(graph, f"{node.name or product.name}_bias_add"),
                                       inputs=[unbiased, constant], outputs=[product]))
            graph.toposort()
            return
    else:
        target = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if target is not None:
        old = np.asarray(target.values)
        if old.size == 1 and delta.size > 1:  # a broadcast scalar bias becomes one per output
            old = np.full(delta.shape, old.reshape(-1)[0], dtype=old.dtype)
        target.values = np.ascontiguousarray((old.astype(np.float64) + delta.reshape(old.shape)).astype(old.dtype))
        return
    # Conv, ConvTranspose and Gemm all keep a bias as input 2: the chain code's generic handler installs it
    LayerHandler().set_bias(node, delta.astype(dtype), unique_name(graph, f"{_weight(node).name}_bias"))


def _following_bias(matmul: gs.Node) -> gs.Constant | None:
    readers = list(matmul.outputs[0].outputs)
    if len(readers) != 1 or readers[0].op != "Add":
        return None
    others = [t for t in readers[0].inputs if t is not matmul.outputs[0]]
    outputs = np.asarray(_weight(matmul).values).shape[1]
    if len(others) != 1 or not isinstance(others[0], gs.Constant) or len(others[0].outputs) != 1:
        return None
    return others[0] if np.asarray(others[0].values).size == outputs else None


def apply_masks(graph: gs.Graph, decided: list[tuple[Group, np.ndarray]], opset: int) -> None:
    """Drop every removed channel of every group from every constant that holds it, then
    recount the shape arguments. `decided` pairs each group with its removed indices."""
    removed_at: dict[tuple[int, int], set[int]] = defaultdict(set)
    tensors: dict[int, gs.Constant] = {}

    def mark(tensor: gs.Constant, axis: int, positions: np.ndarray) -> None:
        tensors[id(tensor)] = tensor
        removed_at[(id(tensor), axis)].update(int(p) for p in positions)

    counts: dict[tuple[int, int, int], list] = {}
    depthwise: dict[int, list] = {}  # a depthwise Conv's group count is its channel count
    for group, removed in decided:
        if not removed.size:
            continue
        for node in group.channelwise:
            depthwise.setdefault(id(node), [node, 0])[1] += int(removed.size)
        for slot in group.producers:
            mark(slot.tensor, slot.axis, slot.offset + removed)
            bias = _current_bias(slot.node)  # may be new since the analysis (a chain's correction)
            if bias is not None and np.asarray(bias.values).size > 1:
                mark(bias, np.asarray(bias.values).ndim - 1, slot.offset + removed)
        for slot in group.params:
            mark(slot.tensor, slot.axis, _features(slot.offset + removed, slot.outer, slot.inner, slot.total))
        for read in group.reads:
            weight = _weight(read.node)
            mark(weight, input_axis(read.node), _features(read.offset + removed, read.outer, read.inner, read.total))
        for edit in group.edits:
            positions = edit.offset + removed
            inside = int(np.count_nonzero((positions >= edit.lo) & (positions < edit.hi)))
            key = (id(edit.node), edit.input_index, edit.index)
            entry = counts.setdefault(key, [edit, 0])
            entry[1] += inside
    for (tensor_id, axis), positions in removed_at.items():
        tensor = tensors[tensor_id]
        values = np.asarray(tensor.values)
        keep = np.setdiff1d(np.arange(values.shape[axis]), np.fromiter(positions, dtype=np.int64))
        tensor.values = np.ascontiguousarray(np.take(values, keep, axis=axis))
    for node, removed_count in depthwise.values():
        node.attrs["group"] = int(node.attrs["group"]) - removed_count
    by_argument: dict[tuple[int, int], list] = {}
    for edit, removed_count in counts.values():
        entry = by_argument.setdefault((id(edit.node), edit.input_index), [edit.node, edit.input_index, {}])
        entry[2][edit.index] = (edit.hi - edit.lo - removed_count) * edit.scale
    for node, input_index, values in by_argument.values():
        _recount(graph, node, input_index, values, opset)


def _current_bias(node: gs.Node) -> gs.Constant | None:
    if node.op == "MatMul":
        return _following_bias(node)
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    return bias if isinstance(bias, gs.Constant) else None


def _features(channels: np.ndarray, outer: int, inner: int, total: int) -> np.ndarray:
    """Feature indices of `channels` in a tensor flattened as (outer, total, inner)."""
    if outer == 1 and inner == 1:
        return channels
    o = np.arange(outer)[:, None, None]
    i = np.arange(inner)[None, None, :]
    return ((o * total + channels[None, :, None]) * inner + i).reshape(-1)


def _recount(graph: gs.Graph, node: gs.Node, input_index: int, values: dict[int, int], opset: int) -> None:
    """Write recounted entries of one shape argument: input `input_index`, an attribute (-1:
    Split's split, Pad's pads in old opsets) or sizes an equal Split did not spell out (-2)."""
    if input_index == -2:
        axis = int(node.attrs.get("axis", 0))
        sizes = [int(node.inputs[0].shape[axis]) // len(node.outputs)] * len(node.outputs)
        for index, value in values.items():
            sizes[index] = value
        node.attrs.pop("num_outputs", None)
        if opset >= 13:
            name = unique_name(graph, f"{node.name or node.outputs[0].name}_split")
            node.inputs.append(gs.Constant(name, np.asarray(sizes, dtype=np.int64)))
        else:
            node.attrs["split"] = sizes
        return
    if input_index == -1:
        name = "split" if node.op == "Split" else "pads"
        entries = list(node.attrs[name])
        for index, value in values.items():
            entries[index] = value
        node.attrs[name] = entries
        return
    tensor = node.inputs[input_index]
    array = np.array(np.asarray(tensor.values), copy=True)
    flat = array.reshape(-1)
    for index, value in values.items():
        flat[index] = value
    # a private copy: exporters share shape constants between nodes
    node.inputs[input_index] = gs.Constant(unique_name(graph, f"{tensor.name}_pruned"), array)
