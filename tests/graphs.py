"""Small ONNX models of the constructs real exports contain, for the channel-group analysis.

Each builder names one construct (and where it occurs in real exports), takes a seed and returns
a ModelProto that passes `onnx.checker.check_model(full_check=True)`. Built with onnx.helper and
NumPy only (no torch), so every test can use them. Conventions:

  input `x`: float32 with a dynamic batch dimension `batch` and a small static rest
             (NCHW 3x8x8 unless the construct needs another layout);
  weights:   Conv/Gemm/MatMul He-scaled N(0, 2/fan_in); biases N(0, 0.1);
             BatchNormalization gamma U(0.5, 1.5), beta N(0, 0.2), mean N(0, 0.2), var U(0.5, 1.5);
  widths:    8 to 16 channels, so a test runs a model in milliseconds;
  names:     a node and the tensor it produces share a meaningful name ("conv1", "se_fc1"),
             a weight is "<node>.weight", "<node>.bias", ...;
  opset:     17 unless the construct needs another (Gelu 20, Paddle-style Constant weights 11),
             some builders take `opset` to build the other spellings of one operator
             (Split's sizes as attribute before 13, ReduceMean's axes as input from 18).

`BUILDERS` names every variant (`"hardswish_clip"`, `"activation_prelu"`, ...) as a
zero-argument callable, so tests can parametrize over all of them.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SIZE = 8  # spatial size of the 2-D inputs
INT64_MAX = np.iinfo(np.int64).max


class _Graph:
    """Appends nodes and initializers; a node's output tensor takes the node's name.

    `self.ch` records the channel count of each tensor so a layer only says how many output
    channels it wants.
    """

    def __init__(self, seed: int | np.random.Generator, opset: int = OPSET) -> None:
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.ch: dict[str, int] = {}

    # --- plumbing ---------------------------------------------------------------------------
    def input(self, shape: list, name: str = "x", elem: int = TensorProto.FLOAT, ch_axis: int = 1) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        if len(shape) > ch_axis:
            self.ch[name] = shape[ch_axis]
        return name

    def init(self, name: str, array, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def ints(self, name: str, values) -> str:
        return self.init(name, np.asarray(values, dtype=np.int64), np.int64)

    def node(self, op: str, inputs: list[str], name: str, ch: int | None = None,
             outputs: list[str] | None = None, domain: str | None = None, **attrs) -> str:
        outputs = outputs or [name]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        for out in outputs:
            self.ch[out] = ch if ch is not None else self.ch.get(inputs[0], 0)
        return outputs[0]

    def he(self, shape: tuple, fan_in: int) -> np.ndarray:
        return self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)

    def bias(self, n: int) -> np.ndarray:
        return self.rng.normal(0.0, 0.1, n)

    # --- layers -----------------------------------------------------------------------------
    def conv(self, x: str, name: str, out: int, k: int = 3, stride: int = 1, group: int = 1,
             bias: bool = True, dims: int = 2, pad: int | None = None) -> str:
        """A Conv with He-initialised weight [out, c_in/group, k...], 'same' padding by default."""
        c_in = self.ch[x]
        kernel = (k,) * dims
        w = self.he((out, c_in // group, *kernel), c_in // group * k ** dims)
        inputs = [x, self.init(f"{name}.weight", w)]
        if bias:
            inputs.append(self.init(f"{name}.bias", self.bias(out)))
        return self.node("Conv", inputs, name, ch=out, kernel_shape=list(kernel),
                         strides=[stride] * dims, pads=[k // 2 if pad is None else pad] * (2 * dims), group=group)

    def bn(self, x: str, name: str) -> str:
        n, r = self.ch[x], self.rng
        params = {"scale": r.uniform(0.5, 1.5, n), "bias": r.normal(0, 0.2, n),
                  "mean": r.normal(0, 0.2, n), "var": r.uniform(0.5, 1.5, n)}
        inputs = [x, *(self.init(f"{name}.{key}", value) for key, value in params.items())]
        return self.node("BatchNormalization", inputs, name, epsilon=1e-5)

    def conv_bn(self, x: str, name: str, out: int, k: int = 3, stride: int = 1, group: int = 1,
                dims: int = 2) -> str:
        """Conv (no bias) -> BatchNormalization, the way PyTorch exports with BN kept."""
        return self.bn(self.conv(x, name, out, k, stride, group, bias=False, dims=dims), f"{name}_bn")

    def scalar(self, name: str, value: float) -> str:
        return self.init(name, np.array(value))

    def act(self, x: str, kind: str, name: str) -> str:
        """The activation `kind` as exporters spell it; the last node is named `name`."""
        if kind in ("relu", "tanh", "sigmoid", "softplus"):
            op = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softplus": "Softplus"}[kind]
            return self.node(op, [x], name)
        if kind == "relu6":
            return self.node("Clip", [x, self.scalar(f"{name}.min", 0.0), self.scalar(f"{name}.max", 6.0)], name)
        if kind == "leaky_relu":
            return self.node("LeakyRelu", [x], name, alpha=0.1)
        if kind == "elu":
            return self.node("Elu", [x], name, alpha=1.0)
        if kind == "prelu":
            slope = self.rng.uniform(0.05, 0.3, (self.ch[x], 1, 1))
            return self.node("PRelu", [x, self.init(f"{name}.slope", slope)], name)
        if kind == "gelu":
            if self.opset < 20:
                raise ValueError("the Gelu operator needs opset 20 or newer")
            return self.node("Gelu", [x], name)
        if kind == "gelu_erf":  # torch.onnx before opset 20: x * 0.5 * (1 + erf(x / sqrt(2)))
            d = self.node("Div", [x, self.scalar(f"{name}.sqrt2", math.sqrt(2.0))], f"{name}_div")
            e = self.node("Erf", [d], f"{name}_erf")
            a = self.node("Add", [e, self.scalar(f"{name}.one", 1.0)], f"{name}_add")
            m = self.node("Mul", [x, a], f"{name}_mul")
            return self.node("Mul", [m, self.scalar(f"{name}.half", 0.5)], name)
        if kind == "silu":  # torch.onnx's SiLU: x * Sigmoid(x)
            s = self.node("Sigmoid", [x], f"{name}_sigmoid")
            return self.node("Mul", [x, s], name)
        if kind == "hardswish":
            if self.opset < 14:
                raise ValueError("the HardSwish operator needs opset 14 or newer")
            return self.node("HardSwish", [x], name)
        if kind == "hardswish_hardsigmoid":  # torch.onnx before opset 14
            s = self.node("HardSigmoid", [x], f"{name}_hardsigmoid", alpha=1.0 / 6.0, beta=0.5)
            return self.node("Mul", [x, s], name)
        if kind == "hardswish_clip":  # hand-written / Keras: x * relu6(x + 3) / 6
            a = self.node("Add", [x, self.scalar(f"{name}.three", 3.0)], f"{name}_add")
            c = self.node("Clip", [a, self.scalar(f"{name}.min", 0.0), self.scalar(f"{name}.max", 6.0)], f"{name}_clip")
            m = self.node("Mul", [x, c], f"{name}_mul")
            return self.node("Div", [m, self.scalar(f"{name}.six", 6.0)], name)
        raise ValueError(f"unknown activation {kind!r}")

    def conv_bn_act(self, x: str, name: str, out: int, act: str, k: int = 3, stride: int = 1,
                    group: int = 1, dims: int = 2) -> str:
        return self.act(self.conv_bn(x, name, out, k, stride, group, dims), act, f"{name}_{act}")

    def gemm_head(self, x: str, name: str = "fc", classes: int = 10) -> str:
        """GlobalAveragePool -> Flatten -> Gemm(transB=1), torchvision's classifier."""
        g = self.node("GlobalAveragePool", [x], "gap")
        f = self.node("Flatten", [g], "flatten", axis=1)
        c = self.ch[f]
        w = self.init(f"{name}.weight", self.he((classes, c), c))
        return self.node("Gemm", [f, w, self.init(f"{name}.bias", self.bias(classes))], name, ch=classes, transB=1)

    def reduce_mean(self, x: str, name: str, axes: list[int]) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.ints(f"{name}.axes", axes)], name, ch=1, keepdims=1)
        return self.node("ReduceMean", [x], name, ch=1, axes=axes, keepdims=1)

    def model(self, outputs: list[str], name: str, opsets: dict[str, int] | None = None) -> onnx.ModelProto:
        """The model, its output types and shapes filled in by ONNX shape inference."""
        graph = helper.make_graph(self.nodes, name, self.inputs,
                                  [onnx.ValueInfoProto(name=o) for o in outputs], self.inits)
        imports = [helper.make_opsetid("", self.opset)]
        imports += [helper.make_opsetid(d, v) for d, v in (opsets or {}).items()]
        model = helper.make_model(graph, opset_imports=imports, producer_name="tests.graphs")
        model.ir_version = helper.find_min_ir_version_for(imports)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        model.graph.ClearField("output")
        model.graph.output.extend(inferred.graph.output)
        onnx.checker.check_model(model, full_check=True)
        return model


