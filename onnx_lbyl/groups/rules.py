"""One propagation rule per operator type (as Torch-Pruning has one handler per layer type).

A rule reads its node's inputs' Specs from the Analysis, registers what loses channels
(producer weights, per-channel parameters, shape arguments) and what reads them (consumers),
ties or cuts layouts, and gives its outputs their Specs. A rule that cannot prove a node safe
calls `state.opaque(node, reason)` (or `state.fix`), which keeps the channels it touches whole.
Operators not listed here are opaque (`unknown`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from .graph import Analysis, Spec, constant, label

Rule = Callable[[gs.Node, Analysis], None]
RULES: dict[str, Rule] = {}


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn
    return register


# -- small helpers ------------------------------------------------------------------------

def _shape(tensor: gs.Tensor | None) -> list | None:
    if tensor is None or not tensor.name:
        return None
    shape = tensor.shape
    return None if shape is None else list(shape)


def _rank(tensor: gs.Tensor) -> int | None:
    shape = _shape(tensor)
    return None if shape is None else len(shape)


def _input(node: gs.Node, index: int) -> gs.Tensor | None:
    return node.inputs[index] if len(node.inputs) > index and node.inputs[index].name else None


def writable(tensor: gs.Tensor | None, state: Analysis, what: str) -> str:
    """Why `tensor` may not be rewritten, or '' if it may (an unshared initializer)."""
    if tensor is None:
        return f"{what} is missing"
    if tensor.name in state.graph_inputs:
        return f"{what} {tensor.name!r} is a graph input, so it may change at run time"
    if not isinstance(tensor, gs.Constant):
        return f"{what} {tensor.name!r} is computed in the graph, not an initializer"
    if len(tensor.outputs) > 1:
        return f"{what} {tensor.name!r} is shared with {len(tensor.outputs) - 1} other node(s)"
    return ""


def _ints(tensor: gs.Tensor | None) -> list[int] | None:
    value = constant(tensor)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _axis(value: int, rank: int) -> int:
    return value + rank if value < 0 else value


def _pass(node: gs.Node, state: Analysis, spec: Spec | None) -> None:
    if node.outputs:
        state.set(node.outputs[0], spec)


def _extra_outputs_unused(node: gs.Node, state: Analysis, spec: Spec | None, what: str) -> bool:
    if any(t.outputs or t.name in state.graph_outputs for t in node.outputs[1:]):
        state.fix(spec, f"{node.op} {label(node)} {what}")
        return False
    return True


def _conv_like_read(node: gs.Node, state: Analysis, spec: Spec | None, data: gs.Tensor) -> bool:
    """Register `node` as a consumer of `spec` on axis 1 of a conv-layout input."""
    if spec is None:
        return False
    if spec.axis != 1 or spec.flattened:
        state.fix(spec, f"read by {node.op} {label(node)} along another axis than its channels")
        return False
    state.use("read", node, spec.layout, tensor=data, axis=1)
    return True


# -- producers and consumers --------------------------------------------------------------

@rule("Conv")
def conv(node: gs.Node, state: Analysis) -> None:
    x, w, b = node.inputs[0], _input(node, 1), _input(node, 2)
    spec = state.spec(x)
    group = int(node.attrs.get("group", 1))
    shape = _shape(w)
    problem = writable(w, state, "Conv weight") or (writable(b, state, "Conv bias") if b is not None else "")
    if problem or shape is None:
        state.opaque(node, problem or "weight shape unknown")
        return
    out = node.outputs[0]
    rank = len(shape)
    c_out, c_in_per_group = int(shape[0]), int(shape[1])
    if group == 1:
        _conv_like_read(node, state, spec, x)
        root = state.new_root(c_out, node, source=True)
        state.use("producer", node, (root,), tensor=w, axis=0)
        if b is not None:
            state.use("param", node, (root,), tensor=b, axis=0)
        state.set(out, Spec((root,), 1, rank))
        return
    if spec is not None and c_in_per_group == 1 and c_out == group and state.spaces.width(spec.layout) == group:
        if spec.axis != 1 or spec.flattened:
            state.opaque(node, "depthwise Conv along another axis")
            return
        state.use("param", node, spec.layout, tensor=w, axis=0)  # depthwise: one filter per channel
        if b is not None:
            state.use("param", node, spec.layout, tensor=b, axis=0)
        state.use("depthwise", node, spec.layout)
        state.set(out, Spec(spec.layout, 1, rank))
        return
    state.fix(spec, f"read by grouped Conv {label(node)} (group={group}), whose groups must stay equal")
    state.set(out, Spec((state.new_root(c_out, node, source=False),), 1, rank))


@rule("ConvTranspose")
def conv_transpose(node: gs.Node, state: Analysis) -> None:
    x, w, b = node.inputs[0], _input(node, 1), _input(node, 2)
    spec = state.spec(x)
    shape = _shape(w)
    problem = writable(w, state, "ConvTranspose weight") or (writable(b, state, "ConvTranspose bias") if b is not None else "")
    if problem or shape is None or int(node.attrs.get("group", 1)) != 1:
        state.opaque(node, problem or "grouped ConvTranspose")
        return
    _conv_like_read(node, state, spec, x)
    root = state.new_root(int(shape[1]), node, source=True)
    state.use("producer", node, (root,), tensor=w, axis=1)
    if b is not None:
        state.use("param", node, (root,), tensor=b, axis=0)
    state.set(node.outputs[0], Spec((root,), 1, len(shape)))


@rule("Gemm")
def gemm(node: gs.Node, state: Analysis) -> None:
    x, w, c = node.inputs[0], _input(node, 1), _input(node, 2)
    spec = state.spec(x)
    trans_b = int(node.attrs.get("transB", 0))
    problem = writable(w, state, "Gemm weight")
    if int(node.attrs.get("transA", 0)):
        problem = "Gemm with transA=1"
    elif float(node.attrs.get("alpha", 1.0)) != 1.0 or float(node.attrs.get("beta", 1.0)) != 1.0:
        problem = "Gemm with alpha or beta other than 1"
    shape = _shape(w)
    if problem or shape is None or len(shape) != 2:
        state.opaque(node, problem or "weight is not a matrix")
        return
    c_out = int(shape[0] if trans_b else shape[1])
    if spec is not None:
        if spec.axis != 1 or spec.rank != 2:
            state.fix(spec, f"read by Gemm {label(node)} along another axis")
        else:
            state.use("read", node, spec.layout, tensor=x, axis=1, outer=spec.outer, inner=spec.inner)
    root = state.new_root(c_out, node, source=True)
    state.use("producer", node, (root,), tensor=w, axis=0 if trans_b else 1)
    if c is not None:
        size = int(np.prod(_shape(c) or [0]))
        if size == c_out:
            problem = writable(c, state, "Gemm bias")
            if problem:
                state.spaces.fix((root,), problem)
            else:
                state.use("param", node, (root,), tensor=c, axis=len(_shape(c)) - 1)
        elif size != 1:
            state.spaces.fix((root,), f"Gemm {label(node)} has a bias that is not one value per output")
    state.set(node.outputs[0], Spec((root,), 1, 2))


@rule("MatMul")
def matmul(node: gs.Node, state: Analysis) -> None:
    x, w = node.inputs[0], _input(node, 1)
    spec = state.spec(x)
    shape = _shape(w)
    problem = writable(w, state, "MatMul weight")
    if problem or shape is None or len(shape) != 2:
        state.opaque(node, problem or "its second input is not a constant matrix")
        return
    rank = _rank(x) or (spec.rank if spec else 2)
    out_rank = max(rank, 2)
    if spec is not None and spec.axis < spec.rank - 2 and not spec.flattened:
        state.set(node.outputs[0], spec)  # the product mixes only the last axis: channels pass
        return
    if spec is not None:
        if spec.axis != spec.rank - 1:
            state.fix(spec, f"read by MatMul {label(node)} along another axis")
        else:
            state.use("read", node, spec.layout, tensor=x, axis=spec.axis, outer=spec.outer, inner=spec.inner)
    root = state.new_root(int(shape[1]), node, source=True)
    state.use("producer", node, (root,), tensor=w, axis=1)
    state.set(node.outputs[0], Spec((root,), out_rank - 1, out_rank))


# -- channel-wise nodes -------------------------------------------------------------------

UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Mish", "ThresholdedRelu", "Identity",
    "Cast", "Clip", "Not", "IsNaN", "IsInf",
)


@rule(*UNARY)
def unary(node: gs.Node, state: Analysis) -> None:
    _pass(node, state, state.spec(node.inputs[0]))


@rule("Dropout")
def dropout(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if _extra_outputs_unused(node, state, spec, "has its mask used"):
        _pass(node, state, spec)


@rule("BatchNormalization", "InstanceNormalization")
def normalisation(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    if int(node.attrs.get("training_mode", 0)) or not _extra_outputs_unused(node, state, spec, "runs in training mode"):
        state.opaque(node, "runs in training mode")
        return
    if spec.axis != 1 or spec.flattened:
        state.opaque(node, "normalises along another axis than the tracked channels")
        return
    params = node.inputs[1:5] if node.op == "BatchNormalization" else node.inputs[1:3]
    for param in params:
        problem = writable(param, state, f"{node.op} parameter")
        if problem:
            state.fix(spec, problem)
        else:
            state.use("param", node, spec.layout, tensor=param, axis=0)
    _pass(node, state, spec)


@rule("PRelu")
def prelu(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    _broadcast_constant(node, state, spec, node.inputs[1], _rank(node.inputs[0]) or (spec.rank if spec else 0))
    _pass(node, state, spec)


@rule("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
def pool(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is not None and (spec.axis != 1 or spec.flattened):
        state.opaque(node, "pools along the tracked channel axis")
        return
    if _extra_outputs_unused(node, state, spec, "has its indices used"):
        _pass(node, state, spec)


@rule("Resize", "Upsample")
def resize(node: gs.Node, state: Analysis) -> None:
    """Channel-wise when it leaves the channel axis alone: a scale of 1 there, or an explicit size
    equal to the channel count, which then counts channels (recounted by the rewrite). From
    opset 18 `axes` says which axes the scales or sizes list; an axis it omits is not resized."""
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    if spec.flattened:
        state.opaque(node, "resizes flattened channels")
        return
    axes = [_axis(int(a), spec.rank) for a in node.attrs.get("axes", range(spec.rank))]
    if spec.axis not in axes:  # scales and sizes leave the channel axis out
        _pass(node, state, spec)
        return
    entry = axes.index(spec.axis)
    old_style = node.op == "Upsample" or len(node.inputs) == 2  # Upsample-9, Resize-10: (X, scales)
    scales = _input(node, 1) if old_style else _input(node, 2)
    sizes = None if old_style else _input(node, 3)
    if node.op == "Upsample" and scales is None:  # Upsample-7: a scales attribute
        values = np.asarray(node.attrs.get("scales", []), dtype=np.float64)
    else:
        values = None if scales is None else constant(scales)
        if scales is not None and values is None:
            state.opaque(node, "its scales are computed")
            return
    if values is not None and values.size:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        if entry >= flat.size or flat[entry] != 1.0:
            state.opaque(node, "resizes the channel axis")
            return
    if sizes is not None:  # explicit sizes count channels
        counts = _ints(sizes)
        if not isinstance(sizes, gs.Constant) or counts is None:
            state.opaque(node, "its sizes are computed")
            return
        if entry >= len(counts) or counts[entry] != state.spaces.width(spec.layout):
            state.opaque(node, "resizes the channel axis")
            return
        state.use("edit", node, spec.layout, extra=(3, entry, 0, state.spaces.width(spec.layout)))
    _pass(node, state, spec)


@rule("Pad")
def pad(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    rank = spec.rank
    if len(node.inputs) > 1:
        pads = _ints(_input(node, 1))
        axes = _ints(_input(node, 3)) if _input(node, 3) is not None else list(range(rank))
    else:
        pads = [int(v) for v in node.attrs.get("pads", [])]
        axes = list(range(rank))
    if pads is None or axes is None or spec.flattened:
        state.opaque(node, "its pad amounts are not constant")
        return
    axes = [_axis(a, rank) for a in axes]
    count = len(axes)
    before = dict(zip(axes, pads[:count]))
    after = dict(zip(axes, pads[count:]))
    begin, end = before.get(spec.axis, 0), after.get(spec.axis, 0)
    if begin == 0 and end == 0:
        _pass(node, state, spec)
        return
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant" or begin < 0 or end < 0 or len(node.inputs) > 1 and not isinstance(node.inputs[1], gs.Constant):
        state.opaque(node, "pads the channel axis other than with constants")
        return
    layout = list(spec.layout)
    index = axes.index(spec.axis)
    where = 1 if len(node.inputs) > 1 else -1  # the pads input, or the attribute (opset < 11)
    if begin:  # padded channels are constants: a root of their own, narrowed by padding less
        root = state.new_root(begin, node, source=True)
        layout.insert(0, root)
        state.use("source", node, (root,))
        state.use("edit", node, (root,), extra=(where, index, 0, begin))
    if end:
        root = state.new_root(end, node, source=True)
        layout.append(root)
        state.use("source", node, (root,))
        state.use("edit", node, (root,), extra=(where, count + index, 0, end))
    _pass(node, state, Spec(tuple(layout), spec.axis, rank))


# -- couplings ------------------------------------------------------------------------------

ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where", "Equal",
               "Greater", "Less", "And", "Or")


@rule(*ELEMENTWISE)
def elementwise(node: gs.Node, state: Analysis) -> None:
    """Broadcasting elementwise ops: tracked inputs are tied channel by channel; a constant
    with one value per channel loses the same channels; any other operand must broadcast."""
    ranks = [_rank(t) for t in node.inputs]
    specs = [state.spec(t) for t in node.inputs]
    tracked = [(t, s) for t, s in zip(node.inputs, specs) if s is not None]
    if not tracked:
        return
    if any(r is None for r in ranks):
        for _t, s in tracked:
            state.fix(s, f"combined in {node.op} {label(node)} with a tensor of unknown shape")
        return
    out_rank = max(ranks)
    axes = {out_rank - s.rank + s.axis for _t, s in tracked}
    if len(axes) != 1 or any(s.flattened for _t, s in tracked):
        for _t, s in tracked:
            state.fix(s, f"combined in {node.op} {label(node)} along different axes")
        return
    out_axis = axes.pop()
    first = tracked[0][1]
    for _t, s in tracked[1:]:
        if not state.spaces.unify(first.layout, s.layout):
            for _u, s2 in tracked:
                state.fix(s2, f"combined in {node.op} {label(node)} with a different channel count")
            return
    out = Spec(first.layout, out_axis, out_rank)
    for tensor, spec, rank in zip(node.inputs, specs, ranks):
        if spec is None:
            _broadcast_constant(node, state, out, tensor, out_rank, rank)
    _pass(node, state, out)


def _broadcast_constant(node: gs.Node, state: Analysis, spec: Spec | None, tensor: gs.Tensor,
                        out_rank: int, rank: int | None = None) -> None:
    """An untracked operand broadcast against `spec`: fine if it has one entry along the
    channel axis, sliced with the channels if it is a constant with one entry per channel."""
    if spec is None:
        return
    shape = _shape(tensor)
    if shape is None:
        state.fix(spec, f"combined in {node.op} {label(node)} with a tensor of unknown shape")
        return
    rank = len(shape) if rank is None else rank
    axis = spec.axis - (out_rank - rank)  # the channel axis in the operand's own dims
    if axis < 0 or shape[axis] == 1:
        return
    if shape[axis] != state.spaces.width(spec.layout):
        state.fix(spec, f"combined in {node.op} {label(node)} with a tensor of another channel count")
        return
    problem = writable(tensor, state, f"{node.op} operand")
    if problem:
        state.fix(spec, f"{problem} (one value per channel in {node.op} {label(node)})")
        return
    state.use("param", node, spec.layout, tensor=tensor, axis=axis)


@rule("Concat")
def concat(node: gs.Node, state: Analysis) -> None:
    specs = [state.spec(t) for t in node.inputs]
    tracked = [s for s in specs if s is not None]
    if not tracked:
        return
    rank = tracked[0].rank
    axis = _axis(int(node.attrs.get("axis", 0)), rank)
    if any(s.rank != rank or s.axis != tracked[0].axis or s.flattened for s in tracked):
        state.opaque(node, "joins tensors whose channels lie on different axes")
        return
    channel_axis = tracked[0].axis
    if axis != channel_axis:  # joins along another axis: every input has the same channels
        for s in tracked[1:]:
            if not state.spaces.unify(tracked[0].layout, s.layout):
                state.opaque(node, "joins tensors of different channel counts")
                return
        if len(tracked) != len(specs):
            state.opaque(node, "joins tracked channels with untracked ones")
            return
        _pass(node, state, tracked[0])
        return
    layout: list[int] = []
    for tensor, spec in zip(node.inputs, specs):
        if spec is not None:
            layout.extend(spec.layout)
            continue
        shape = _shape(tensor)
        if shape is None or not isinstance(shape[axis], int):
            state.opaque(node, "joins a tensor whose channel count is unknown")
            return
        root = state.new_root(int(shape[axis]), node, source=False)
        if not shape[axis]:
            continue
        layout.append(root)
    _pass(node, state, Spec(tuple(layout), channel_axis, rank))


@rule("Split")
def split(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    axis = _axis(int(node.attrs.get("axis", 0)), spec.rank)
    if axis != spec.axis:
        for out in node.outputs:
            state.set(out, spec)
        return
    width = state.spaces.width(spec.layout)
    sizes = _ints(_input(node, 1)) if _input(node, 1) is not None else node.attrs.get("split")
    explicit = sizes is not None
    if sizes is None:
        count = len(node.outputs)
        if width % count:
            state.opaque(node, "splits channels unevenly without sizes")
            return
        sizes = [width // count] * count
    sizes = [int(v) for v in sizes]
    if spec.flattened or sum(sizes) != width:
        state.opaque(node, "its split sizes do not add up to the channels")
        return
    # sizes live in input 1 (opset 13+), the attribute (-1), or nowhere yet (equal parts: the
    # rewrite writes them out, since parts may no longer be equal)
    where = 1 if _input(node, 1) is not None else (-1 if explicit else -2)
    start = 0
    for index, (out, size) in enumerate(zip(node.outputs, sizes)):
        sub = state.spaces.sub_layout(spec.layout, start, start + size)
        state.use("edit", node, spec.layout, extra=(where, index, start, start + size))
        state.set(out, Spec(sub, spec.axis, spec.rank))
        start += size


@rule("Slice")
def slice_(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    rank = spec.rank
    if len(node.inputs) == 1:  # opset < 10: attributes
        starts, ends = list(node.attrs.get("starts", [])), list(node.attrs.get("ends", []))
        axes, steps = list(node.attrs.get("axes", range(len(starts)))), [1] * len(starts)
        constants = True
    else:
        starts, ends = _ints(_input(node, 1)), _ints(_input(node, 2))
        axes = _ints(_input(node, 3)) if _input(node, 3) is not None else (None if starts is None else list(range(len(starts))))
        steps = _ints(_input(node, 4)) if _input(node, 4) is not None else (None if starts is None else [1] * len(starts))
        constants = all(isinstance(node.inputs[i], gs.Constant) for i in range(1, min(len(node.inputs), 5)) if node.inputs[i].name)
    if starts is None or ends is None or axes is None or steps is None:
        state.opaque(node, "its bounds are computed")
        return
    axes = [_axis(a, rank) for a in axes]
    if spec.axis not in axes:
        _pass(node, state, spec)
        return
    i = axes.index(spec.axis)
    width = state.spaces.width(spec.layout)
    start, end, step = starts[i], ends[i], steps[i]
    start = min(max(start + width if start < 0 else start, 0), width)
    end = min(max(end + width if end < 0 else end, 0), width)
    if step != 1 or spec.flattened or not constants or len(node.inputs) == 1:
        state.opaque(node, "slices channels with a step or non-constant bounds")
        return
    if end <= start:
        state.opaque(node, "slices no channel")
        return
    sub = state.spaces.sub_layout(spec.layout, start, end)
    state.use("edit", node, spec.layout, extra=(1, i, 0, start))
    state.use("edit", node, spec.layout, extra=(2, i, 0, end))
    _pass(node, state, Spec(sub, spec.axis, rank))


# -- axis bookkeeping ---------------------------------------------------------------------

@rule("Transpose")
def transpose(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    perm = list(node.attrs.get("perm", reversed(range(spec.rank))))
    if spec.flattened:
        state.opaque(node, "moves flattened channels")
        return
    _pass(node, state, Spec(spec.layout, perm.index(spec.axis), spec.rank))


@rule("Unsqueeze", "Squeeze")
def squeeze(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    axes = _ints(_input(node, 1)) if len(node.inputs) > 1 else list(node.attrs.get("axes", []))
    out_rank = _rank(node.outputs[0])
    if axes is None or out_rank is None or spec.flattened:
        state.opaque(node, "its axes are not known")
        return
    if node.op == "Unsqueeze":
        axes = sorted(_axis(a, out_rank) for a in axes)
        axis = spec.axis
        for a in axes:
            if a <= axis:
                axis += 1
    else:
        axes = [_axis(a, spec.rank) for a in axes] or [i for i, d in enumerate(_shape(node.inputs[0]) or []) if d == 1]
        if spec.axis in axes:
            state.opaque(node, "squeezes the channel axis")
            return
        axis = spec.axis - sum(1 for a in axes if a < spec.axis)
    _pass(node, state, Spec(spec.layout, axis, out_rank))


@rule("Flatten")
def flatten(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    shape = _shape(node.inputs[0])
    split_at = _axis(int(node.attrs.get("axis", 1)), spec.rank)
    if shape is None or spec.flattened or spec.axis < split_at or not all(isinstance(d, int) for d in shape[split_at:]):
        state.opaque(node, "flattens channels in a way the tool does not track")
        return
    outer = int(np.prod(shape[split_at:spec.axis])) if spec.axis > split_at else 1
    inner = int(np.prod(shape[spec.axis + 1:]))
    _pass(node, state, Spec(spec.layout, 1, 2, outer, inner))


@rule("Reshape")
def reshape(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    before, after = _shape(node.inputs[0]), _shape(node.outputs[0])
    if before is not None and (after is None or not all(isinstance(d, int) for d in after[1:])):
        after = _reshaped(before, _target_entries(_input(node, 1), node.inputs[0])) or after
    if before is None or after is None or spec.flattened:
        state.opaque(node, "reshapes channels in a way the tool does not track")
        return
    width = state.spaces.width(spec.layout)
    lead, rest_in = before[:spec.axis], before[spec.axis + 1:]
    out, inner, k = None, 1, -1
    # an output axis k whose leading dims hold exactly the input's leading dims, and that holds
    # the channels alone, or the channels and everything after them (a flatten)
    for k in range(len(after)):
        if not _same_product(after[:k], lead) or not isinstance(after[k], int):
            continue
        if after[k] == width:
            out = Spec(spec.layout, k, len(after))
            break
        if (k == len(after) - 1 and all(isinstance(d, int) for d in rest_in)
                and after[k] == width * int(np.prod(rest_in))):
            inner = int(np.prod(rest_in))
            out = Spec(spec.layout, k, len(after), 1, inner)
            break
    if out is None:
        state.opaque(node, "reshapes channels in a way the tool does not track")
        return
    target = _input(node, 1)
    shape_values = _ints(target)
    if shape_values is not None and k < len(shape_values) and shape_values[k] > 0:
        if not isinstance(target, gs.Constant):
            state.opaque(node, "its target shape is computed")
            return
        state.use("edit", node, spec.layout, inner=inner, extra=(1, k, 0, width))
    _pass(node, state, out)


def _target_entries(target: gs.Tensor | None, data: gs.Tensor) -> list | None:
    """A Reshape target as entries: ints, or ('dim', i) for dimension i of `data` read through
    Shape -> Gather -> [Unsqueeze] -> Concat, as PyTorch writes x.view(x.size(0), -1)."""
    values = _ints(target)
    if values is not None:
        return values
    if target is None or len(target.inputs) != 1 or target.inputs[0].op != "Concat":
        return None
    entries: list = []
    for part in target.inputs[0].inputs:
        value = _ints(part)
        if value is not None:
            entries.extend(value)
            continue
        node = part.inputs[0] if len(part.inputs) == 1 else None
        if node is not None and node.op == "Unsqueeze":
            node = node.inputs[0].inputs[0] if len(node.inputs[0].inputs) == 1 else None
        if node is None or node.op != "Gather" or not node.inputs[0].inputs or node.inputs[0].inputs[0].op != "Shape":
            return None
        shape_node, index = node.inputs[0].inputs[0], _ints(node.inputs[1])
        if shape_node.inputs[0] is not data or index is None or len(index) != 1:
            return None
        entries.append(("dim", index[0]))
    return entries


def _reshaped(before: list, entries: list | None) -> list | None:
    """The output dims of reshaping `before` by `entries` (0 copies, -1 takes the rest)."""
    if entries is None:
        return None
    dims: list = []
    for k, entry in enumerate(entries):
        if isinstance(entry, tuple):
            dims.append(before[entry[1]])
        elif entry == 0:
            dims.append(before[k] if k < len(before) else None)
        else:
            dims.append(None if entry == -1 else entry)
    if dims.count(None) > 1:
        return None
    if None in dims:
        known = [d for d in dims if d is not None]
        symbolic = [d for d in before if not isinstance(d, int)]
        if sorted(map(str, symbolic)) != sorted(str(d) for d in known if not isinstance(d, int)):
            return None
        total = int(np.prod([d for d in before if isinstance(d, int)] or [1]))
        part = int(np.prod([d for d in known if isinstance(d, int)] or [1]))
        if part == 0 or total % part:
            return None
        dims[dims.index(None)] = total // part
    return dims


def _same_product(a: list, b: list) -> bool:
    """Whether two dim lists hold the same number of elements (symbolic dims must match)."""
    sym_a = sorted(str(d) for d in a if not isinstance(d, int))
    sym_b = sorted(str(d) for d in b if not isinstance(d, int))
    if sym_a != sym_b:
        return False
    return int(np.prod([d for d in a if isinstance(d, int)] or [1])) == int(np.prod([d for d in b if isinstance(d, int)] or [1]))


@rule("Shape")
def shape_(node: gs.Node, state: Analysis) -> None:
    """Shape is harmless when only non-channel entries of it are used (x.view(x.size(0), -1))."""
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    start = int(node.attrs.get("start", 0))
    for reader in node.outputs[0].outputs:
        if reader.op == "Gather" and int(reader.attrs.get("axis", 0)) == 0:
            indices = _ints(_input(reader, 1))
            if indices is not None and all(_axis(i, spec.rank) + start != spec.axis for i in indices):
                continue
        state.fix(spec, f"its shape is read by {reader.op} {label(reader)}, which may use the channel count")
        return


@rule("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")
def reduce(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    if node.op.startswith("Arg"):
        axes = [int(node.attrs.get("axis", 0))]
    elif len(node.inputs) > 1 and node.inputs[1].name:
        axes = _ints(node.inputs[1])
    else:
        axes = list(node.attrs.get("axes", []))
    if axes is None or spec.flattened:
        state.opaque(node, "its axes are not known")
        return
    axes = [_axis(a, spec.rank) for a in axes] or list(range(spec.rank))
    if spec.axis in axes:
        state.opaque(node, "reduces over the channels")
        return
    axis = spec.axis if int(node.attrs.get("keepdims", 1)) else spec.axis - sum(1 for a in axes if a < spec.axis)
    _pass(node, state, Spec(spec.layout, axis, _rank(node.outputs[0]) or spec.rank))


@rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(node: gs.Node, state: Analysis) -> None:
    """Before opset 13 these ops flatten the input to 2-D at `axis` (default 1) and normalise over
    every axis from `axis` on; from 13 over `axis` alone (default -1)."""
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    coerced = int(getattr(state.graph, "opset", None) or 0) < 13
    axis = _axis(int(node.attrs.get("axis", 1 if coerced else -1)), spec.rank)
    if spec.flattened or (spec.axis >= axis if coerced else spec.axis == axis):
        state.opaque(node, "normalises over the channels")
        return
    _pass(node, state, spec)


@rule("LayerNormalization")
def layer_norm(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    axis = _axis(int(node.attrs.get("axis", -1)), spec.rank)
    if spec.axis >= axis or spec.flattened:
        state.opaque(node, "normalises over the channels")
        return
    if _extra_outputs_unused(node, state, spec, "has its statistics used"):
        _pass(node, state, spec)


@rule("Gather")
def gather(node: gs.Node, state: Analysis) -> None:
    spec = state.spec(node.inputs[0])
    if spec is None:
        return
    axis = _axis(int(node.attrs.get("axis", 0)), spec.rank)
    index_rank = _rank(node.inputs[1])
    if axis == spec.axis or spec.flattened or index_rank is None:
        state.opaque(node, "gathers along the channels")
        return
    new_axis = spec.axis if spec.axis < axis else spec.axis + index_rank - 1
    _pass(node, state, Spec(spec.layout, new_axis, spec.rank + index_rank - 1))


@rule("Constant", "ConstantOfShape", "Range", "RandomNormal", "RandomUniform", "RandomNormalLike",
      "RandomUniformLike", "EyeLike", "Size")
def no_channels(node: gs.Node, state: Analysis) -> None:
    """Outputs that carry no channels of their inputs (a Size or *Like node still reads one)."""
    if node.op == "Size":
        state.opaque(node, "counts the channels")


def unknown(node: gs.Node, state: Analysis) -> None:
    state.opaque(node, "not an operator the channel analysis knows")
