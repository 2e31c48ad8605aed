"""ImageNet-shaped CNNs built with onnx.helper and numpy (no torch), for benchmarks and tests.

The architectures follow torchvision (ResNet-18/34/50/101/152, VGG-16-BN, MobileNetV2), so
sizes, MACs and operator mix match what users export. Weights are random but not degenerate:
He-initialised Convs/Gemms and BatchNormalization statistics drawn as
gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1), mean ~ N(0, 0.1), var ~ U(0.5, 1.5).

Options a benchmark or a test needs:
  fold_bn=True   folds every BN into its Conv (what PyTorch's default export produces);
  width=0.25     scales every channel count (small, fast models for tests);
  image=64       the input's height and width (the classifier adapts to it);
  inner=f        maps the *block-internal* width of each prunable chain (the channels the
                 tool removes) to another width, e.g. lambda c: int(c * 0.7): this builds
                 exactly the architecture a pruned model has, which lets a benchmark time
                 widths the tool does not produce itself (channel rounding).
The input is float [N, 3, image, image] with a dynamic batch dimension N, opset 17.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
Width = Callable[[int], int]


def _same(c: int) -> int:
    return c


class Builder:
    """Appends nodes and initializers; each helper takes a tensor name and returns one.

    The channel count of every produced tensor is tracked in `self.channels`, so callers
    only say how many output channels they want.
    """

    def __init__(self, seed: int = 0, fold_bn: bool = False, image: int = 224) -> None:
        self.rng = np.random.default_rng(seed)
        self.fold_bn = fold_bn
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.channels: dict[str, int] = {"input": 3}
        self.size: dict[str, int] = {"input": image}
        self._count = 0
        self._clip: list[str] = []

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def _init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def _node(self, op: str, inputs: list[str], channels: int, size: int, **attrs) -> str:
        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.channels[name], self.size[name] = channels, size
        return name

    # --- layers -----------------------------------------------------------------------------
    def conv(self, x: str, out: int, k: int = 3, stride: int = 1, group: int = 1,
             bias: np.ndarray | None = None, scale: np.ndarray | None = None, gain: float = 1.0) -> str:
        """Conv with He-initialised weight (times `gain`); `scale`/`bias` fold a BN into it."""
        c_in = self.channels[x]
        fan_in = c_in // group * k * k
        w = self.rng.standard_normal((out, c_in // group, k, k)) * (gain * math.sqrt(2.0 / fan_in))
        if scale is not None:
            w = w * scale[:, None, None, None]
        name = self._name("conv")
        inputs = [x, self._init(name + ".weight", w)]
        if bias is not None:
            inputs.append(self._init(name + ".bias", bias))
        pad = k // 2
        size = (self.size[x] + 2 * pad - k) // stride + 1
        self.nodes.append(helper.make_node("Conv", inputs, [name], name=name, kernel_shape=[k, k],
                                           strides=[stride] * 2, pads=[pad] * 4, group=group))
        self.channels[name], self.size[name] = out, size
        return name

    def _bn_params(self, n: int) -> tuple[np.ndarray, ...]:
        r = self.rng
        return (r.uniform(0.5, 1.5, n), r.normal(0, 0.1, n), r.normal(0, 0.1, n), r.uniform(0.5, 1.5, n))

    def conv_bn(self, x: str, out: int, k: int = 3, stride: int = 1, group: int = 1, gain: float = 1.0) -> str:
        """Conv -> BatchNormalization, or one Conv with the BN folded in (fold_bn)."""
        gamma, beta, mean, var = self._bn_params(out)
        if self.fold_bn:
            scale = gamma / np.sqrt(var + 1e-5)
            return self.conv(x, out, k, stride, group, bias=beta - scale * mean, scale=scale, gain=gain)
        y = self.conv(x, out, k, stride, group, gain=gain)
        name = self._name("bn")
        params = [self._init(f"{name}.{p}", v) for p, v in zip(("gamma", "beta", "mean", "var"), (gamma, beta, mean, var))]
        self.nodes.append(helper.make_node("BatchNormalization", [y, *params], [name], name=name, epsilon=1e-5))
        self.channels[name], self.size[name] = out, self.size[y]
        return name

    def relu(self, x: str) -> str:
        return self._node("Relu", [x], self.channels[x], self.size[x])

    def relu6(self, x: str) -> str:
        if not self._clip:  # one pair of scalar bounds shared by every Clip
            self._clip = [self._init("clip.min", np.array(0.0)), self._init("clip.max", np.array(6.0))]
        return self._node("Clip", [x, *self._clip], self.channels[x], self.size[x])

    def conv_bn_relu(self, x: str, out: int, k: int = 3, stride: int = 1, group: int = 1, relu6: bool = False) -> str:
        y = self.conv_bn(x, out, k, stride, group)
        return self.relu6(y) if relu6 else self.relu(y)

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], self.channels[a], self.size[a])

    def maxpool(self, x: str, k: int, stride: int, pad: int) -> str:
        size = (self.size[x] + 2 * pad - k) // stride + 1
        return self._node("MaxPool", [x], self.channels[x], size, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)

    def classifier(self, x: str, hidden: list[int], classes: int = 1000, pool: bool = True) -> str:
        """[GlobalAveragePool ->] Flatten -> (Gemm -> Relu)* -> Gemm."""
        if pool:
            x = self._node("GlobalAveragePool", [x], self.channels[x], 1)
        features = self.channels[x] * self.size[x] ** 2
        x = self._node("Flatten", [x], features, 1, axis=1)
        for out in [*hidden, classes]:
            w = self.rng.standard_normal((out, self.channels[x])) * math.sqrt(2.0 / self.channels[x])
            name = self._name("fc")
            inputs = [x, self._init(name + ".weight", w), self._init(name + ".bias", np.zeros(out))]
            self.nodes.append(helper.make_node("Gemm", inputs, [name], name=name, transB=1))
            self.channels[name], self.size[name] = out, 1
            x = name if out == classes else self.relu(name)
        return x

    def model(self, output: str, name: str) -> onnx.ModelProto:
        image = self.size["input"]
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, image, image])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", self.channels[output]])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bench.zoo")
        model.ir_version = 8
        return model


def _c(channels: int, width: float) -> int:
    """A scaled channel count, at least 4 and a multiple of 4 when scaled."""
    return channels if width == 1.0 else max(4, int(round(channels * width / 4)) * 4)


RESNET_LAYERS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def resnet(depth: int = 50, width: float = 1.0, image: int = 224, fold_bn: bool = False,
           inner: Width = _same, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """torchvision's ResNet-`depth` (v1.5: stride on the 3x3 conv of bottlenecks).

    The last Conv of each residual branch is He-initialised times 1/sqrt(blocks), as Fixup
    does: BN with fixed random statistics does not normalise, so without it every Add would
    double the activations' variance (ResNet-152's logits would reach 1e12).
    """
    b = Builder(seed, fold_bn, image)
    gain = 1.0 / math.sqrt(sum(RESNET_LAYERS[depth]))
    x = b.maxpool(b.conv_bn_relu("input", _c(64, width), k=7, stride=2), 3, 2, 1)
    bottleneck = depth >= 50
    for stage, blocks in enumerate(RESNET_LAYERS[depth]):
        planes = _c(64 * 2 ** stage, width)
        out = planes * 4 if bottleneck else planes
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            shortcut = x
            if stride != 1 or b.channels[x] != out:
                shortcut = b.conv_bn(x, out, k=1, stride=stride)
            if bottleneck:
                y = b.conv_bn_relu(x, inner(planes), k=1)
                y = b.conv_bn_relu(y, inner(planes), k=3, stride=stride)
                y = b.conv_bn(y, out, k=1, gain=gain)
            else:
                y = b.conv_bn_relu(x, inner(planes), k=3, stride=stride)
                y = b.conv_bn(y, out, k=3, gain=gain)
            x = b.relu(b.add(y, shortcut))
    return b.model(b.classifier(x, [], classes), f"resnet{depth}")


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_bn(width: float = 1.0, image: int = 224, fold_bn: bool = False, inner: Width = _same,
             classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """VGG-16 with BN: 13 conv-bn-relu, 5 MaxPools, a 3-layer classifier (4096 wide).

    `inner` applies to the Convs followed directly by another Conv (the prunable ones).
    """
    b = Builder(seed, fold_bn, image)
    x = "input"
    for i, item in enumerate(VGG16):
        if item == "M":
            x = b.maxpool(x, 2, 2, 0)
            continue
        channels = _c(int(item), width)
        prunable = VGG16[i + 1] != "M"
        x = b.conv_bn_relu(x, inner(channels) if prunable else channels, k=3)
    return b.model(b.classifier(x, [_c(4096, width)] * 2, classes, pool=False), "vgg16_bn")


MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _divisible(v: float, d: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of d, never down by more than 10%."""
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def mobilenet_v2(width: float = 1.0, image: int = 224, fold_bn: bool = False, inner: Width = _same,
                 classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 with ReLU6 as Clip(0, 6) and depthwise 3x3 Convs.

    `inner` applies to the expanded (hidden) width of each inverted residual, the channels a
    depthwise-aware pruner would remove.
    """
    b = Builder(seed, fold_bn, image)
    x = b.conv_bn_relu("input", _divisible(32 * width), k=3, stride=2, relu6=True)
    for t, c, n, s in MOBILENET_V2:
        out = _divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = b.channels[x] * t
            y = x
            if t != 1:
                hidden = inner(hidden)
                y = b.conv_bn_relu(y, hidden, k=1, relu6=True)
            y = b.conv_bn_relu(y, hidden, k=3, stride=stride, group=hidden, relu6=True)
            y = b.conv_bn(y, out, k=1)
            x = b.add(y, x) if stride == 1 and b.channels[x] == out else y
    x = b.conv_bn_relu(x, _divisible(1280 * max(1.0, width)), k=1, relu6=True)
    return b.model(b.classifier(x, [], classes), "mobilenet_v2")


MODELS: dict[str, Callable[..., onnx.ModelProto]] = {
    "resnet18": lambda **kw: resnet(18, **kw),
    "resnet34": lambda **kw: resnet(34, **kw),
    "resnet50": lambda **kw: resnet(50, **kw),
    "resnet101": lambda **kw: resnet(101, **kw),
    "resnet152": lambda **kw: resnet(152, **kw),
    "vgg16_bn": vgg16_bn,
    "mobilenet_v2": mobilenet_v2,
}


def build(name: str, **kwargs) -> onnx.ModelProto:
    """One model of MODELS by name, with the keyword options of its builder."""
    return MODELS[name](**kwargs)


def save(name: str, path: str, **kwargs) -> str:
    """Build and write a model; returns the path."""
    onnx.save(build(name, **kwargs), path)
    return path


if __name__ == "__main__":  # python bench/zoo.py resnet50 /tmp/r50.onnx [--fold-bn]
    import sys

    fold = "--fold-bn" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    save(args[0], args[1], fold_bn=fold)
    print(args[1])