def _image(g: _Graph, channels: int = 3) -> str:
    return g.input(["batch", channels, SIZE, SIZE])


# --- 1-3: activations -------------------------------------------------------------------------
def silu_chain(seed=0, opset: int = OPSET) -> onnx.ModelProto:
    """Conv -> BN -> SiLU (x * Sigmoid(x)) -> Conv: EfficientNet, YOLOv5/v8, every torch SiLU
    export (torch.onnx has no SiLU operator)."""
    g = _Graph(seed, opset)
    y = g.conv_bn_act(_image(g), "conv1", 8, "silu")
    return g.model([g.conv(y, "conv2", 12)], "silu_chain")


HARDSWISH_SPELLINGS = ("op", "hardsigmoid", "clip")


def hardswish_chain(seed=0, spelling: str = "op") -> onnx.ModelProto:
    """Conv -> BN -> hard-swish -> Conv (MobileNetV3). spelling: "op" = HardSwish (torch.onnx,
    opset 14+), "hardsigmoid" = x * HardSigmoid(x; 1/6, 0.5) (torch.onnx before opset 14),
    "clip" = x * Clip(x + 3, 0, 6) / 6 (Keras/tf2onnx, hand-written models)."""
    act = {"op": "hardswish", "hardsigmoid": "hardswish_hardsigmoid", "clip": "hardswish_clip"}[spelling]
    g = _Graph(seed)
    y = g.conv_bn_act(_image(g), "conv1", 8, act)
    return g.model([g.conv(y, "conv2", 12)], f"hardswish_{spelling}")


