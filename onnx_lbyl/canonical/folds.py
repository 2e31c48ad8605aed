"""Per-channel arithmetic right after a Conv (or Gemm) folded into its weights and bias.

Exporters write a conv bias as a separate `Add` of a per-channel constant (Paddle2ONNX:
`Conv -> Add(Reshape(bias, [1, C, 1, 1]))`), and Keras/tf2onnx write an inference
BatchNormalization as `Mul(scale) -> Add(shift)` or `Sub(mean) -> Mul(scale) -> Add(beta)`.
The channel-group analysis wants the Conv to carry its own bias and the arithmetic gone:

- `fold_bias_add`: `Conv/Gemm -> Add(c)` or `-> Sub(c)` (the Conv output first) becomes the
  Conv's bias (added to the bias it already has).
- `fold_channel_scale`: `Conv -> Mul(s)` or `-> Div(s)` scales the Conv's output-channel
  filters and bias.

Each applies only when the arithmetic is channel-wise (its constant varies along the channel
axis alone, or is a scalar), the Conv/Gemm output has no other reader and is not a graph
output, and every tensor rewritten is a constant initializer read by this node alone (a
weight that is a graph input, computed, or shared is left alone). BatchNormalization nodes
are never touched: the default method reads their statistics. Arithmetic after anything
other than a Conv/Gemm is left as it is (the group analysis slices per-channel constants).

The two passes alternate until neither changes anything, so `Sub -> Mul -> Add` folds whole.
Arithmetic is done in float64 and written back in the weight's own dtype.
"""
from __future__ import annotations

import numpy as np
import onnx

from ._graph import FLOAT_TYPES, GraphIndex, attr, set_attr


def _per_channel(value: np.ndarray, rank: int, channels: int, axis: int = 1) -> np.ndarray | None:
    """`value` as a vector of length `channels` if, broadcast against a tensor of `rank` whose
    channel axis is `axis`, it varies along that axis only (or is constant); None otherwise."""
    if value.ndim > rank:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    for i, d in enumerate(full.shape):
        if i != axis and d != 1:
            return None
    if full.shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1).astype(np.float64), (channels,)).copy()


def _arith_after(index: GraphIndex, node: onnx.NodeProto, ops: tuple[str, ...]):
    """(reader, constant name, constant value) when the node's output is read by one `ops` node
    only, with the node's output as first input (for Sub/Div) and a constant as the other."""
    out = node.output[0]
    if out in index.graph_outputs:
        return None
    reader = index.only_reader(out)
    if reader is None or reader.op_type not in ops or reader.domain not in ("", "ai.onnx") or len(reader.input) != 2:
        return None
    if reader.input[0] == out:
        other = reader.input[1]
    elif reader.op_type in ("Add", "Mul"):
        other = reader.input[0]
    else:
        return None  # c - y or c / y: not an affine map of the output
    value = index.value(other)
    if value is None or other == out:
        return None
    return reader, other, value


def _weight_dims(index: GraphIndex, node: onnx.NodeProto, private: bool) -> list[int] | None:
    """The dims of a Conv/Gemm's constant float weight (read by this node alone if `private`);
    only the TensorProto's dims are read, never the data."""
    if node.domain not in ("", "ai.onnx") or len(node.input) < 2 or not index.is_constant(node.input[1]):
        return None
    if private and index.reader_count(node.input[1]) != 1:
        return None
    tensor = index.initializers[node.input[1]]
    return list(tensor.dims) if tensor.data_type in FLOAT_TYPES else None


def _bias(index: GraphIndex, node: onnx.NodeProto, slot: int, channels: int):
    """(name, float64 value) of the node's bias input at `slot`; (None, zeros) if it has none;
    None if it has one that cannot be rewritten in place."""
    if len(node.input) <= slot or not node.input[slot]:
        return None, np.zeros(channels)
    value = index.private_constant(node.input[slot])
    if value is None:
        return None
    return node.input[slot], value.astype(np.float64)


def _dtype(index: GraphIndex, name: str):
    return onnx.helper.tensor_dtype_to_np_dtype(index.initializers[name].data_type)


