"""Channel groups of an ONNX graph: which channels can go together, and what must change with them.

A dependency graph over channel axes, as Torch-Pruning's DepGraph builds one for PyTorch. The
nodes are visited in topological order; every tensor gets a `Spec` (its channel layout, see
groups.spaces, and where its channel axis is), and one rule per operator type (groups.rules)
says what the node does with the channels of its inputs:

- a *producer* (Conv, Gemm, MatMul, ConvTranspose with a constant weight) starts a new root: its
  output channels are rows of its weight;
- a *channel-wise* node (activations of every spelling, BatchNormalization, PRelu, pooling, Pad,
  Resize, depthwise Conv, elementwise ops with per-channel constants) passes the layout on and
  may own parameters that lose the same channels;
- a *coupling* (Add/Sub/Mul/Div of two tracked tensors, Concat, Split, Slice) ties, joins or
  cuts layouts;
- a *consumer* (the same weighted operators, on their data input) reads channels and can absorb
  what removed ones carried;
- anything else, a graph output, or a weight that cannot be rewritten *fixes* the channels it
  touches, with a reason the report shows.

The result (`analyse`) is one `Group` per class of tied channels: every slot that loses the
group's channels (weights, biases, per-channel constants, shape arguments) and every consumer
read, with offsets resolved after all cuts. Nothing here edits the graph or knows the maths.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from ..graph.chains import constant_value as constant  # noqa: F401  (the rules read constants through it)
from .spaces import ChannelSpaces, Layout


@dataclass(frozen=True)
class Spec:
    """Where a tensor's channels are: `layout` along axis `axis`.

    A flattened tensor (after Flatten/Reshape into a Gemm or MatMul) holds each channel as
    `inner` consecutive features, repeated `outer` times with stride width*inner: feature
    f = (o * width + c) * inner + i. Unflattened tensors have outer = inner = 1."""

    layout: Layout
    axis: int
    rank: int
    outer: int = 1
    inner: int = 1

    @property
    def flattened(self) -> bool:
        return self.outer != 1 or self.inner != 1


@dataclass(frozen=True)
class Slot:
    """Channels of a constant that go with a group: `tensor` along `axis` at `offset`;
    flattened features as in Spec (`total` = channels of the whole layout)."""

    node: gs.Node
    tensor: gs.Constant
    axis: int
    offset: int
    outer: int = 1
    inner: int = 1
    total: int = 0


@dataclass(frozen=True)
class Read:
    """A consumer reading the group's channels from `tensor` (its data input): input channels
    offset..offset+size of its weight, flattened as in Spec."""

    node: gs.Node
    tensor: gs.Variable
    offset: int
    outer: int = 1
    inner: int = 1
    total: int = 0
    axis: int = 1  # axis of `tensor` that holds the channels (before flattening)


@dataclass(frozen=True)
class ShapeEdit:
    """A shape argument that counts channels: Split sizes, Slice bounds, Pad amounts, Reshape
    and Resize targets. Entry `index` of input `input_index` of `node` loses `scale` for every
    removed channel of this group whose position in the counted layout lies in [lo, hi);
    `offset` is where the group's occurrence starts in that layout."""

    node: gs.Node
    input_index: int
    index: int
    lo: int
    hi: int
    offset: int
    scale: int = 1


@dataclass
class Group:
    """One class of tied channels. `reasons` is empty when the group can be pruned."""

    name: str
    channels: int
    producers: list[Slot] = field(default_factory=list)
    params: list[Slot] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    edits: list[ShapeEdit] = field(default_factory=list)
    channelwise: list[gs.Node] = field(default_factory=list)  # depthwise Convs whose MACs shrink too
    reasons: list[str] = field(default_factory=list)
    layer: bool = False  # produced by a layer with weights (so worth a line in the report)

    @property
    def prunable(self) -> bool:
        return not self.reasons


@dataclass
class _Use:
    kind: str  # producer, param, read, edit, depthwise, source
    node: gs.Node
    layout: Layout
    tensor: gs.Tensor | None = None
    axis: int = 0
    outer: int = 1
    inner: int = 1
    extra: tuple = ()