ACTIVATIONS = ("relu", "relu6", "leaky_relu", "prelu", "elu", "tanh", "sigmoid", "gelu", "gelu_erf", "softplus")


def activation_chain(seed=0, op: str = "relu", opset: int | None = None) -> onnx.ModelProto:
    """Conv -> BN -> ACT -> Conv for one elementwise activation: Relu (ResNet), Clip(0, 6)
    (ReLU6, MobileNetV2), LeakyRelu (YOLOv3/Darknet, GANs), PRelu with a per-channel slope
    [C, 1, 1] (face recognition, ESPNet), Elu, Tanh, Sigmoid, Gelu (the opset-20 operator,
    so the default opset is 20 for it), Gelu in Erf form (torch.onnx before opset 20), Softplus
    (Mish's inner part)."""
    g = _Graph(seed, opset or (20 if op == "gelu" else OPSET))
    y = g.conv_bn_act(_image(g), "conv1", 8, op)
    return g.model([g.conv(y, "conv2", 12)], f"activation_{op}")


# --- 4-6: residual streams --------------------------------------------------------------------
def residual_basic_block(seed=0) -> onnx.ModelProto:
    """Stem Conv -> BN -> Relu, two ResNet basic blocks with identity shortcuts (Add, Relu),
    GlobalAveragePool -> Flatten -> Gemm (ResNet-18/34, CIFAR ResNets). The residual stream is
    one channel group: the stem's and both blocks' second Convs produce it, the blocks' first
    Convs and the Gemm read it."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "stem", 8, "relu")
    for i in (1, 2):
        y = g.conv_bn_act(x, f"block{i}_conv1", 8, "relu")
        y = g.conv_bn(y, f"block{i}_conv2", 8)
        x = g.node("Relu", [g.node("Add", [y, x], f"block{i}_add")], f"block{i}_relu")
    return g.model([g.gemm_head(x)], "residual_basic_block")


def bottleneck_block(seed=0, stride: int = 1) -> onnx.ModelProto:
    """Stem, then a ResNet-50 bottleneck: 1x1 -> 3x3 (stride on the 3x3, v1.5) -> 1x1 expanding
    to 16, Added to a projection-shortcut 1x1 Conv -> BN (first block of every ResNet-50
    stage); then Relu and a 1x1 Conv. Both branches of the Add are produced by a Conv."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "stem", 8, "relu")
    y = g.conv_bn_act(x, "block_conv1", 4, "relu", k=1)
    y = g.conv_bn_act(y, "block_conv2", 4, "relu", k=3, stride=stride)
    y = g.conv_bn(y, "block_conv3", 16, k=1)
    s = g.conv_bn(x, "block_downsample", 16, k=1, stride=stride)
    z = g.node("Relu", [g.node("Add", [y, s], "block_add")], "block_relu")
    return g.model([g.conv(z, "head", 8, k=1)], "bottleneck_block")


