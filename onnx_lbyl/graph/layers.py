"""One handler per operator type that can lose or absorb channels (as Torch-Pruning has one
pruning function per layer type): where its channel axes are, what makes a node unsafe to
rewrite, and how to read and write its weight and bias.

A *producer* loses output channels (Conv1 of a chain); a *consumer* loses the matching input
channels and absorbs what they carried (Conv2). Conv, Gemm and MatMul play both roles.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def weight_problem(tensor: gs.Tensor, graph_input_names: set[str], what: str) -> str:
    """Why `tensor` may not be rewritten, or '' if it may."""
    if tensor.name in graph_input_names:
        return f"{what} {tensor.name!r} is a graph input, so it may change at run time"
    if not isinstance(tensor, gs.Constant):
        return f"{what} {tensor.name!r} is computed in the graph, not an initializer"
    readers = len(tensor.outputs)
    if readers > 1:
        return f"{what} {tensor.name!r} is shared with {readers - 1} other node(s)"
    return ""


def has_input(node: gs.Node, index: int) -> bool:
    """Whether optional input `index` is present (ONNX marks an omitted one by an empty name)."""
    return len(node.inputs) > index and bool(node.inputs[index].name)


class LayerHandler:
    """Channel bookkeeping of one operator type; subclasses fill in the axes and checks."""

    op: str = ""

    def out_axis(self, node: gs.Node) -> int:
        """Axis of the weight that indexes output channels."""
        raise NotImplementedError

    def in_axis(self, node: gs.Node) -> int:
        """Axis of the weight that indexes input features."""
        raise NotImplementedError

    def problem(self, node: gs.Node, graph_input_names: set[str], role: str) -> str:
        """Why the node cannot take part in a chain, or ''. `role` prefixes messages."""
        if len(node.inputs) < 2:
            return f"{role}{node.op} has no weight input"
        problem = weight_problem(node.inputs[1], graph_input_names, f"{role}{node.op} weight")
        if problem:
            return problem
        if has_input(node, 2):
            return weight_problem(node.inputs[2], graph_input_names, f"{role}{node.op} bias")
        return ""

    def weight(self, node: gs.Node) -> np.ndarray:
        return np.asarray(node.inputs[1].values)

    def set_weight(self, node: gs.Node, values: np.ndarray) -> None:
        node.inputs[1].values = np.ascontiguousarray(values)

    def out_channels(self, node: gs.Node) -> int:
        return int(node.inputs[1].shape[self.out_axis(node)])  # the shape, without loading the values

    def in_features(self, node: gs.Node) -> int:
        return int(node.inputs[1].shape[self.in_axis(node)])

    def bias_tensor(self, node: gs.Node) -> gs.Constant | None:
        return node.inputs[2] if has_input(node, 2) else None

    def bias(self, node: gs.Node) -> np.ndarray | None:
        tensor = self.bias_tensor(node)
        return None if tensor is None else np.asarray(tensor.values).reshape(-1)

    def set_bias(self, node: gs.Node, values: np.ndarray, name: str) -> None:
        """Install a bias, creating an unshared initializer called `name` when there is none."""
        tensor = self.bias_tensor(node)
        if tensor is not None:
            tensor.values = np.ascontiguousarray(values.reshape(np.asarray(tensor.values).shape))
            return
        constant = gs.Constant(name, np.ascontiguousarray(values))
        while len(node.inputs) < 2:
            node.inputs.append(gs.Variable.empty())
        if len(node.inputs) > 2:
            node.inputs[2] = constant
        else:
            node.inputs.append(constant)


class ConvHandler(LayerHandler):
    op = "Conv"

    def out_axis(self, node: gs.Node) -> int:
        return 0

    def in_axis(self, node: gs.Node) -> int:
        return 1

    def problem(self, node: gs.Node, graph_input_names: set[str], role: str) -> str:
        group = int(node.attrs.get("group", 1))
        if group != 1:
            return f"{role}grouped/depthwise Conv (group={group}) is not pruned yet"
        return super().problem(node, graph_input_names, role)


class GemmHandler(LayerHandler):
    """Y = X W^T + C with transB=1 (PyTorch's Linear), Y = X W + C with transB=0."""

    op = "Gemm"

    def out_axis(self, node: gs.Node) -> int:
        return 0 if int(node.attrs.get("transB", 0)) else 1

    def in_axis(self, node: gs.Node) -> int:
        return 1 if int(node.attrs.get("transB", 0)) else 0

    def problem(self, node: gs.Node, graph_input_names: set[str], role: str) -> str:
        if int(node.attrs.get("transA", 0)):
            return f"{role}Gemm with transA=1 is not supported"
        if float(node.attrs.get("alpha", 1.0)) != 1.0 or float(node.attrs.get("beta", 1.0)) != 1.0:
            return f"{role}Gemm with alpha or beta other than 1 is not supported"
        problem = super().problem(node, graph_input_names, role)
        if problem:
            return problem
        bias = self.bias_tensor(node)
        if bias is not None and np.asarray(bias.values).size != self.out_channels(node):
            return f"{role}Gemm bias is not one value per output"
        return ""


class MatMulHandler(LayerHandler):
    """Y = X W with a constant 2-D W (K x N); its bias, if any, is a following Add."""

    op = "MatMul"

    def out_axis(self, node: gs.Node) -> int:
        return 1

    def in_axis(self, node: gs.Node) -> int:
        return 0

    def problem(self, node: gs.Node, graph_input_names: set[str], role: str) -> str:
        if len(node.inputs) != 2:
            return f"{role}MatMul must have two inputs"
        problem = weight_problem(node.inputs[1], graph_input_names, f"{role}MatMul weight")
        if problem:
            return problem
        if len(node.inputs[1].shape) != 2:
            return f"{role}MatMul weight is not a matrix"
        return ""

    def bias_tensor(self, node: gs.Node) -> gs.Constant | None:
        return None  # the bias of a MatMul lives in an Add node; chains carry it

    def set_bias(self, node: gs.Node, values: np.ndarray, name: str) -> None:
        raise NotImplementedError("a MatMul has no bias input; add to its Add instead")


HANDLERS: dict[str, LayerHandler] = {h.op: h for h in (ConvHandler(), GemmHandler(), MatMulHandler())}
