"""Models the tool refuses, or prunes only in part, said before any work is done.

Quantized models: their weights are integers with scales, and pruning them would need the
compensation solved in the float domain and requantized; the right order is to prune the
float model, then quantize it. Any quantization operator (QDQ pairs, QLinear*, *Integer,
onnxruntime's contrib ones), in the main graph, a control-flow body or a local function,
makes the model quantized.

Control flow: the chain analysis reads the main graph only, so a Conv/Gemm/MatMul inside an
If, Loop or Scan body is never pruned. subgraph_layers lists them, for the report's skip
list; a model with no layer pair outside such bodies is refused with that reason.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterator

import onnx

from ..errors import InputError, NothingToPruneError

QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger",
    # onnxruntime contrib operators (com.microsoft)
    "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits", "MatMulBnb4",
    "DynamicQuantizeLSTM", "QEmbedLayerNormalization",
})
LAYER_OPS = ("Conv", "Gemm", "MatMul")


def is_quantized_op(op_type: str) -> bool:
    return op_type in QUANTIZED_OPS or op_type.startswith(("QLinear", "QOrdered"))


def quantized_ops(model: onnx.ModelProto) -> Counter:
    """How many of each quantization operator `model` holds, subgraphs and functions included."""
    graphs = [model.graph]
    nodes = [node for graph in graphs for node, _ in _walk(graph, ())]
    for function in model.functions:
        for node in function.node:
            nodes.append(node)
            nodes.extend(inner for graph in _subgraphs(node) for inner, _ in _walk(graph, ()))
    return Counter(node.op_type for node in nodes if is_quantized_op(node.op_type))


def refuse_quantized(model: onnx.ModelProto) -> None:
    """InputError (exit 2) if `model` is quantized, naming the operators it holds."""
    found = quantized_ops(model)
    if found:
        ops = ", ".join(f"{count} {op}" for op, count in found.most_common())
        raise InputError(f"model is quantized ({ops}): prune the float model, then quantize the pruned one")


def subgraph_layers(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(layer, where) for every Conv, and every Gemm/MatMul with a constant weight, inside an
    If/Loop/Scan body: the layer's name (else its weight's, else its output's) and the
    control-flow nodes that hold it, outermost first, e.g. "If 'branch' (then_branch)"."""
    found = []
    outer_constants = _constants(model.graph)
    for node, holders in _walk(model.graph, ()):
        if holders and _is_layer(node, outer_constants | holders[-1][1]):
            found.append((_label(node), " > ".join(text for text, _ in holders)))
    return found


def refuse_unsupported(model: onnx.ModelProto) -> None:
    """Before any work: InputError for a quantized model; NothingToPruneError when the layers
    are inside control-flow bodies and fewer than two (a chain's producer and consumer) are
    outside them."""
    refuse_quantized(model)
    inside = subgraph_layers(model)
    if not inside:
        return
    constants = _constants(model.graph)
    outside = sum(1 for node in model.graph.node if _is_layer(node, constants))
    if outside < 2:
        holders = list(dict.fromkeys(where.split(" > ")[0].rsplit(" (", 1)[0] for _, where in inside))
        raise NothingToPruneError(
            f"no prunable layers outside control flow: {len(inside)} Conv/Gemm/MatMul layer(s) are inside "
            f"{', '.join(holders)}, whose bodies onnx-lbyl does not prune (e.g. {inside[0][0]!r} in {inside[0][1]})")


def _walk(graph: onnx.GraphProto, holders: tuple) -> Iterator[tuple[onnx.NodeProto, tuple]]:
    """Every node of `graph` and of its subgraphs, with the (description, constants in scope)
    of the control-flow nodes around it."""
    scope = holders[-1][1] if holders else frozenset()
    for node in graph.node:
        yield node, holders
        for attribute in node.attribute:
            for body in _attribute_graphs(attribute):
                text = f"{node.op_type} {_name(node)} ({attribute.name})"
                inner = (*holders, (text, scope | _constants(body)))
                yield from _walk(body, inner)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for attribute in node.attribute for g in _attribute_graphs(attribute)]


def _attribute_graphs(attribute: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attribute.type == onnx.AttributeProto.GRAPH:
        return [attribute.g]
    if attribute.type == onnx.AttributeProto.GRAPHS:
        return list(attribute.graphs)
    return []


def _constants(graph: onnx.GraphProto) -> frozenset[str]:
    names = {t.name for t in graph.initializer}
    names.update(out for node in graph.node if node.op_type == "Constant" for out in node.output)
    return frozenset(names)


def _is_layer(node: onnx.NodeProto, constants: frozenset[str]) -> bool:
    if node.op_type == "Conv":
        return True
    return node.op_type in LAYER_OPS and len(node.input) > 1 and node.input[1] in constants


def _label(node: onnx.NodeProto) -> str:
    """As graph.chains.node_label names a layer: its name, else its weight's, else its output's."""
    if node.name:
        return node.name
    if len(node.input) > 1 and node.input[1]:
        return node.input[1]
    return node.output[0] if node.output else node.op_type


def _name(node: onnx.NodeProto) -> str:
    if node.name:
        return repr(node.name)
    return f"(output {node.output[0]!r})" if node.output else "(unnamed)"