def inverted_residual(seed=0, residual: bool = True, act: str = "relu6") -> onnx.ModelProto:
    """Two MobileNetV2 inverted residuals: expand 1x1 -> BN -> act -> depthwise 3x3
    (group = C) -> BN -> act -> project 1x1 -> BN (linear), plus the residual Add when shapes
    match (residual=True: 8 -> 8 twice; residual=False: 8 -> 12 -> 16, no Add, as the first
    block of a stage); then a 1x1 Conv -> BN -> act -> GAP -> Gemm head. act: "relu6"
    (MobileNetV2), "hardswish" / "relu" (MobileNetV3)."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "stem", 8, act)
    outs = (8, 8) if residual else (12, 16)
    for i, out in enumerate(outs, start=1):
        hidden = 4 * g.ch[x]
        y = g.conv_bn_act(x, f"ir{i}_expand", hidden, act, k=1)
        y = g.conv_bn_act(y, f"ir{i}_dw", hidden, act, k=3, group=hidden)
        y = g.conv_bn(y, f"ir{i}_project", out, k=1)
        x = g.node("Add", [x, y], f"ir{i}_add") if g.ch[x] == out else y
    x = g.conv_bn_act(x, "last", 16, act, k=1)
    return g.model([g.gemm_head(x)], "inverted_residual")


# --- 7-10: couplings ------------------------------------------------------------------------
def squeeze_excitation(seed=0, gate: str = "hardsigmoid") -> onnx.ModelProto:
    """Conv -> BN -> Relu -> squeeze-and-excitation (GlobalAveragePool -> 1x1 Conv -> Relu ->
    1x1 Conv -> gate -> Mul with the feature map) -> Conv. gate "hardsigmoid" (MobileNetV3,
    torchvision's Hardsigmoid exports as HardSigmoid(1/6, 0.5)) or "sigmoid" (EfficientNet,
    SE-ResNet). The Mul couples the SE's output channels to the feature map's."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "conv1", 16, "relu")
    s = g.node("GlobalAveragePool", [x], "se_pool")
    s = g.node("Relu", [g.conv(s, "se_fc1", 4, k=1)], "se_relu")
    s = g.conv(s, "se_fc2", 16, k=1)
    if gate == "hardsigmoid":
        s = g.node("HardSigmoid", [s], "se_gate", alpha=1.0 / 6.0, beta=0.5)
    else:
        s = g.node("Sigmoid", [s], "se_gate")
    y = g.node("Mul", [x, s], "se_scale")
    return g.model([g.conv(y, "conv2", 8)], f"squeeze_excitation_{gate}")


def concat_branches(seed=0, include_input: bool = False) -> onnx.ModelProto:
    """Stem, two Conv branches (1x1 and 3x3) of one tensor Concatenated on axis 1, then a 1x1
    Conv (Inception, CSPNet, YOLO necks). include_input: the block input is a third part of
    the Concat (DenseNet, CSP's shortcut part); the stem's channels then sit at offset 0."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "stem", 8, "relu")
    a = g.conv_bn_act(x, "branch_a", 6, "relu", k=1)
    b = g.conv_bn_act(x, "branch_b", 6, "relu", k=3)
    parts = [x, a, b] if include_input else [a, b]
    c = g.node("Concat", parts, "concat", ch=sum(g.ch[p] for p in parts), axis=1)
    return g.model([g.conv(c, "fuse", 8, k=1)], "concat_branches")


def split_c2f(seed=0, slicer: str = "split", opset: int = OPSET) -> onnx.ModelProto:
    """YOLOv8's C2f: 1x1 Conv -> BN -> SiLU, split on axis 1 into two halves, the second half
    through a residual bottleneck (two 3x3 Conv -> BN -> SiLU, Add), Concat of both halves and
    the bottleneck's output, 1x1 Conv. slicer "split": Split with its sizes as an input
    (opset 13+) or attribute (before 13); "slice": two Slice on axis 1 (`x[:, :8]`,
    `x[:, 8:]`, the second ending at INT64_MAX as torch exports it)."""
    g = _Graph(seed, opset)
    x = g.conv_bn_act(_image(g), "stem", 16, "silu")
    x = g.conv_bn_act(x, "cv1", 16, "silu", k=1)
    if slicer == "split":
        halves = ["split_0", "split_1"]
        if opset >= 13:
            g.node("Split", [x, g.ints("split.sizes", [8, 8])], "split", ch=8, outputs=halves, axis=1)
        else:
            g.node("Split", [x], "split", ch=8, outputs=halves, axis=1, split=[8, 8])
    else:
        axes = g.ints("slice.axes", [1])
        halves = [g.node("Slice", [x, g.ints(f"slice_{i}.starts", [start]), g.ints(f"slice_{i}.ends", [end]), axes],
                         f"slice_{i}", ch=8)
                  for i, (start, end) in enumerate([(0, 8), (8, INT64_MAX)])]
    y = g.conv_bn_act(halves[1], "m0_cv1", 8, "silu")
    y = g.conv_bn_act(y, "m0_cv2", 8, "silu")
    y = g.node("Add", [halves[1], y], "m0_add")
    c = g.node("Concat", [*halves, y], "concat", ch=24, axis=1)
    y = g.conv_bn_act(c, "cv2", 16, "silu", k=1)
    return g.model([y], f"c2f_{slicer}")


def sppf(seed=0) -> onnx.ModelProto:
    """YOLOv5/v8's SPPF: 1x1 Conv -> BN -> SiLU, MaxPool(5, stride 1, pad 2) three times in
    sequence, Concat of the four tensors (same channels, four offsets), 1x1 Conv. Every part of
    the Concat carries the same channels, so cv1's channels are read at four offsets."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "stem", 16, "silu")
    x = g.conv_bn_act(x, "cv1", 8, "silu", k=1)
    pools = [x]
    for i in range(1, 4):
        pools.append(g.node("MaxPool", [pools[-1]], f"pool{i}", kernel_shape=[5, 5], strides=[1, 1], pads=[2] * 4))
    c = g.node("Concat", pools, "concat", ch=32, axis=1)
    return g.model([g.conv_bn_act(c, "cv2", 16, "silu", k=1)], "sppf")


