"""Finding producer -> [bias] -> [BatchNormalization] -> activation -> [channel-wise ops] ->
consumer chains whose middle can be narrowed.

One rule, written as the onnxscript rewriter writes its rules: `match_chain` walks the
pattern from a candidate producer and either returns the matched nodes or the reason the
candidate does not qualify. The reasons go into the report, so a user sees why each layer
was left alone.

Channels between the two layers may only be removed when nothing else reads them: every
intermediate tensor must have exactly one consumer and must not be a graph output (in a
ResNet this keeps every residual-coupled tensor at full width). Every weight that is
rewritten must be an initializer that is neither a graph input (it could be overridden at
run time) nor read by another node (rewriting it would change that node too).

Exactness (MATH.md §7): the compensation identity holds through Relu and through
channel-wise linear ops (Identity, Dropout at inference, zero Pad, average pooling,
Flatten into a Gemm/MatMul). MaxPool and Clip (ReLU6) break it; chains through them are
matched only when the caller allows that approximation, and they carry its name.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .layers import HANDLERS, weight_problem

CHANNELWISE_EXACT = ("Identity", "Dropout", "AveragePool", "GlobalAveragePool", "Pad")
CHANNELWISE_APPROXIMATE = {"MaxPool": "maxpool", "GlobalMaxPool": "maxpool"}
FLATTENING = ("Flatten", "Reshape")
APPROXIMATION_HELP = {
    "maxpool": "MaxPool between the activation and the next layer (max does not commute with sums)",
    "relu6": "Clip(0, 6)/ReLU6 as the activation (not positively homogeneous above 6)",
}
APPROXIMATIONS = tuple(APPROXIMATION_HELP)


@dataclass(frozen=True)
class Chain:
    """A matched chain: `producer`'s output channels can go, `consumer` absorbs them.

    `block` is how many consumer input features each channel feeds (1 for a Conv; H*W when
    the channels were flattened into a Gemm/MatMul); they are consecutive, or with
    `channels_last` every `channels`-th feature. `approximations` names every step that
    makes the compensation approximate rather than exact.
    """

    producer: gs.Node
    bias_add: gs.Node | None
    batchnorm: gs.Node | None
    activation: gs.Node
    between: tuple[gs.Node, ...]
    consumer: gs.Node
    block: int = 1
    approximations: tuple[str, ...] = ()
    channels_last: bool = False  # flattened after an NCHW->NHWC Transpose (Keras/tf2onnx)

    @property
    def name(self) -> str:
        return node_label(self.producer)


@dataclass(frozen=True)
class Skipped:
    """A layer that was looked at and left alone, with the reason in words."""

    node: str
    reason: str


def node_label(node: gs.Node) -> str:
    """A name a user can find in the model: the node name, else its weight's name."""
    if node.name:
        return node.name
    if len(node.inputs) > 1:
        return node.inputs[1].name
    return node.outputs[0].name


def find_chains(
    graph: gs.Graph, graph_input_names: set[str], allow: frozenset[str] = frozenset()
) -> tuple[list[Chain], list[Skipped]]:
    """Every prunable chain, in graph (topological) order, and every candidate that is not.

    Conv nodes are always candidates; Gemm and MatMul nodes are reported as skipped only
    when they have a weight a chain could rewrite (a classifier head is not news).
    """
    chains: list[Chain] = []
    skipped: list[Skipped] = []
    for node in graph.nodes:
        if node.op not in HANDLERS:
            continue
        outcome = match_chain(node, graph, graph_input_names, allow)
        if isinstance(outcome, Chain):
            chains.append(outcome)
        elif node.op == "Conv" or not outcome.startswith(_QUIET_PREFIXES):
            skipped.append(Skipped(node_label(node), outcome))
    return chains, skipped


_QUIET_PREFIXES = ("its output is a graph output", "its Add output is a graph output", "MatMul weight", "Gemm weight")


