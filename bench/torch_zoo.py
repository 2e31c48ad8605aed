"""Real architectures exported by torch.onnx, for benchmarking the channel-group analysis.

    python bench/torch_zoo.py                        # every model into bench/results/zoo/
    python bench/torch_zoo.py --out DIR mobilenet_v2 yolov8n_320

Needs torch (a dev extra, `pip install ".[dev]"`; never needed by onnx_lbyl, its tests or CI).
torchvision is not a dependency: the architectures are written here in plain torch.nn after
torchvision's / ultralytics' / insightface's definitions (same layers, same order, same ops in
the export), some with reduced widths so that every file stays under ~30 MB.

Each model is exported with the TorchScript exporter (`dynamo=False`: the dynamo exporter needs
onnxscript), opset 17, a dynamic batch dimension `batch`, from eval mode, after a fixed
`torch.manual_seed` and a random, non-degenerate initialisation (He-normal Conv/Linear weights,
biases N(0, 0.1); BatchNorm gamma U(0.5, 1.5), beta N(0, 0.2), running mean N(0, 0.2), running
var U(0.5, 1.5); LayerNorm weight U(0.5, 1.5), bias N(0, 0.2); PReLU slopes U(0.05, 0.3)).
BatchNormalization stays a node (`training=TrainingMode.PRESERVE` on an eval model, checked:
the export must hold one BN node per BN module); `<name>_folded` is the default export, where
torch folds every Conv -> BN into the Conv (what most users ship).

The models and what each one is for:

  mobilenet_v2        torchvision MobileNetV2 (1.0, 224): inverted residuals, ReLU6 as Clip,
                      depthwise Convs, residual Adds inside a stage; the hidden (expand)
                      groups that only a depthwise Conv and the project Conv read.
  mobilenet_v3_small  torchvision MobileNetV3-Small (1.0, 224): HardSwish, squeeze-excitation
                      with HardSigmoid gate (Mul coupling), a Linear -> HardSwish -> Linear head.
  efficientnet_b0     torchvision EfficientNet-B0 (224): SiLU (Sigmoid + Mul), SE with a
                      Sigmoid gate and SiLU inside, 5x5 depthwise Convs, MBConv residuals.
  yolov8n_320         ultralytics YOLOv8n (width 0.25, depth 0.33, 320x320, 80 classes):
                      C2f (Split, Concat of every part), SPPF (MaxPool chain + Concat), an FPN /
                      PAN neck (Resize upsampling, Concats across scales), the decoupled
                      detection head with DFL (Reshape, Softmax over the bins) and the box
                      decode; output [batch, 84, 2100].
  resnet50            torchvision ResNet-50 v1.5 at width 0.5 (all 16 bottlenecks, 224): the
                      residual streams (one channel group per stage, 3-7 producers each),
                      projection shortcuts, the Gemm head. The last BN of each residual branch
                      has its gamma scaled by 1/sqrt(16) so random statistics do not blow up.
  convnext            torchvision-style ConvNeXt (dims 48-96-192-384, depths 2-2-6-2, 224):
                      7x7 depthwise Conv, LayerNorm in NHWC between Permutes, Linear (MatMul on
                      a 4-D NHWC tensor) -> GELU (Erf form) -> Linear, layer scale, residual Adds;
                      LayerNorm2d + 2x2 stride-2 Conv downsampling.
  keras_nhwc          a Keras-like CNN as tf2onnx writes it, built in torch with permutes: NHWC
                      input [batch, 224, 224, 3], Transpose around every Conv, BatchNorm
                      decomposed into per-channel Mul and Add in NHWC, Relu, NHWC Flatten ->
                      MatMul + Add (Dense) head. No BN nodes, so no _folded variant.
  prelu_iresnet       insightface-style IResNet-18 for face recognition (width 0.5, 112x112,
                      256-d embedding): PReLU with per-channel slopes, BN *before* each block's
                      first Conv (not foldable into it), BN after the last Conv and a
                      BatchNorm1d after the embedding Gemm. Residual branches damped as in
                      resnet50.
  transformer_mlp     four ViT-S/16 MLP sub-blocks on [batch, 197 tokens, 384]:
                      x + Linear(GELU(Linear(LayerNorm(x)))), hidden 1536; Linear on 3-D input
                      exports as MatMul + Add, the channel axis is the last one. No BN.

`<name>_folded` exists for mobilenet_v2, mobilenet_v3_small, efficientnet_b0, yolov8n_320,
resnet50 and prelu_iresnet. Every build prints its size, node counts per operator type, and
runs the model on onnxruntime (batch 2, finite outputs).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "results" / "zoo"
OPSET = 17
SEED = 0


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of divisor, never below 90 %."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (torchvision's Conv2dNormActivation)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: Callable[[], nn.Module] | None = nn.ReLU) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(c_out)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation: avgpool -> fc1 (1x1 Conv) -> act -> fc2 -> gate -> x * s."""

    def __init__(self, c: int, squeeze: int, act: Callable[[], nn.Module] = nn.ReLU,
                 gate: Callable[[], nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act, self.fc2, self.gate = nn.Conv2d(c, squeeze, 1), act(), nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))