# --- 11-14: other producers and layouts ----------------------------------------------------
def conv_transpose_head(seed=0) -> onnx.ModelProto:
    """Conv -> BN -> Relu -> ConvTranspose(k 2, stride 2) -> Relu -> Conv (U-Net decoders,
    YOLOv8-seg's proto head, DCGAN). ConvTranspose's weight is [C_in, C_out / group, k, k]:
    its output channels are axis 1, its input channels axis 0."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "conv1", 8, "relu")
    w = g.init("up.weight", g.he((8, 8, 2, 2), 8))
    u = g.node("ConvTranspose", [x, w, g.init("up.bias", g.bias(8))], "up", ch=8,
               kernel_shape=[2, 2], strides=[2, 2])
    u = g.node("Relu", [u], "up_relu")
    return g.model([g.conv(u, "conv2", 4)], "conv_transpose_head")


def conv1d_chain(seed=0) -> onnx.ModelProto:
    """Conv1d -> BN -> Relu -> Conv1d on [batch, 3, 16] (audio / keyword spotting, time
    series, wav2vec feature encoders): 3-D weights [C_out, C_in, k]."""
    g = _Graph(seed)
    x = g.input(["batch", 3, 16])
    y = g.conv_bn_act(x, "conv1", 8, "relu", dims=1)
    return g.model([g.conv(y, "conv2", 8, dims=1)], "conv1d_chain")


def transformer_mlp(seed=0, residual: bool = True) -> onnx.ModelProto:
    """A transformer block's MLP on [batch, 4 tokens, 8 dims] (ViT, BERT as torch.onnx exports
    nn.Linear on 3-D input): MatMul(W1 [8, 32]) -> Add(b1) -> Gelu (Erf form) -> MatMul(W2) ->
    Add(b2), plus the residual Add with the input. The channel axis is the last one."""
    g = _Graph(seed)
    x = g.input(["batch", 4, 8], ch_axis=2)
    h = g.node("MatMul", [x, g.init("fc1.weight", g.he((8, 32), 8))], "fc1_matmul", ch=32)
    h = g.node("Add", [g.init("fc1.bias", g.bias(32)), h], "fc1_add", ch=32)  # torch puts the bias first
    h = g.act(h, "gelu_erf", "gelu")
    h = g.node("MatMul", [h, g.init("fc2.weight", g.he((32, 8), 32))], "fc2_matmul", ch=8)
    h = g.node("Add", [g.init("fc2.bias", g.bias(8)), h], "fc2_add", ch=8)
    if residual:
        h = g.node("Add", [x, h], "residual_add")
    return g.model([h], "transformer_mlp")


def nhwc_keras(seed=0) -> onnx.ModelProto:
    """A Keras model converted by tf2onnx: NHWC input [batch, 8, 8, 3], each Conv wrapped in
    Transpose(0,3,1,2) / Transpose(0,2,3,1), BatchNormalization decomposed into per-channel
    Mul and Add constants of shape [C] applied in NHWC, Relu, and Flatten (NHWC order:
    features are (h, w, c) with c fastest) -> MatMul -> Add head."""
    g = _Graph(seed)
    x = g.input(["batch", SIZE, SIZE, 3], ch_axis=3)
    for i, out in enumerate((8, 8), start=1):
        t = g.node("Transpose", [x], f"conv{i}_to_nchw", perm=[0, 3, 1, 2])
        y = g.node("Transpose", [g.conv(t, f"conv{i}", out)], f"conv{i}_to_nhwc", perm=[0, 2, 3, 1])
        scale = g.rng.uniform(0.5, 1.5, out) / np.sqrt(g.rng.uniform(0.5, 1.5, out) + 1e-3)
        y = g.node("Mul", [y, g.init(f"bn{i}.mul", scale)], f"bn{i}_mul")
        y = g.node("Add", [y, g.init(f"bn{i}.add", g.rng.normal(0, 0.2, out))], f"bn{i}_add")
        x = g.node("Relu", [y], f"relu{i}")
    f = g.node("Flatten", [x], "flatten", ch=8 * SIZE * SIZE, axis=1)
    n = g.ch[f]
    y = g.node("MatMul", [f, g.init("dense.weight", g.he((n, 10), n))], "dense_matmul", ch=10)
    return g.model([g.node("Add", [y, g.init("dense.bias", g.bias(10))], "dense_add")], "nhwc_keras")


# --- 15-17: unusual storage -----------------------------------------------------------------
def constant_weights(seed=0, opset: int = 11) -> onnx.ModelProto:
    """The SiLU chain with every weight a `Constant` node instead of an initializer (Paddle2ONNX,
    some tf2onnx and hand-edited graphs), opset 11. Same numbers as silu_chain(seed)."""
    model = silu_chain(seed, opset=opset)
    graph = model.graph
    constants = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
                 for t in graph.initializer]
    nodes = constants + list(graph.node)
    graph.ClearField("initializer")
    graph.ClearField("node")
    graph.node.extend(nodes)
    model.producer_name = "tests.graphs (Constant weights)"
    onnx.checker.check_model(model, full_check=True)
    return model


def if_subgraph(seed=0) -> onnx.ModelProto:
    """Conv -> Relu -> Conv inside the then-branch of an `If` whose condition is the bool graph
    input `cond` (scripted torch models, tf2onnx control flow, detection post-processing);
    the else-branch is one 1x1 Conv. The weights are main-graph initializers the branches
    read from the outer scope."""
    g = _Graph(seed)
    x = _image(g)
    cond = g.input([], name="cond", elem=TensorProto.BOOL)
    main_nodes = g.nodes
    g.nodes = []
    y = g.node("Relu", [g.conv(x, "then_conv1", 8)], "then_relu")
    y = g.conv(y, "then_conv2", 8)
    out_shape = ["batch", 8, SIZE, SIZE]
    then_graph = helper.make_graph(g.nodes, "then_branch", [],
                                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, out_shape)])
    g.nodes = []
    e = g.conv(x, "else_conv", 8, k=1)
    else_graph = helper.make_graph(g.nodes, "else_branch", [],
                                   [helper.make_tensor_value_info(e, TensorProto.FLOAT, out_shape)])
    g.nodes = main_nodes
    out = g.node("If", [cond], "if", ch=8, then_branch=then_graph, else_branch=else_graph)
    return g.model([out], "if_subgraph")


QUANTIZED_KINDS = ("qdq", "qlinear", "integer")


def _quantize_weight(w: np.ndarray, dtype=np.int8) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8 quantisation, as onnxruntime's quantizer does."""
    scale = np.abs(w.reshape(len(w), -1)).max(axis=1) / 127.0
    return np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(dtype), scale


