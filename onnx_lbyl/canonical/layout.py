"""NHWC exports (tf2onnx/Keras) wrap every layer in layout Transposes:

    Transpose(0,3,1,2) -> Conv -> Transpose(0,2,3,1) -> Mul/Add/Relu (in NHWC) -> Transpose(0,3,1,2) -> Conv

`cancel_transposes` removes such inverse pairs. Starting from a Transpose (perm p), it collects
the region of elementwise nodes that read its output, directly or through each other, and the
Transposes with the inverse perm that end the region. When the region's nodes are rewritten to
work in the layout before the first Transpose (a constant operand is padded to full rank and
permuted; a scalar stays as it is), each ending Transpose becomes a no-op and goes. Another
Transpose with the same perm p feeding the region (the two sides of an NHWC residual Add) joins
it as a second start. A region tensor that something else reads (a non-elementwise node, a
graph output) gets a Transpose(p) of its own so that reader still sees the layout it had; the
rewrite is made only when it removes more Transposes than it adds. The graph's inputs and
outputs keep their layout.

Elementwise means the op commutes with any permutation of axes: unary activations and maths,
Clip (its bounds are scalars), Cast, and the broadcasting binary and variadic ops whose other
operands are constants of rank at most the tensor's (or region tensors themselves).
"""
from __future__ import annotations

import numpy as np
import onnx

from ._graph import GraphIndex, attr

UNARY = frozenset({
    "Abs", "Ceil", "Celu", "Cos", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish",
    "Identity", "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu",
    "Sigmoid", "Sign", "Sin", "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu", "Cast",
})
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"})
SCALAR_OPERANDS = {"Clip": (1, 2)}  # slots whose constants are scalars by the op's definition


def _perm(node: onnx.NodeProto) -> list[int] | None:
    perm = attr(node, "perm")
    return list(perm) if perm is not None else None


def _movable(node: onnx.NodeProto) -> bool:
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return False
    return node.op_type in UNARY or node.op_type in BROADCASTING or node.op_type in SCALAR_OPERANDS