class Analysis:
    """State of one pass over a graph: specs per tensor, the spaces, and registered uses."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.spaces = ChannelSpaces()
        self.specs: dict[str, Spec] = {}
        self.uses: list[_Use] = []
        self.graph_inputs = {t.name for t in graph.inputs}
        self.graph_outputs = {t.name for t in graph.outputs}

    # -- helpers the rules use ---------------------------------------------------------
    def spec(self, tensor: gs.Tensor | None) -> Spec | None:
        if tensor is None or not tensor.name:
            return None
        return self.specs.get(tensor.name)

    def set(self, tensor: gs.Tensor, spec: Spec | None) -> None:
        if spec is not None:
            self.specs[tensor.name] = spec

    def new_root(self, channels: int, node: gs.Node, source: bool) -> int:
        root = self.spaces.new(channels)
        if not source:  # every root is either made by a node the rewrite can narrow, or fixed
            self.spaces.fix((root,), f"produced by {node.op} {label(node)}, which the tool cannot narrow")
        return root

    def use(self, kind: str, node: gs.Node, layout: Layout, tensor=None, axis: int = 0,
            outer: int = 1, inner: int = 1, extra: tuple = ()) -> None:
        self.uses.append(_Use(kind, node, layout, tensor, axis, outer, inner, extra))

    def fix(self, spec: Spec | None, reason: str) -> None:
        if spec is not None:
            self.spaces.fix(spec.layout, reason)

    def opaque(self, node: gs.Node, reason: str) -> None:
        """A node the tool does not see through: its inputs' channels stay whole. A layer with
        weights still gets (fixed) output channels, so the report says why it stays whole."""
        for tensor in node.inputs:
            self.fix(self.spec(tensor), f"read by {node.op} {label(node)}: {reason}")
        if node.op in WEIGHTED and node.outputs:
            shape = node.outputs[0].shape
            if shape is not None and len(shape) >= 2 and isinstance(shape[1], int):
                root = self.spaces.new(shape[1])
                self.spaces.fix((root,), reason)
                self.use("source", node, (root,))


WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def label(node: gs.Node) -> str:
    """A name a user can find in the model: the node name, else its weight's or output's name."""
    if node.name:
        return node.name
    if len(node.inputs) > 1 and node.inputs[1].name:
        return node.inputs[1].name
    return node.outputs[0].name if node.outputs else node.op


def analyse(graph: gs.Graph) -> list[Group]:
    """Every channel group of `graph` (shapes inferred beforehand), prunable or not, in the
    order their first producer appears. The graph is not modified."""
    from .rules import RULES, unknown  # rules import this module's types

    state = Analysis(graph)
    for tensor in graph.inputs:
        shape = tensor.shape
        if shape is not None and len(shape) >= 2 and isinstance(shape[1], int):
            root = state.spaces.new(shape[1])
            state.spaces.fix((root,), "channels of a graph input")
            state.set(tensor, Spec((root,), 1, len(shape)))
    for node in graph.nodes:
        rule = RULES.get(node.op, unknown)
        rule(node, state)
        for tensor in node.outputs:
            if tensor.name in state.graph_outputs:
                state.fix(state.spec(tensor), f"reaches graph output {tensor.name!r}")
    return _resolve(state)


def _resolve(state: Analysis) -> list[Group]:
    spaces = state.spaces
    groups: dict[int, Group] = {}
    order: list[int] = []

    def group_of(rep: int) -> Group:
        if rep not in groups:
            groups[rep] = Group(name="", channels=spaces.size[spaces.members[rep][0]])
            order.append(rep)
        return groups[rep]

    for use in state.uses:
        total = spaces.width(use.layout)
        for rep, offset, _size in spaces.occurrences(use.layout):
            group = group_of(rep)
            if use.kind == "producer":
                group.producers.append(Slot(use.node, use.tensor, use.axis, offset))
            elif use.kind == "param":
                group.params.append(Slot(use.node, use.tensor, use.axis, offset, use.outer, use.inner, total))
            elif use.kind == "read":
                group.reads.append(Read(use.node, use.tensor, offset, use.outer, use.inner, total, use.axis))
            elif use.kind == "edit":
                input_index, index, lo, hi = use.extra
                group.edits.append(ShapeEdit(use.node, input_index, index, lo, hi, offset, use.inner))
            elif use.kind == "depthwise":
                group.channelwise.append(use.node)
            elif use.kind == "source":
                group.layer = group.layer or use.node.op in WEIGHTED
                if not group.name:
                    group.name = label(use.node)
    result = []
    for rep in order:
        group = groups[rep]
        group.reasons = list(spaces.fixed.get(rep, []))
        if not group.producers and not group.reasons:
            group.reasons.append("no layer produces these channels")
        if not group.reads and not group.reasons:
            group.reasons.append("no layer reads these channels, so nothing would be saved downstream")
        if group.producers:  # named after its first producer, as chains are (with the range it holds)
            first = group.producers[0]
            group.name = label(first.node)
            if first.offset or group.channels != int(first.tensor.shape[first.axis]):
                group.name += f"[{first.offset}:{first.offset + group.channels}]"
            group.layer = True
        elif not group.name:
            group.name = label(group.reads[0].node) if group.reads else f"group{len(result)}"
        result.append(group)
    return result


def attach_shapes(graph: gs.Graph, model, input_shapes=()) -> None:
    """Give the graph's tensors the shapes ONNX shape inference finds (weights not passed
    through it: graph.shapes), where the import left them unknown."""
    from ..graph.shapes import inferred_value_info  # deferred: onnx shape inference

    try:
        inferred = inferred_value_info(model, input_shapes)
    except Exception:  # inference is best effort here; validation runs it strictly
        return
    tensors = graph.tensors()
    for info in list(inferred.value_info) + list(inferred.output):
        tensor = tensors.get(info.name)
        kind = info.type.tensor_type
        if not isinstance(tensor, gs.Variable) or not kind.HasField("shape"):
            continue
        if input_shapes or tensor.shape is None or any(not isinstance(d, int) for d in tensor.shape):
            tensor.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in kind.shape.dim]
