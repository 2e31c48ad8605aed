"""Reading a chain's parameters out of the graph and writing the pruned ones back.

The only edits are to initializer values: Conv1 loses output channels (and its bias and
BatchNormalization entries with them), Conv2 loses the same input channels after absorbing
what they carried. No node is added or removed, so the graph keeps its structure.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..numerics.folding import ChannelLayer
from .chains import Chain


def _has_bias(conv: gs.Node) -> bool:
    return len(conv.inputs) > 2 and bool(conv.inputs[2].name)


def channel_layer(chain: Chain) -> ChannelLayer:
    """The parameters of Conv1's output channels (and of the BN after it) as float64 arrays."""
    conv1 = chain.conv1
    weight = conv1.inputs[1].values
    bias = conv1.inputs[2].values if _has_bias(conv1) else None
    if chain.batchnorm is None:
        return ChannelLayer.without_batchnorm(weight, bias)
    bn = chain.batchnorm
    gamma, beta, mean, var = (t.values for t in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    return ChannelLayer.with_batchnorm(weight, bias, gamma, beta, mean, var, eps)


def next_layer_weight(chain: Chain) -> np.ndarray:
    return chain.conv2.inputs[1].values


def apply_pruning(chain: Chain, kept: np.ndarray, next_weight: np.ndarray) -> None:
    """Keep only channels `kept` of Conv1 (and its BN) and install Conv2's new weight.

    `next_weight` already has the removed input channels folded in and dropped.
    """
    conv1 = chain.conv1
    _take(conv1.inputs[1], kept)
    if _has_bias(conv1):
        _take(conv1.inputs[2], kept)
    if chain.batchnorm is not None:
        for param in chain.batchnorm.inputs[1:5]:
            _take(param, kept)
    chain.conv2.inputs[1].values = np.ascontiguousarray(next_weight)


def _take(constant: gs.Constant, kept: np.ndarray) -> None:
    constant.values = np.ascontiguousarray(np.asarray(constant.values)[kept])