def match_chain(
    producer: gs.Node, graph: gs.Graph, graph_input_names: set[str], allow: frozenset[str] = frozenset()
) -> Chain | str:
    """The chain that starts at `producer`, or a one-line reason why there is none."""
    handler = HANDLERS[producer.op]
    problem = handler.problem(producer, graph_input_names, "")
    if problem:
        return problem
    graph_outputs = {t.name for t in graph.outputs}
    channels = handler.out_channels(producer)
    approximations: list[str] = []

    tensor = producer.outputs[0]
    step = _sole_consumer(tensor, graph_outputs)
    if isinstance(step, str):
        return f"its output {step}"

    bias_add = None
    if producer.op == "MatMul" and step.op == "Add":
        constant = _other_input(step, tensor)
        if constant is None or weight_problem(constant, graph_input_names, "Add bias"):
            return "its Add is not a bias (a constant, unshared initializer)"
        if np.asarray(constant.values).size != channels:
            return "its Add is not a bias with one value per output"
        bias_add, tensor = step, step.outputs[0]
        step = _sole_consumer(tensor, graph_outputs)
        if isinstance(step, str):
            return f"its Add output {step}"

    batchnorm = None
    if step.op == "BatchNormalization":
        batchnorm = step
        if len(batchnorm.outputs) != 1 or batchnorm.inputs[0] is not tensor:
            return "its BatchNormalization is in training mode (several outputs)"
        for param in batchnorm.inputs[1:5]:
            problem = weight_problem(param, graph_input_names, "BatchNormalization parameter")
            if problem:
                return problem
        tensor = batchnorm.outputs[0]
        step = _sole_consumer(tensor, graph_outputs)
        if isinstance(step, str):
            return f"its BatchNormalization output {step}"

    if step.op == "Relu":
        activation = step
    elif step.op == "Clip" and _clip_bounds(step)[0] == 0.0:
        if "relu6" not in allow:
            return "its activation is Clip/ReLU6, which is not positively homogeneous (allow 'relu6' to prune approximately)"
        activation = step
        approximations.append("relu6")
    else:
        return f"it is followed by {step.op}, not Relu"

    tensor = activation.outputs[0]
    between: list[gs.Node] = []
    flattened = channels_last = False
    while True:
        step = _sole_consumer(tensor, graph_outputs)
        if isinstance(step, str):
            return f"its {between[-1].op if between else activation.op} output {step}"
        if step.op in HANDLERS:
            break
        if flattened:
            return f"after flattening it feeds {step.op}, not a Gemm or MatMul"
        if channels_last and step.op not in FLATTENING:
            return f"after a Transpose to channels-last it feeds {step.op}, not a flatten"
        problem = _channelwise_problem(step, tensor, graph_input_names)
        if step.op in CHANNELWISE_APPROXIMATE:
            name = CHANNELWISE_APPROXIMATE[step.op]
            if name not in allow:
                return f"its Relu output goes through {step.op}, which does not commute with sums (allow '{name}' to prune approximately)"
            approximations.append(name)
        elif step.op in FLATTENING:
            flattened = True
        elif step.op == "Transpose" and list(step.attrs.get("perm", [])) == [0, 2, 3, 1]:
            channels_last = True  # must be followed by a flatten
        elif step.op not in CHANNELWISE_EXACT:
            return f"its {between[-1].op if between else activation.op} output feeds {step.op}, not a layer that can absorb channels"
        if problem:
            return problem
        between.append(step)
        tensor = step.outputs[0]

    consumer = step
    if consumer.inputs[0] is not tensor:
        return f"its channels reach the {consumer.op} as its weight, not its data input"
    consumer_handler = HANDLERS[consumer.op]
    if consumer.op == "Conv" and int(consumer.attrs.get("group", 1)) != 1:
        return ("next Conv is grouped/depthwise (an expand/depthwise/project block): the removed "
                "channels would pass through per-channel filters, so no exact compensation exists")
    problem = consumer_handler.problem(consumer, graph_input_names, f"next {consumer.op}: ")
    if problem:
        return problem
    features = consumer_handler.in_features(consumer)
    if features % channels or (not flattened and features != channels):
        return f"next {consumer.op} reads {features} features, which do not match {channels} channels"
    return Chain(producer, bias_add, batchnorm, activation, tuple(between), consumer,
                 features // channels, tuple(approximations), channels_last)


def _channelwise_problem(node: gs.Node, tensor: gs.Variable, graph_input_names: set[str]) -> str:
    """Why a node between the activation and the consumer is not a per-channel op we can keep."""
    if node.inputs[0] is not tensor:
        return f"its channels reach {node.op} other than as its data input"
    if node.op == "Dropout":
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            return "its Dropout mask is used"
        if _optional_input(node, 2) is not None and not _constant_false(node.inputs[2]):
            return "its Dropout may run in training mode"
    elif node.op == "Pad":
        return _pad_problem(node)
    elif node.op == "Flatten":
        if int(node.attrs.get("axis", 1)) != 1:
            return "its Flatten does not flatten from axis 1"
    elif node.op == "Reshape":
        shape = constant_value(_optional_input(node, 1))
        if shape is None or list(shape.reshape(-1)[1:]) != [-1]:
            return "its Reshape is not a constant [batch, -1] flatten"
    return ""


def _pad_problem(node: gs.Node) -> str:
    if node.attrs.get("mode", "constant") not in ("constant", b"constant"):
        return "its Pad is not constant padding"
    if len(node.inputs) > 1:  # opset >= 11: pads, constant_value and axes are inputs
        pads = constant_value(node.inputs[1])
        if pads is None:
            return "its Pad amounts are not constant"
        pads = pads.reshape(-1)
        value_tensor = _optional_input(node, 2)
        value = constant_value(value_tensor)
        if value_tensor is not None and (value is None or np.any(value != 0)):
            return "its Pad value is not zero"
        if _optional_input(node, 3) is not None:
            return "its Pad names axes explicitly"
    else:
        pads = np.asarray(node.attrs.get("pads", []))
        if float(node.attrs.get("value", 0.0)) != 0.0:
            return "its Pad value is not zero"
    rank = pads.size // 2
    if rank >= 2 and (pads[0] or pads[1] or pads[rank] or pads[rank + 1]):
        return "its Pad pads the batch or channel axis"
    return ""


def _clip_bounds(node: gs.Node) -> tuple[float | None, float | None]:
    """(min, max) of a Clip, from attributes (opset < 11) or constant inputs."""
    if "min" in node.attrs or "max" in node.attrs:
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    bounds: list[float | None] = []
    for index in (1, 2):
        tensor = _optional_input(node, index)
        value = constant_value(tensor)
        if tensor is not None and value is None:
            return None, None
        bounds.append(None if value is None else float(value.reshape(-1)[0]))
    return bounds[0], bounds[1]


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of an initializer or of a Constant node's output; None if computed."""
    if tensor is None or not tensor.name:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    producers = list(tensor.inputs)
    if len(producers) == 1 and producers[0].op == "Constant" and "value" in producers[0].attrs:
        value = producers[0].attrs["value"]
        return np.asarray(value.values if isinstance(value, gs.Constant) else value)
    return None


def _optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    return node.inputs[index] if len(node.inputs) > index and node.inputs[index].name else None


def _constant_false(tensor: gs.Tensor) -> bool:
    value = constant_value(tensor)
    return value is not None and not bool(value.reshape(-1)[0])


def _other_input(node: gs.Node, tensor: gs.Tensor) -> gs.Constant | None:
    others = [t for t in node.inputs if t is not tensor]
    return others[0] if len(others) == 1 and isinstance(others[0], gs.Constant) else None


def _sole_consumer(tensor: gs.Variable, graph_outputs: set[str]) -> gs.Node | str:
    """The only node reading `tensor`, or a phrase saying why there is not exactly one."""
    if tensor.name in graph_outputs:
        return "is a graph output"
    readers = list(tensor.outputs)
    if not readers:
        return "is not used"
    if len(readers) > 1:
        ops = ", ".join(sorted({n.op for n in readers}))
        return f"also feeds other nodes ({ops}), e.g. a residual Add"
    return readers[0]