def quantized(seed=0, kind: str = "qdq") -> onnx.ModelProto:
    """Conv -> Relu -> Conv quantised the three ways onnxruntime's quantizer writes it.
    "qdq": QuantizeLinear/DequantizeLinear pairs on activations, int8 per-channel weights and
    int32 biases behind DequantizeLinear (axis 0), float Convs (the QDQ format, TensorRT, the
    ONNX model zoo's int8 models); "qlinear": QLinearConv with uint8 activations, int8
    per-channel weights, int32 bias (the QOperator format; the Relu is fused into the output
    zero point); "integer": DynamicQuantizeLinear -> ConvInteger (uint8 weights, zero point
    128) -> Cast -> Mul by the scales -> Add bias (dynamic quantisation)."""
    g = _Graph(seed)
    x = _image(g)
    ws = [g.he((8, 3, 3, 3), 27), g.he((8, 8, 3, 3), 72)]
    bs = [g.bias(8), g.bias(8)]
    x_scale, act_scale, out_scale = 8.0 / 255, 6.0 / 255, 8.0 / 255
    if kind == "qdq":
        def qdq(t: str, name: str, scale: float, zp: int) -> str:
            s, z = g.scalar(f"{name}.scale", scale), g.init(f"{name}.zero_point", np.array(zp), np.uint8)
            return g.node("DequantizeLinear", [g.node("QuantizeLinear", [t, s, z], f"{name}_q"), s, z], f"{name}_dq")
        t = qdq(x, "x", x_scale, 128)
        for i, (w, b, in_scale) in enumerate(zip(ws, bs, (x_scale, act_scale)), start=1):
            wq, wscale = _quantize_weight(w)
            name = f"conv{i}"
            w_dq = g.node("DequantizeLinear", [g.init(f"{name}.weight_q", wq, np.int8),
                                               g.init(f"{name}.weight_scale", wscale),
                                               g.init(f"{name}.weight_zero_point", np.zeros(8), np.int8)],
                          f"{name}_weight_dq", axis=0)
            bscale = in_scale * wscale
            b_dq = g.node("DequantizeLinear", [g.init(f"{name}.bias_q", np.round(b / bscale), np.int32),
                                               g.init(f"{name}.bias_scale", bscale),
                                               g.init(f"{name}.bias_zero_point", np.zeros(8), np.int32)],
                          f"{name}_bias_dq", axis=0)
            t = g.node("Conv", [t, w_dq, b_dq], name, ch=8, kernel_shape=[3, 3], pads=[1] * 4)
            if i == 1:
                t = qdq(g.node("Relu", [t], "relu1"), "relu1", act_scale, 0)
            else:
                t = qdq(t, "y", out_scale, 128)
        return g.model([t], "quantized_qdq")
    if kind == "qlinear":
        scales = [g.scalar("x.scale", x_scale), g.scalar("relu1.scale", act_scale), g.scalar("y.scale", out_scale)]
        zps = [g.init("x.zero_point", np.array(128), np.uint8), g.init("relu1.zero_point", np.array(0), np.uint8),
               g.init("y.zero_point", np.array(128), np.uint8)]
        t = g.node("QuantizeLinear", [x, scales[0], zps[0]], "x_q")
        for i, (w, b, in_scale) in enumerate(zip(ws, bs, (x_scale, act_scale)), start=1):
            wq, wscale = _quantize_weight(w)
            name = f"conv{i}"
            inputs = [t, scales[i - 1], zps[i - 1], g.init(f"{name}.weight_q", wq, np.int8),
                      g.init(f"{name}.weight_scale", wscale), g.init(f"{name}.weight_zero_point", np.zeros(8), np.int8),
                      scales[i], zps[i], g.init(f"{name}.bias_q", np.round(b / (in_scale * wscale)), np.int32)]
            t = g.node("QLinearConv", inputs, name, ch=8, kernel_shape=[3, 3], pads=[1] * 4)
        return g.model([g.node("DequantizeLinear", [t, scales[2], zps[2]], "y_dq")], "quantized_qlinear")
    if kind == "integer":
        t = x
        for i, (w, b) in enumerate(zip(ws, bs), start=1):
            name = f"conv{i}"
            wscale = np.abs(w).max() / 127.0
            wq = np.clip(np.round(w / wscale) + 128, 0, 255)
            outs = [f"{name}_input_q", f"{name}_input_scale", f"{name}_input_zero_point"]
            g.node("DynamicQuantizeLinear", [t], f"{name}_input_quant", outputs=outs)
            c = g.node("ConvInteger", [outs[0], g.init(f"{name}.weight_q", wq, np.uint8), outs[2],
                                       g.init(f"{name}.weight_zero_point", np.array(128), np.uint8)],
                       f"{name}_int", ch=8, kernel_shape=[3, 3], pads=[1] * 4)
            c = g.node("Cast", [c], f"{name}_cast", to=TensorProto.FLOAT)
            s = g.node("Mul", [outs[1], g.scalar(f"{name}.weight_scale", wscale)], f"{name}_scale")
            c = g.node("Mul", [c, s], f"{name}_rescale", ch=8)
            t = g.node("Add", [c, g.init(f"{name}.bias", b.reshape(8, 1, 1))], name)
            if i == 1:
                t = g.node("Relu", [t], "relu1")
        return g.model([t], "quantized_integer")
    raise ValueError(f"unknown quantized kind {kind!r}")