def _classifier(c_in: int, classes: int = 1000, hidden: int | None = None,
                act: Callable[[], nn.Module] = nn.Hardswish) -> nn.Module:
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    if hidden is not None:
        layers += [nn.Linear(c_in, hidden), act(), nn.Dropout(0.2)]
        c_in = hidden
    layers += [nn.Dropout(0.2), nn.Linear(c_in, classes)]
    return nn.Sequential(*layers)


# --- MobileNetV2 --------------------------------------------------------------------------------
class InvertedResidualV2(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = c_in * t
        layers: list[nn.Module] = [] if t == 1 else [ConvBNAct(c_in, hidden, 1, act=nn.ReLU6)]
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   ConvBNAct(hidden, c_out, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2(width: float = 1.0, classes: int = 1000) -> nn.Module:
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    c = _divisible(32 * width)
    last = _divisible(1280 * max(1.0, width))
    layers: list[nn.Module] = [ConvBNAct(3, c, 3, 2, act=nn.ReLU6)]
    for t, ch, n, s in settings:
        out = _divisible(ch * width)
        for i in range(n):
            layers.append(InvertedResidualV2(c, out, s if i == 0 else 1, t))
            c = out
    layers.append(ConvBNAct(c, last, 1, act=nn.ReLU6))
    return nn.Sequential(nn.Sequential(*layers), _classifier(last, classes))


# --- MobileNetV3-Small -------------------------------------------------------------------------
class InvertedResidualV3(nn.Module):
    def __init__(self, c_in: int, k: int, expanded: int, c_out: int, se: bool, act: str, stride: int) -> None:
        super().__init__()
        a = nn.Hardswish if act == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != c_in:
            layers.append(ConvBNAct(c_in, expanded, 1, act=a))
        layers.append(ConvBNAct(expanded, expanded, k, stride, groups=expanded, act=a))
        if se:
            layers.append(SqueezeExcitation(expanded, _divisible(expanded // 4), nn.ReLU, nn.Hardsigmoid))
        layers.append(ConvBNAct(expanded, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v3_small(classes: int = 1000) -> nn.Module:
    config = [(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
              (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
              (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
              (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1)]
    layers: list[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
    layers += [InvertedResidualV3(*row) for row in config]
    layers.append(ConvBNAct(96, 576, 1, act=nn.Hardswish))
    return nn.Sequential(nn.Sequential(*layers), _classifier(576, classes, hidden=1024))


# --- EfficientNet-B0 ---------------------------------------------------------------------------
class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = [] if expand == 1 else [ConvBNAct(c_in, hidden, 1, act=nn.SiLU)]
        layers += [ConvBNAct(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcitation(hidden, max(1, c_in // 4), nn.SiLU, nn.Sigmoid),
                   ConvBNAct(hidden, c_out, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


def efficientnet_b0(classes: int = 1000) -> nn.Module:
    stages = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.SiLU)]
    for expand, k, stride, c_in, c_out, n in stages:
        for i in range(n):
            layers.append(MBConv(c_in if i == 0 else c_out, c_out, k, stride if i == 0 else 1, expand))
    layers.append(ConvBNAct(320, 1280, 1, act=nn.SiLU))
    return nn.Sequential(nn.Sequential(*layers), _classifier(1280, classes))


# --- YOLOv8n -----------------------------------------------------------------------------------
def _yconv(c_in: int, c_out: int, k: int = 1, s: int = 1) -> nn.Module:
    """ultralytics' Conv: Conv2d (no bias) -> BN -> SiLU."""
    return ConvBNAct(c_in, c_out, k, s, act=nn.SiLU)


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1, self.cv2, self.add = _yconv(c, c, 3), _yconv(c, c, 3), shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """cv1 -> split in halves -> n bottlenecks on the last part -> Concat of every part -> cv2.

    forward is ultralytics' `forward_split`, which its ONNX export switches to: `split` gives
    one Split node, while `chunk` under a dynamic batch exports as two Slices whose bounds are
    computed from Shape(x)[1] at run time."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1, self.cv2 = _yconv(c_in, 2 * self.c), _yconv((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        self.cv1, self.cv2 = _yconv(c_in, c_in // 2), _yconv(c_in // 2 * 4, c_out)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Detect(nn.Module):
    """The decoupled YOLOv8 head: per level a box branch (4 x 16 DFL bins) and a class branch,
    then DFL (softmax over bins, expectation as a fixed 1x1 Conv) and the anchor decode."""

    def __init__(self, chs: tuple[int, ...], strides: tuple[int, ...], image: int, classes: int = 80) -> None:
        super().__init__()
        self.reg_max, self.classes = 16, classes
        c2, c3 = max(16, chs[0] // 4, 4 * self.reg_max), max(chs[0], min(classes, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(_yconv(c, c2, 3), _yconv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1)) for c in chs)
        self.cv3 = nn.ModuleList(nn.Sequential(_yconv(c, c3, 3), _yconv(c3, c3, 3), nn.Conv2d(c3, classes, 1)) for c in chs)
        self.dfl = nn.Conv2d(self.reg_max, 1, 1, bias=False).requires_grad_(False)
        self.dfl.fixed = True  # arange weights, left alone by the random initialisation
        anchors, stride_list = [], []
        for s in strides:
            n = image // s
            sy, sx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            stride_list.append(torch.full((n * n, 1), float(s)))
        self.register_buffer("anchors", torch.cat(anchors).transpose(0, 1).unsqueeze(0))
        self.register_buffer("strides", torch.cat(stride_list).transpose(0, 1).unsqueeze(0))

    def reset_dfl(self) -> None:
        self.dfl.weight.data[:] = torch.arange(self.reg_max, dtype=torch.float).view(1, self.reg_max, 1, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        b = xs[0].shape[0]
        no = 4 * self.reg_max + self.classes
        out = torch.cat([torch.cat((box(x), cls(x)), 1).view(b, no, -1) for x, box, cls in zip(xs, self.cv2, self.cv3)], 2)
        box, cls = out.split((4 * self.reg_max, self.classes), 1)
        a = box.shape[-1]
        dist = self.dfl(box.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class YOLOv8(nn.Module):
    def __init__(self, width: float = 0.25, depth: float = 0.33, image: int = 320, classes: int = 80) -> None:
        super().__init__()
        w = [int(c * width) for c in (64, 128, 256, 512, 1024)]  # n: 16, 32, 64, 128, 256
        d = [max(round(n * depth), 1) for n in (3, 6, 6, 3)]     # n: 1, 2, 2, 1
        self.b0, self.b1 = _yconv(3, w[0], 3, 2), _yconv(w[0], w[1], 3, 2)
        self.b2 = C2f(w[1], w[1], d[0], True)
        self.b3, self.b4 = _yconv(w[1], w[2], 3, 2), C2f(w[2], w[2], d[1], True)        # P3/8
        self.b5, self.b6 = _yconv(w[2], w[3], 3, 2), C2f(w[3], w[3], d[2], True)        # P4/16
        self.b7, self.b8 = _yconv(w[3], w[4], 3, 2), C2f(w[4], w[4], d[3], True)        # P5/32
        self.b9 = SPPF(w[4], w[4])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12 = C2f(w[4] + w[3], w[3], d[3])
        self.h15 = C2f(w[3] + w[2], w[2], d[3])                                          # out P3
        self.h16, self.h18 = _yconv(w[2], w[2], 3, 2), C2f(w[2] + w[3], w[3], d[3])      # out P4
        self.h19, self.h21 = _yconv(w[3], w[3], 3, 2), C2f(w[3] + w[4], w[4], d[3])      # out P5
        self.detect = Detect((w[2], w[3], w[4]), (8, 16, 32), image, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        h12 = self.h12(torch.cat((self.up(p5), p4), 1))
        o3 = self.h15(torch.cat((self.up(h12), p3), 1))
        o4 = self.h18(torch.cat((self.h16(o3), h12), 1))
        o5 = self.h21(torch.cat((self.h19(o4), p5), 1))
        return self.detect([o3, o4, o5])


# --- ResNet-50 ---------------------------------------------------------------------------------
class BottleneckV15(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    LAYERS = (3, 4, 6, 3)

    def __init__(self, width: float = 0.5, classes: int = 1000) -> None:
        super().__init__()
        base = int(64 * width)
        self.stem = nn.Sequential(nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, c = [], base
        for stage, n in enumerate(self.LAYERS):
            planes = base * 2 ** stage
            for i in range(n):
                blocks.append(BottleneckV15(c, planes, 2 if stage > 0 and i == 0 else 1))
                c = planes * 4
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))

    def damp_residuals(self) -> None:
        _damp_residuals(self, "bn3", sum(self.LAYERS))


# --- ConvNeXt ----------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """torchvision's LayerNorm2d: LayerNorm over channels of an NCHW tensor via two permutes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.act(self.pwconv1(y))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


def convnext(dims: tuple[int, ...] = (48, 96, 192, 384), depths: tuple[int, ...] = (2, 2, 6, 2),
             classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
    for i, (dim, depth) in enumerate(zip(dims, depths)):
        if i > 0:
            layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, 2)]
        layers += [CNBlock(dim) for _ in range(depth)]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[-1], classes))
    return nn.Sequential(nn.Sequential(*layers), head)


# --- Keras-style NHWC --------------------------------------------------------------------------
class KerasConvBlock(nn.Module):
    """Conv2D on NHWC data the way tf2onnx exports it: Transpose -> Conv -> Transpose, then the
    Keras BatchNormalization as per-channel x * scale + shift in NHWC, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.scale, self.shift = nn.Parameter(torch.ones(c_out)), nn.Parameter(torch.zeros(c_out))
        self.decomposed_bn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return torch.relu(y * self.scale + self.shift)


class KerasNHWC(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64, 128), image: int = 224, hidden: int = 256,
                 classes: int = 1000) -> None:
        super().__init__()
        blocks, c = [], 3
        for w in widths:
            blocks.append(KerasConvBlock(c, w, 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        features = c * (image // 2 ** len(widths)) ** 2
        self.dense1_w, self.dense1_b = nn.Parameter(torch.empty(features, hidden)), nn.Parameter(torch.zeros(hidden))
        self.dense2_w, self.dense2_b = nn.Parameter(torch.empty(hidden, classes)), nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.flatten(self.blocks(x), 1)  # NHWC order: (h, w, c), c fastest
        y = torch.relu(torch.matmul(y, self.dense1_w) + self.dense1_b)
        return torch.matmul(y, self.dense2_w) + self.dense2_b

    def init_dense(self) -> None:
        for w in (self.dense1_w, self.dense2_w):
            nn.init.normal_(w, 0.0, math.sqrt(2.0 / w.shape[0]))
        for blk in self.blocks:
            n = blk.scale.numel()
            blk.scale.data = torch.rand(n) + 0.5
            blk.shift.data = torch.randn(n) * 0.2


# --- PReLU IResNet -----------------------------------------------------------------------------
class IBasicBlock(nn.Module):
    """insightface's IBasicBlock: BN -> Conv3x3 -> BN -> PReLU -> Conv3x3 (stride) -> BN, + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


def _damp_residuals(model: nn.Module, last_bn: str, blocks: int) -> None:
    """Scale the last BN's gamma of every residual branch by 1/sqrt(blocks) (as Fixup scales
    the last Conv): BN with fixed random statistics does not normalise, so without it every
    Add would grow the activations."""
    for m in model.modules():
        bn = getattr(m, last_bn, None) if hasattr(m, "downsample") else None
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data *= 1.0 / math.sqrt(blocks)


class IResNet(nn.Module):
    def __init__(self, width: float = 0.5, layers: tuple[int, ...] = (2, 2, 2, 2), embedding: int = 256) -> None:
        super().__init__()
        planes = [int(c * width) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(3, planes[0], 3, 1, 1, bias=False), nn.BatchNorm2d(planes[0]), nn.PReLU(planes[0]))
        blocks, c = [], planes[0]
        for p, n in zip(planes, layers):
            for i in range(n):
                blocks.append(IBasicBlock(c, p, 2 if i == 0 else 1))
                c = p
        self.layers = nn.Sequential(*blocks)
        self.bn2 = nn.BatchNorm2d(c)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(c * 7 * 7, embedding)
        self.features = nn.BatchNorm1d(embedding)
        self.blocks = sum(layers)

    def damp_residuals(self) -> None:
        _damp_residuals(self, "bn3", self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.bn2(self.layers(self.stem(x))))
        return self.features(self.fc(torch.flatten(y, 1)))


# --- transformer MLP ---------------------------------------------------------------------------
class MLPBlock(nn.Module):
    """ViT's pre-norm MLP sub-block: x + fc2(GELU(fc1(LayerNorm(x))))."""

    def __init__(self, dim: int = 384, hidden: int = 1536) -> None:
        super().__init__()
        self.norm, self.fc1, self.act, self.fc2 = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


# --- registry, initialisation, export --------------------------------------------------------
# name -> (constructor, input shape without batch, has BN nodes)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], bool]] = {
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224), True),
    "mobilenet_v3_small": (mobilenet_v3_small, (3, 224, 224), True),
    "efficientnet_b0": (efficientnet_b0, (3, 224, 224), True),
    "yolov8n_320": (YOLOv8, (3, 320, 320), True),
    "resnet50": (ResNet50, (3, 224, 224), True),
    "convnext": (convnext, (3, 224, 224), False),
    "keras_nhwc": (KerasNHWC, (224, 224, 3), False),
    "prelu_iresnet": (IResNet, (3, 112, 112), True),
    "transformer_mlp": (lambda: nn.Sequential(*(MLPBlock() for _ in range(4))), (197, 384), False),
}
NAMES = [name for base, (_, _, has_bn) in MODELS.items() for name in ([base, f"{base}_folded"] if has_bn else [base])]


def _randomise(model: nn.Module) -> None:
    """He-normal weights and BN / LayerNorm / PReLU parameters far from their defaults."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not getattr(m, "fixed", False):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, 0.1)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data, m.bias.data = torch.rand(n) + 0.5, torch.randn(n) * 0.2
            m.running_mean, m.running_var = torch.randn(n) * 0.2, torch.rand(n) + 0.5
        elif isinstance(m, nn.LayerNorm):
            n = m.weight.numel()
            m.weight.data, m.bias.data = (torch.rand(n) + 0.5).view_as(m.weight), (torch.randn(n) * 0.2).view_as(m.bias)
        elif isinstance(m, nn.PReLU):
            m.weight.data = torch.rand(m.weight.numel()) * 0.25 + 0.05
        elif isinstance(m, CNBlock):
            m.layer_scale.data = torch.rand(m.layer_scale.shape) * 0.9 + 0.1
    for m in model.modules():
        for hook in ("reset_dfl", "damp_residuals", "init_dense"):
            if hasattr(m, hook):
                getattr(m, hook)()


def make(name: str) -> tuple[nn.Module, tuple[int, ...], bool]:
    """The eval-mode torch model for `name` (with or without _folded), its input shape, fold."""
    base = name.removesuffix("_folded")
    if base not in MODELS or (name != base and not MODELS[base][2]):
        raise KeyError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
    ctor, shape, _ = MODELS[base]
    torch.manual_seed(SEED)
    model = ctor()
    _randomise(model)
    return model.eval(), shape, name != base


def build(name: str, folder: Path | str = DEFAULT_OUT) -> Path:
    """Export `name` to folder/name.onnx and check that BN nodes are kept (or folded) as asked."""
    model, shape, folded = make(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    kwargs = {} if folded else {"training": torch.onnx.TrainingMode.PRESERVE}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, *shape),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **kwargs)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name, proto.doc_string = "bench.torch_zoo", f"{name}: random weights, seed {SEED}"
    bn_modules = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    bn_nodes = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)
    if not folded and bn_nodes != bn_modules:
        raise RuntimeError(f"{name}: {bn_nodes} BatchNormalization nodes for {bn_modules} BN modules")
    onnx.checker.check_model(proto, full_check=True)
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(proto, tmp)
    tmp.replace(path)
    return path


def check(path: Path) -> tuple[list[tuple[int, ...]], float]:
    """Run the model on onnxruntime with a random batch of 2; output shapes and the std of output 0."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([2, *inp.shape[1:]]).astype(np.float32)
    outs = session.run(None, {inp.name: x})
    if not all(np.isfinite(o).all() for o in outs):
        raise RuntimeError(f"{path.name}: non-finite output on onnxruntime")
    return [o.shape for o in outs], float(np.std(outs[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models to build (default: all): {', '.join(NAMES)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.names or NAMES:
        start = time.perf_counter()
        path = build(name, args.out)
        seconds = time.perf_counter() - start
        shapes, std = check(path)
        proto = onnx.load(path, load_external_data=False)
        params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
        ops = collections.Counter(n.op_type for n in proto.graph.node)
        print(f"{name}: {path.stat().st_size / 1e6:.1f} MB, {params / 1e6:.2f} M parameters, {len(proto.graph.node)} nodes, "
              f"built in {seconds:.1f} s; onnxruntime ok, output {shapes[0]} std {std:.3g}")
        print("  " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
