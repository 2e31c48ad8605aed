"""Finding Conv -> [BatchNormalization] -> Relu -> Conv chains whose middle can be narrowed.

One rule, written as the onnxscript rewriter writes its rules: `match_chain` walks the
pattern from a candidate Conv and either returns the matched nodes or the reason the
candidate does not qualify. The reasons go into the report, so a user sees why each Conv
was left alone.

Channels between the two Convs may only be removed when nothing else reads them: the
intermediate tensors must have exactly one consumer and must not be graph outputs (in a
ResNet this keeps every residual-coupled tensor at full width). Every weight that is
rewritten must be an initializer that is neither a graph input (it could be overridden at
run time) nor read by another node (rewriting it would change that node too).
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx_graphsurgeon as gs

BATCHNORM_PARAMS = ("scale", "B", "input_mean", "input_var")


@dataclass(frozen=True)
class Chain:
    """A matched Conv1 -> [BN] -> Relu -> Conv2 chain; Conv1's output channels can go."""

    conv1: gs.Node
    batchnorm: gs.Node | None
    relu: gs.Node
    conv2: gs.Node

    @property
    def name(self) -> str:
        return node_label(self.conv1)


@dataclass(frozen=True)
class Skipped:
    """A Conv that was looked at and left alone, with the reason in words."""

    node: str
    reason: str


def node_label(node: gs.Node) -> str:
    """A name a user can find in the model: the node name, else its weight's name."""
    if node.name:
        return node.name
    if len(node.inputs) > 1:
        return node.inputs[1].name
    return node.outputs[0].name


def find_chains(graph: gs.Graph, graph_input_names: set[str]) -> tuple[list[Chain], list[Skipped]]:
    """Every prunable chain, in graph (topological) order, and every Conv that is not one."""
    chains: list[Chain] = []
    skipped: list[Skipped] = []
    for node in graph.nodes:
        if node.op != "Conv":
            continue
        outcome = match_chain(node, graph, graph_input_names)
        if isinstance(outcome, Chain):
            chains.append(outcome)
        else:
            skipped.append(Skipped(node_label(node), outcome))
    return chains, skipped


def match_chain(conv1: gs.Node, graph: gs.Graph, graph_input_names: set[str]) -> Chain | str:
    """The chain that starts at `conv1`, or a one-line reason why there is none."""
    problem = _conv_problem(conv1, graph_input_names, "")
    if problem:
        return problem
    graph_outputs = {t.name for t in graph.outputs}

    tensor = conv1.outputs[0]
    consumer = _sole_consumer(tensor, graph_outputs)
    if isinstance(consumer, str):
        return f"its output {consumer}"
    batchnorm = None
    if consumer.op == "BatchNormalization":
        batchnorm = consumer
        if len(batchnorm.outputs) != 1 or batchnorm.inputs[0] is not tensor:
            return "its BatchNormalization is in training mode (several outputs)"
        for param in batchnorm.inputs[1:5]:
            problem = _weight_problem(param, graph_input_names, "BatchNormalization parameter")
            if problem:
                return problem
        tensor = batchnorm.outputs[0]
        consumer = _sole_consumer(tensor, graph_outputs)
        if isinstance(consumer, str):
            return f"its BatchNormalization output {consumer}"
    if consumer.op != "Relu":
        return f"it is followed by {consumer.op}, not Relu"
    relu = consumer

    tensor = relu.outputs[0]
    consumer = _sole_consumer(tensor, graph_outputs)
    if isinstance(consumer, str):
        return f"its Relu output {consumer}"
    if consumer.op != "Conv" or consumer.inputs[0] is not tensor:
        return f"its Relu output feeds {consumer.op}, not the data input of a Conv"
    conv2 = consumer
    problem = _conv_problem(conv2, graph_input_names, "next Conv: ")
    if problem:
        return problem
    if conv2.inputs[1].values.shape[1] != conv1.inputs[1].values.shape[0]:
        return "next Conv's input channels do not match its output channels"
    return Chain(conv1, batchnorm, relu, conv2)


def _conv_problem(conv: gs.Node, graph_input_names: set[str], prefix: str) -> str:
    group = int(conv.attrs.get("group", 1))
    if group != 1:
        return f"{prefix}grouped/depthwise Conv (group={group}) is not pruned yet"
    if len(conv.inputs) < 2:
        return f"{prefix}Conv has no weight input"
    for tensor, what in zip(conv.inputs[1:3], ("weight", "bias")):
        if what == "bias" and not tensor.name:  # an omitted optional input
            continue
        problem = _weight_problem(tensor, graph_input_names, f"{prefix}Conv {what}")
        if problem:
            return problem
    return ""


def _weight_problem(tensor: gs.Tensor, graph_input_names: set[str], what: str) -> str:
    """Why `tensor` may not be rewritten, or '' if it may."""
    if tensor.name in graph_input_names:
        return f"{what} {tensor.name!r} is a graph input, so it may change at run time"
    if not isinstance(tensor, gs.Constant):
        return f"{what} {tensor.name!r} is computed in the graph, not an initializer"
    readers = len(tensor.outputs)
    if readers > 1:
        return f"{what} {tensor.name!r} is shared with {readers - 1} other node(s)"
    return ""


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