class _Region:
    def __init__(self, perm: list[int]) -> None:
        self.perm = perm
        self.entries: list[onnx.NodeProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.exits: list[onnx.NodeProto] = []
        self.tensors: set[str] = set()      # outputs of region nodes (rewritten to the inner layout)
        self.entry_outputs: dict[str, onnx.NodeProto] = {}
        self.escapes: list[str] = []         # region tensors read outside the region


def _is_inverse(p: list[int], q: list[int] | None) -> bool:
    return q is not None and len(q) == len(p) and all(p[q[i]] == i for i in range(len(p)))


def _operands(index: GraphIndex, node: onnx.NodeProto, region: _Region, rank: int):
    """The new starts (Transposes with the region's perm) that `node`'s operands need, or None
    if some operand can't be had in the inner layout."""
    joins = []
    for slot, name in enumerate(node.input):
        if not name or name in region.tensors or name in region.entry_outputs:
            continue
        if index.is_constant(name):
            if len(index.initializers[name].dims) > rank and slot not in SCALAR_OPERANDS.get(node.op_type, ()):
                return None
            continue
        producer = index.producer.get(name)
        if (producer is not None and producer.op_type == "Transpose" and _perm(producer) == region.perm
                and producer.domain in ("", "ai.onnx") and all(producer is not j for j in joins)):
            joins.append(producer)
            continue
        return None
    return joins


def _grow(index: GraphIndex, start: onnx.NodeProto) -> _Region | None:
    perm = _perm(start)
    if perm is None or perm == list(range(len(perm))):
        return None
    rank = len(perm)
    region = _Region(perm)
    region.entries.append(start)
    region.entry_outputs[start.output[0]] = start
    queue = [start.output[0]]
    inside: set[int] = set()
    waiting: list[onnx.NodeProto] = []  # elementwise readers with an operand not (yet) in the region

    def consider(reader: onnx.NodeProto) -> bool:
        joins = _operands(index, reader, region, rank)
        if joins is None:
            return False
        for producer in joins:
            region.entries.append(producer)
            region.entry_outputs[producer.output[0]] = producer
            queue.append(producer.output[0])
        inside.add(id(reader))
        region.nodes.append(reader)
        region.tensors.add(reader.output[0])
        queue.append(reader.output[0])
        return True

    while True:
        while queue:
            tensor = queue.pop(0)
            for reader in index.readers.get(tensor, []):
                if id(reader) in inside:
                    continue
                if reader.op_type == "Transpose" and reader.input[0] == tensor and _is_inverse(perm, _perm(reader)):
                    if id(reader) not in inside:
                        inside.add(id(reader))
                        region.exits.append(reader)
                elif _movable(reader) and not consider(reader):
                    waiting.append(reader)
        # x * Sigmoid(x): the Mul waits until the Sigmoid has joined
        progress = [r for r in waiting if id(r) not in inside and consider(r)]
        waiting = [r for r in waiting if id(r) not in inside]
        if not progress:
            break
    if not region.exits and not region.nodes:
        return None
    for node in region.nodes:
        tensor = node.output[0]
        if (tensor in index.graph_outputs or tensor in index.in_subgraphs
                or any(id(r) not in inside for r in index.readers.get(tensor, []))):
            region.escapes.append(tensor)
    return region


def _worth_it(index: GraphIndex, region: _Region) -> bool:
    """Fewer Transposes after than before; or as many, every start gone and elementwise nodes
    moved into the inner layout (the layout change pushed down towards its real reader, so a
    bias Add after a Conv sits next to it)."""
    inside = {id(n) for n in region.nodes} | {id(n) for n in region.exits}
    dead_entries = sum(
        1 for name, entry in region.entry_outputs.items()
        if all(id(r) in inside for r in index.readers.get(name, []))
        and name not in index.graph_outputs and name not in index.in_subgraphs)
    benefit = len(region.exits) + dead_entries - len(region.escapes)
    return benefit > 0 or (benefit == 0 and bool(region.nodes) and dead_entries == len(region.entries))


def _permuted(index: GraphIndex, name: str, rank: int, inverse: list[int]) -> str:
    """A constant operand in the inner layout: padded to full rank and permuted."""
    value = index.value(name)
    if value.size == 1 or value.ndim == 0:
        return name  # a scalar broadcasts the same in any layout (a 1-element tensor of rank <= r too)
    full = value.reshape((1,) * (rank - value.ndim) + value.shape).transpose(inverse)
    new = index.fresh_name(name)
    index.set_initializer(new, full)
    return new


def _apply(index: GraphIndex, region: _Region) -> None:
    graph = index.graph
    rank = len(region.perm)
    inverse = list(np.argsort(region.perm))
    old_constants: list[str] = []
    permuted: dict[str, str] = {}  # one permuted copy per constant, however many nodes read it
    # 1. region nodes read the entries' inputs and permuted constants
    for node in region.nodes:
        for slot, name in enumerate(node.input):
            if not name:
                continue
            if name in region.entry_outputs:
                node.input[slot] = region.entry_outputs[name].input[0]
            elif name not in region.tensors and index.is_constant(name) and node.op_type not in UNARY \
                    and slot not in SCALAR_OPERANDS.get(node.op_type, ()):
                if name not in permuted:
                    permuted[name] = _permuted(index, name, rank, inverse)
                new = permuted[name]
                if new != name:
                    old_constants.append(name)
                    node.input[slot] = new
    # 2. a region tensor read outside gets a new inner name and a Transpose back to its old layout
    for tensor in region.escapes:
        inner = index.fresh_name(tensor)
        producer = index.producer[tensor]
        producer.output[0] = inner
        for node in region.nodes + region.exits:
            for slot, name in enumerate(node.input):
                if name == tensor:
                    node.input[slot] = inner
        back = onnx.helper.make_node("Transpose", [inner], [tensor], perm=region.perm,
                                     name=index.fresh_name(f"{producer.name or tensor}_layout"))
        position = next(i for i, n in enumerate(graph.node) if n is producer)
        graph.node.insert(position + 1, back)
    # 3. the ending Transposes go: their readers read the region tensor directly
    remove = []
    for exit_node in region.exits:
        source, target = exit_node.input[0], exit_node.output[0]
        if source in region.entry_outputs:  # Transpose(p) then Transpose(p^-1) with nothing between
            source = region.entry_outputs[source].input[0]
            exit_node.input[0] = source
        if target in index.graph_outputs or target in index.in_subgraphs:
            exit_node.op_type = "Identity"  # keeps the graph output's name; removed later if it can be
            del exit_node.attribute[:]
            continue
        for node in graph.node:
            for slot, name in enumerate(node.input):
                if name == target:
                    node.input[slot] = source
        remove.append(exit_node)
    # 4. starts nobody reads any more
    index.remove_nodes(remove)
    dead = [entry for name, entry in region.entry_outputs.items()
            if index.reader_count(name) == 0]
    index.forget_value_info(region.tensors | {e.output[0] for e in region.exits})
    index.remove_nodes(dead)
    index.drop_unused_initializers(old_constants)


def cancel_transposes(model: onnx.ModelProto) -> tuple[int, int]:
    """Cancel inverse Transpose pairs around elementwise regions; returns (Transposes removed,
    elementwise nodes moved into the other layout)."""
    index = GraphIndex(model.graph)
    removed = moved = 0
    changed = True
    budget = 4 * len(model.graph.node) + 4  # each rewrite moves layout changes downstream: it ends
    while changed and budget:
        changed = False
        budget -= 1
        for node in list(model.graph.node):
            if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
                continue
            region = _grow(index, node)
            if region is None:
                continue
            if not _worth_it(index, region):
                continue
            before = sum(1 for n in model.graph.node if n.op_type == "Transpose")
            _apply(index, region)
            index.refresh()
            removed += before - sum(1 for n in model.graph.node if n.op_type == "Transpose")
            moved += len(region.nodes)
            changed = True
            break
    return removed, moved