# --- 18-20: normalisations, groups, readers -------------------------------------------------
def convnext_block(seed=0, norm: str = "transpose", opset: int = OPSET) -> onnx.ModelProto:
    """A ConvNeXt stage: patchify stem Conv(k 2, stride 2) and one block: 7x7 depthwise Conv ->
    LayerNorm over channels -> 1x1 Conv (x4) -> Gelu (Erf form, or the operator at opset 20+)
    -> 1x1 Conv -> layer scale (Mul by a [C, 1, 1] constant) -> residual Add; GAP -> Gemm head.
    norm "transpose": Transpose to NHWC -> LayerNormalization(axis=-1) -> Transpose back
    (torchvision's LayerNorm2d); "reducemean": the channels-first LayerNorm spelled out as
    ReduceMean(axis 1), Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul, Add (the official
    ConvNeXt / many detection backbones; ReduceMean's axes become an input at opset 18)."""
    g = _Graph(seed, opset)
    x = g.conv(_image(g), "stem", 16, k=2, stride=2, pad=0)
    y = g.conv(x, "dwconv", 16, k=7, group=16)
    c = g.ch[y]
    gamma, beta = g.rng.uniform(0.5, 1.5, c), g.rng.normal(0, 0.2, c)
    if norm == "transpose":
        t = g.node("Transpose", [y], "norm_to_nhwc", perm=[0, 2, 3, 1])
        t = g.node("LayerNormalization", [t, g.init("norm.weight", gamma), g.init("norm.bias", beta)], "norm",
                   axis=-1, epsilon=1e-6)
        y = g.node("Transpose", [t], "norm_to_nchw", perm=[0, 3, 1, 2])
    else:
        u = g.reduce_mean(y, "norm_mean", [1])
        d = g.node("Sub", [y, u], "norm_sub", ch=c)
        v = g.reduce_mean(g.node("Pow", [d, g.scalar("norm.two", 2.0)], "norm_pow"), "norm_var", [1])
        s = g.node("Sqrt", [g.node("Add", [v, g.scalar("norm.eps", 1e-6)], "norm_add_eps")], "norm_std")
        n = g.node("Div", [d, s], "norm_div")
        n = g.node("Mul", [g.init("norm.weight", gamma.reshape(c, 1, 1)), n], "norm_mul", ch=c)
        y = g.node("Add", [n, g.init("norm.bias", beta.reshape(c, 1, 1))], "norm")
    y = g.conv(y, "pwconv1", 4 * c, k=1)
    y = g.act(y, "gelu" if opset >= 20 else "gelu_erf", "gelu")
    y = g.conv(y, "pwconv2", c, k=1)
    y = g.node("Mul", [y, g.init("layer_scale", g.rng.uniform(0.1, 1.0, (c, 1, 1)))], "layer_scale_mul")
    y = g.node("Add", [x, y], "residual_add")
    return g.model([g.gemm_head(y)], f"convnext_block_{norm}")