def _absorb(index: GraphIndex, node: onnx.NodeProto, reader: onnx.NodeProto, constant: str) -> None:
    """The node takes over the reader's output name; the reader and its constant go."""
    node.output[0] = reader.output[0]
    index.forget_value_info([reader.input[0]])
    index.remove_nodes([reader])
    index.drop_unused_initializers([constant])


def _set_bias(index: GraphIndex, node: onnx.NodeProto, name: str | None, value: np.ndarray, dtype) -> None:
    """Write the bias (input 2 of a Conv or Gemm), as a new initializer if it had none."""
    if name is None:
        name = index.fresh_name(f"{node.name or node.output[0]}_bias")
        if len(node.input) == 2:
            node.input.append(name)
        else:
            node.input[2] = name  # an empty optional input
    index.set_initializer(name, value.astype(dtype))


def fold_bias_add(model: onnx.ModelProto) -> int:
    """Fold `Conv -> Add(c)` / `Conv -> Sub(c)` (and the same after a Gemm) into the bias.
    Returns how many Adds/Subs were folded."""
    index = GraphIndex(model.graph)
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(model.graph.node):
            if node.op_type not in ("Conv", "Gemm"):
                continue
            found = _arith_after(index, node, ("Add", "Sub"))
            dims = _weight_dims(index, node, private=False) if found else None
            if dims is None or (node.op_type == "Gemm" and len(dims) != 2):
                continue
            if node.op_type == "Conv":
                rank, channels = len(dims), dims[0]
            else:
                rank, channels = 2, dims[0] if attr(node, "transB", 0) else dims[1]
            reader, constant, value = found
            dtype = _dtype(index, node.input[1])
            shift = _per_channel(value, rank, channels) if value.dtype == dtype else None
            current = _bias(index, node, 2, channels) if shift is not None else None
            if current is None:
                continue
            bias_name, bias = current
            if node.op_type == "Gemm":
                if bias_name is not None and bias.ndim > 1 and bias.shape[0] != 1:
                    continue  # a C that varies along the rows: leave it
                bias = np.broadcast_to(bias.reshape(-1) * float(attr(node, "beta", 1.0)), (channels,))
                set_attr(node, "beta", 1.0)
            sign = -1.0 if reader.op_type == "Sub" else 1.0
            _set_bias(index, node, bias_name, bias.reshape(-1) + sign * shift, dtype)
            _absorb(index, node, reader, constant)
            folded += 1
            changed = True
            break
    return folded


def fold_channel_scale(model: onnx.ModelProto) -> int:
    """Fold `Conv -> Mul(s)` / `Conv -> Div(s)` into the Conv's filters and bias.
    Returns how many Muls/Divs were folded."""
    index = GraphIndex(model.graph)
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(model.graph.node):
            if node.op_type != "Conv":
                continue
            found = _arith_after(index, node, ("Mul", "Div"))
            dims = _weight_dims(index, node, private=True) if found else None
            if dims is None:
                continue
            reader, constant, value = found
            weight_name, channels = node.input[1], dims[0]
            dtype = _dtype(index, weight_name)
            factor = _per_channel(value, len(dims), channels) if value.dtype == dtype else None
            if factor is None or (reader.op_type == "Div" and np.any(factor == 0)):
                continue
            current = _bias(index, node, 2, channels)
            if current is None:
                continue
            bias_name, bias = current
            apply = np.divide if reader.op_type == "Div" else np.multiply
            weight = index.value(weight_name)
            shape = (channels,) + (1,) * (weight.ndim - 1)
            index.set_initializer(weight_name, apply(weight.astype(np.float64), factor.reshape(shape)).astype(dtype))
            if bias_name is not None:
                index.set_initializer(bias_name, apply(bias.reshape(-1), factor).astype(dtype))
            _absorb(index, node, reader, constant)
            folded += 1
            changed = True
            break
    return folded


def fold_conv_arithmetic(model: onnx.ModelProto) -> tuple[int, int]:
    """Alternate both folds until neither applies; (bias Adds/Subs, Muls/Divs) folded."""
    adds = scales = 0
    while True:
        a = fold_bias_add(model)
        s = fold_channel_scale(model)
        adds, scales = adds + a, scales + s
        if not a and not s:
            return adds, scales
