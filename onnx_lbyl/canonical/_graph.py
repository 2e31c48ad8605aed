"""A small index over a GraphProto for the hand-written passes: who produces and who reads each
tensor, which tensors are constants, and the bookkeeping every rewrite needs (fresh names,
replacing a node's output, dropping what became unused).

The passes edit the protobuf in place and rebuild the index after each change they make; the
graphs are small enough (thousands of nodes) that this costs milliseconds, and it keeps every
pass free of stale-index bugs.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16)


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    """Every tensor name a node's subgraphs (If/Loop/Scan bodies) mention."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for n in g.node:
                names.update(n.input)
                names.update(_subgraph_names(n))
    return names


class GraphIndex:
    """Producers, readers and constants of one graph (the main graph of a model)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.refresh()

    def refresh(self) -> None:
        g = self.graph
        self.graph_inputs = {v.name for v in g.input}
        self.graph_outputs = {v.name for v in g.output}
        # an initializer that is also a graph input may be overridden by the caller: not a constant
        self.initializers = {t.name: t for t in g.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        self.in_subgraphs: set[str] = set()
        for node in g.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.readers.setdefault(name, []).append(node)
            self.in_subgraphs |= _subgraph_names(node)
        self.names = (set(self.producer) | set(self.readers) | set(self.initializers)
                      | self.graph_inputs | self.graph_outputs)
        self._fresh = 0

    # ------------------------------------------------------------ questions

    def is_constant(self, name: str) -> bool:
        """An initializer the caller cannot override (not also a graph input)."""
        return name in self.initializers and name not in self.graph_inputs

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor, None if the tensor is computed or overridable."""
        if not self.is_constant(name):
            return None
        return numpy_helper.to_array(self.initializers[name])

    def reader_count(self, name: str) -> int:
        """How many node inputs read `name`, counting a graph output and subgraph uses as readers."""
        count = sum(list(n.input).count(name) for n in self.readers.get(name, []))
        return count + (name in self.graph_outputs) + (name in self.in_subgraphs)

    def only_reader(self, name: str) -> onnx.NodeProto | None:
        """The single node that reads `name` once, if nothing else (graph output, subgraph) does."""
        readers = self.readers.get(name, [])
        if len(readers) == 1 and self.reader_count(name) == 1:
            return readers[0]
        return None

    def private_constant(self, name: str) -> np.ndarray | None:
        """The value of a constant read by exactly one node input: safe to rewrite in place."""
        return self.value(name) if self.reader_count(name) == 1 else None

    # ------------------------------------------------------------ edits

    def fresh_name(self, base: str) -> str:
        """A tensor name used nowhere in the graph, deterministic for a given graph and base."""
        while True:
            self._fresh += 1
            name = f"{base}_canon{self._fresh}"
            if name not in self.names:
                self.names.add(name)
                return name

    def set_initializer(self, name: str, array: np.ndarray, like: onnx.TensorProto | None = None) -> None:
        """Create or overwrite the initializer `name` (in place, so its position is kept)."""
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
        self.forget_value_info([name])  # its shape may change
        if name in self.initializers:
            self.initializers[name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.initializers[name] = self.graph.initializer[-1]
        self.names.add(name)

    def remove_nodes(self, nodes: list[onnx.NodeProto]) -> None:
        """Delete nodes in place: references to the other nodes stay valid (extend() would copy)."""
        ids = {id(n) for n in nodes}
        for position in reversed([i for i, n in enumerate(self.graph.node) if id(n) in ids]):
            del self.graph.node[position]
        self.refresh()

    def drop_unused_initializers(self, names) -> None:
        """Remove those of `names` that are initializers nobody reads any more (not graph inputs)."""
        self.refresh()
        dead = {n for n in names if n in self.initializers and n not in self.graph_inputs
                and self.reader_count(n) == 0}
        if dead:
            kept = [t for t in self.graph.initializer if t.name not in dead]
            del self.graph.initializer[:]
            self.graph.initializer.extend(kept)
            self.refresh()

    def forget_value_info(self, names) -> None:
        """Drop value_info entries of tensors whose shape or existence a pass changed."""
        names = set(names)
        kept = [v for v in self.graph.value_info if v.name not in names]
        if len(kept) != len(self.graph.value_info):
            del self.graph.value_info[:]
            self.graph.value_info.extend(kept)


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 0


def remove_dead_nodes(index: GraphIndex, names) -> None:
    """Remove the producers of `names`, and then of their inputs, while nothing reads their
    outputs (not a graph output, not a subgraph); initializers they leave unused go too."""
    todo = list(names)
    dead_inits = []
    while todo:
        name = todo.pop()
        node = index.producer.get(name)
        if node is None:
            dead_inits.append(name)
            continue
        if node.domain not in ("", "ai.onnx") or any(index.reader_count(o) for o in node.output if o):
            continue
        inputs = [i for i in node.input if i]
        index.remove_nodes([node])
        index.forget_value_info(node.output)
        todo.extend(inputs)
    index.drop_unused_initializers(dead_inits)


def bypass(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """Remove a node that passes its (first) input through unchanged, keeping the names the
    graph's interface needs: its readers read its input, or, when its output is a graph output,
    its input's producer writes that name instead. False (nothing done) when neither is possible."""
    source, target = node.input[0], node.output[0]
    if target in index.in_subgraphs:
        return False
    if target in index.graph_outputs:
        producer = index.producer.get(source)
        if (producer is None or source in index.graph_outputs or source in index.in_subgraphs
                or index.reader_count(source) != 1):
            return False
        producer.output[list(producer.output).index(source)] = target
        index.forget_value_info([source])
    else:
        for reader in index.readers.get(target, []):
            for slot, name in enumerate(reader.input):
                if name == target:
                    reader.input[slot] = source
        index.forget_value_info([target])
    index.remove_nodes([node])
    return True