def grouped_conv(seed=0, groups: int = 2) -> onnx.ModelProto:
    """Conv -> BN -> Relu -> Conv with group=2 (neither depthwise nor dense: ResNeXt, ShuffleNet,
    RegNet) -> BN -> Relu -> Conv. Removing a channel of the grouped Conv's input or output
    touches one group only, and every group must keep the same width."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "conv1", 8, "relu")
    x = g.conv_bn_act(x, "conv2", 8, "relu", group=groups)
    return g.model([g.conv(x, "conv3", 8)], "grouped_conv")


FIXED_READERS = ("softmax", "reducemean", "reshape", "shuffle")


def fixed_channel_readers(seed=0, reader: str = "softmax") -> onnx.ModelProto:
    """Conv -> BN -> Relu -> Conv whose output channels are read by an operator that needs them
    whole, so conv2 may lose none (conv1 still may): "softmax" = Softmax over axis 1
    (segmentation logits, YOLOv8's DFL), "reducemean" = ReduceMean over axis 1 (spatial
    attention, CBAM), "reshape" = Reshape [0, -1, 8] folding channels into the height axis
    (heads that reshape to [N, anchors, ...]), "shuffle" = ShuffleNet's channel shuffle
    (Reshape [N, 2, 4, H, W] -> Transpose -> Reshape [N, 8, H, W]) before a 1x1 Conv."""
    g = _Graph(seed)
    x = g.conv_bn_act(_image(g), "conv1", 8, "relu")
    x = g.conv(x, "conv2", 8)
    if reader == "softmax":
        y = g.node("Softmax", [x], "softmax", axis=1)
    elif reader == "reducemean":
        y = g.reduce_mean(x, "channel_mean", [1])
    elif reader == "reshape":
        y = g.node("Reshape", [x, g.ints("fold.shape", [0, -1, SIZE])], "fold")
    elif reader == "shuffle":
        y = g.node("Reshape", [x, g.ints("shuffle_split.shape", [0, 2, 4, SIZE, SIZE])], "shuffle_split")
        y = g.node("Transpose", [y], "shuffle_transpose", perm=[0, 2, 1, 3, 4])
        y = g.node("Reshape", [y, g.ints("shuffle_merge.shape", [0, 8, SIZE, SIZE])], "shuffle_merge", ch=8)
        y = g.conv(y, "conv3", 8, k=1)
    else:
        raise ValueError(f"unknown reader {reader!r}")
    return g.model([y], f"fixed_{reader}")


# --- registry ---------------------------------------------------------------------------------
def _registry() -> dict[str, Callable[[], onnx.ModelProto]]:
    p = functools.partial
    out: dict[str, Callable[[], onnx.ModelProto]] = {"silu_chain": silu_chain}
    out.update({f"hardswish_{s}": p(hardswish_chain, spelling=s) for s in HARDSWISH_SPELLINGS})
    out.update({f"activation_{a}": p(activation_chain, op=a) for a in ACTIVATIONS})
    out.update({
        "residual_basic_block": residual_basic_block,
        "bottleneck_block": bottleneck_block,
        "bottleneck_block_stride2": p(bottleneck_block, stride=2),
        "inverted_residual": inverted_residual,
        "inverted_residual_no_skip": p(inverted_residual, residual=False),
        "inverted_residual_hardswish": p(inverted_residual, act="hardswish"),
        "se_hardsigmoid": squeeze_excitation,
        "se_sigmoid": p(squeeze_excitation, gate="sigmoid"),
        "concat_branches": concat_branches,
        "concat_with_input": p(concat_branches, include_input=True),
        "split_c2f": split_c2f,
        "split_c2f_opset11": p(split_c2f, opset=11),
        "split_c2f_slice": p(split_c2f, slicer="slice"),
        "sppf": sppf,
        "conv_transpose_head": conv_transpose_head,
        "conv1d_chain": conv1d_chain,
        "transformer_mlp": transformer_mlp,
        "transformer_mlp_no_residual": p(transformer_mlp, residual=False),
        "nhwc_keras": nhwc_keras,
        "constant_weights": constant_weights,
        "if_subgraph": if_subgraph,
    })
    out.update({f"quantized_{k}": p(quantized, kind=k) for k in QUANTIZED_KINDS})
    out.update({
        "convnext_block": convnext_block,
        "convnext_block_reducemean": p(convnext_block, norm="reducemean"),
        "convnext_block_reducemean_opset18": p(convnext_block, norm="reducemean", opset=18),
        "grouped_conv": grouped_conv,
    })
    out.update({f"fixed_{r}": p(fixed_channel_readers, reader=r) for r in FIXED_READERS})
    return out


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = _registry()
