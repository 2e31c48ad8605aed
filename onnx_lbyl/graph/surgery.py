"""Reading a chain's parameters out of the graph and writing the pruned ones back.

The only edits are to initializer values: Conv1 loses output channels (and its bias and
BatchNormalization entries with them), Conv2 loses the same input channels after absorbing
what they carried. No node is added or removed, so the graph keeps its structure; the one
addition is a bias initializer for a Conv2 that had none, when a method shifts its bias
(`add_to_next_bias`).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..numerics.folding import ChannelLayer
from .chains import Chain
from .layers import HANDLERS


def channel_layer(chain: Chain) -> ChannelLayer:
    """The parameters of the producer's output channels (and of the BN after it) as float64
    arrays, filters one per row whatever the operator's weight layout."""
    handler = HANDLERS[chain.producer.op]
    weight = np.moveaxis(handler.weight(chain.producer), handler.out_axis(chain.producer), 0)
    bias = handler.bias(chain.producer)
    if chain.bias_add is not None:
        bias = np.asarray(_bias_add_constant(chain).values).reshape(-1)
    if chain.batchnorm is None:
        return ChannelLayer.without_batchnorm(weight, bias)
    bn = chain.batchnorm
    gamma, beta, mean, var = (t.values for t in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    return ChannelLayer.with_batchnorm(weight, bias, gamma, beta, mean, var, eps)


def next_layer_weight(chain: Chain) -> np.ndarray:
    """The consumer's weight in Conv layout (out, channels, ...): every consumer looks like a
    Conv to the mathematics, with a flattened channel's block of features as trailing axis."""
    handler = HANDLERS[chain.consumer.op]
    weight = handler.weight(chain.consumer)
    if chain.consumer.op == "Conv":
        return weight
    features_first = np.moveaxis(weight, handler.in_axis(chain.consumer), 0)  # (C*block, out)
    channels = features_first.shape[0] // chain.block
    if chain.channels_last:  # feature index = position * C + channel
        return features_first.reshape(chain.block, channels, -1).transpose(2, 1, 0)
    return features_first.reshape(channels, chain.block, -1).transpose(2, 0, 1)


def _from_conv_layout(chain: Chain, folded: np.ndarray) -> np.ndarray:
    """Inverse of next_layer_weight for the narrowed weight."""
    if chain.consumer.op == "Conv":
        return folded
    handler = HANDLERS[chain.consumer.op]
    order = (2, 1, 0) if chain.channels_last else (1, 2, 0)
    features_first = folded.transpose(order).reshape(-1, folded.shape[0])
    return np.moveaxis(features_first, 0, handler.in_axis(chain.consumer))


def apply_pruning(chain: Chain, kept: np.ndarray, next_weight: np.ndarray) -> None:
    """Keep only channels `kept` of the producer (its bias and BN too) and install the
    consumer's new weight.

    `next_weight` is in the layout next_layer_weight gave, with the removed input channels
    already folded in and dropped.
    """
    producer = chain.producer
    handler = HANDLERS[producer.op]
    handler.set_weight(producer, np.take(handler.weight(producer), kept, axis=handler.out_axis(producer)))
    bias = handler.bias_tensor(producer)
    for tensor in ([bias] if bias is not None else []) + ([_bias_add_constant(chain)] if chain.bias_add else []):
        values = np.asarray(tensor.values)
        tensor.values = np.ascontiguousarray(np.take(values, kept, axis=values.ndim - 1))
    if chain.batchnorm is not None:
        for param in chain.batchnorm.inputs[1:5]:
            _take(param, kept)
    HANDLERS[chain.consumer.op].set_weight(chain.consumer, _from_conv_layout(chain, next_weight))


def _bias_add_constant(chain: Chain) -> gs.Constant:
    return next(t for t in chain.bias_add.inputs if isinstance(t, gs.Constant))


def _take(constant: gs.Constant, kept: np.ndarray) -> None:
    constant.values = np.ascontiguousarray(np.asarray(constant.values)[kept])


def add_to_next_bias(chain: Chain, delta: np.ndarray, graph: gs.Graph) -> None:
    """b2 += delta on the consumer (computed in float64, stored in the bias's dtype).

    A Conv or Gemm without a bias gets a new, unshared initializer; a MatMul adds to the
    constant of the Add that follows it, or gets such an Add. Chain matching guarantees an
    existing bias is an unshared initializer, so changing it changes nothing else.
    """
    consumer = chain.consumer
    handler = HANDLERS[consumer.op]
    delta = np.asarray(delta, dtype=np.float64)
    target = _following_bias(consumer) if consumer.op == "MatMul" else handler.bias_tensor(consumer)
    if target is not None:
        old = np.asarray(target.values)
        target.values = np.ascontiguousarray((old.astype(np.float64) + delta.reshape(old.shape)).astype(old.dtype))
        return
    dtype = handler.weight(consumer).dtype
    name = unique_name(graph, f"{consumer.inputs[1].name}_bias")
    constant = gs.Constant(name, np.ascontiguousarray(delta.astype(dtype)))
    if consumer.op != "MatMul":
        handler.set_bias(consumer, constant.values, name)
        return
    product = consumer.outputs[0]
    unbiased = gs.Variable(unique_name(graph, f"{product.name}_unbiased"), dtype=product.dtype)
    consumer.outputs = [unbiased]
    graph.nodes.append(gs.Node("Add", name=unique_name(graph, f"{consumer.name or name}_bias_add"),
                               inputs=[unbiased, constant], outputs=[product]))
    graph.toposort()


def _following_bias(matmul: gs.Node) -> gs.Constant | None:
    """The constant of an Add that alone reads a MatMul's output and adds one value per output."""
    readers = list(matmul.outputs[0].outputs)
    if len(readers) != 1 or readers[0].op != "Add":
        return None
    others = [t for t in readers[0].inputs if t is not matmul.outputs[0]]
    if len(others) != 1 or not isinstance(others[0], gs.Constant) or len(others[0].outputs) != 1:
        return None
    outputs = HANDLERS["MatMul"].out_channels(matmul)
    return others[0] if np.asarray(others[0].values).size == outputs else None


def unique_name(graph: gs.Graph, base: str) -> str:
    """`base`, or `base_N` with the smallest N that no tensor or node of `graph` is called."""
    taken = set(graph.tensors().keys()) | {node.name for node in graph.nodes}
    name, index = base, 1
    while name in taken:
        name, index = f"{base}_{index}", index + 1
    return name
