"""Are MobileNetV2 inverted-residual blocks worth pruning data-free? One measurement.

    python bench/mobilenet_blocks.py            # train (~12 min) + prune + score
    python bench/mobilenet_blocks.py --reuse    # reuse the saved weights

Needs torch (`pip install ".[dev]"`; never a dependency of onnx_lbyl).

Why this exists: onnx_lbyl skips the expand -> depthwise -> project chain of an inverted
residual. Removing expand channel j takes depthwise channel j with it (the depthwise conv
mixes nothing across channels), so there is nothing to merge the removed channel into; the
only compensation the projection can absorb is the removed path's expected value. This
script measures, on a small CIFAR-10 MobileNetV2 trained here, how much top-1 is lost when
every t=6 block loses a fraction r of its hidden channels, with and without that mean
compensation:

  drop         remove the channels (smallest L2 norm of the BN-scaled expand filter)
  mean         same channels; project BN running_mean -= sum_j W_proj[:, j] * E[ReLU6(z_j)],
               z_j ~ N(beta_j, gamma_j^2) from the depthwise BN (exact bias shift: the
               project conv has no bias and BN(x + c) with running_mean - c is identical)
  mean-outerr  mean compensation, channels chosen by the smallest
               ||W_proj[:, j]||^2 * Var(ReLU6(z_j)) (the error the mean leaves behind)

plus two labelled references that are not part of the data-free question:
  mean-outerr-bn  as mean-outerr with W_proj scaled by the project BN (error after the BN)
  mean-data       as mean, but E[ReLU6(z_j)] measured on 512 training images (uses data;
                  shows how much the Gaussian model itself costs)

Data: ../shared/data/cifar10_test.npz (the CIFAR-10 test set); images 2000..9999 train the
model, images 0..1999 are held out and used only for the reported top-1. torch is used here
only (dev dependency of this benchmark, never of onnx_lbyl). Single thread by design.
Writes bench/results/mobilenet_blocks.{json,md} and bench/results/mobilenet_cifar_trained.pt.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10_test.npz"
WEIGHTS = RESULTS / "mobilenet_cifar_trained.pt"
OUT_JSON = RESULTS / "mobilenet_blocks.json"
OUT_MD = RESULTS / "mobilenet_blocks.md"

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
HELDOUT = 2000  # images [0, HELDOUT) are held out; the rest train
WIDTH = 0.5
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # (t, c, n, s)
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
VARIANTS = ("drop", "mean", "mean-outerr", "mean-outerr-bn", "mean-data")
TRAIN_BUDGET_S = 12 * 60
BATCH = 128
LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
SEED = 0
CALIB_IMAGES = 512  # training images, only for the labelled "mean-data" reference


# --------------------------------------------------------------------------- model

def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of 8, never below 90% of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def conv_bn(inp: int, oup: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, t: int):
        super().__init__()
        hidden = inp * t
        self.t = t
        self.use_res = stride == 1 and inp == oup
        self.expand = nn.Conv2d(inp, hidden, 1, bias=False) if t != 1 else None
        self.expand_bn = nn.BatchNorm2d(hidden) if t != 1 else None
        self.dw = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, oup, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(oup)

    def hidden_act(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU6(z): the depthwise BN output after its activation (the path pruning removes)."""
        h = x if self.expand is None else F.relu6(self.expand_bn(self.expand(x)))
        return F.relu6(self.dw_bn(self.dw(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project_bn(self.project(self.hidden_act(x)))
        return x + out if self.use_res else out


class MobileNetV2Cifar(nn.Module):
    def __init__(self, width: float = WIDTH, num_classes: int = 10):
        super().__init__()
        inp = make_divisible(32 * width)
        self.stem = conv_bn(3, inp, 3, 1)
        blocks: list[nn.Module] = []
        for t, c, n, s in SETTINGS:
            oup = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        self.blocks = nn.Sequential(*blocks)
        last = make_divisible(1280 * width)
        self.head = conv_bn(inp, last, 1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def t6_blocks(model: MobileNetV2Cifar) -> list[InvertedResidual]:
    return [b for b in model.blocks if isinstance(b, InvertedResidual) and b.t == 6]


def cost(model: nn.Module) -> tuple[int, int]:
    """(MACs per 32x32 image, parameters): conv and linear MACs; conv/linear weights and
    biases plus BN affine parameters (BN would fold into the convs for deployment)."""
    macs = 0

    def hook(m: nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    return macs, params


# --------------------------------------------------------------------------- data

@dataclass
class Data:
    train_x: torch.Tensor  # float, normalised, padded by 4 with the value of a black pixel
    train_y: torch.Tensor
    test_x: torch.Tensor   # float, normalised, 32x32
    test_y: torch.Tensor


def normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_data() -> Data:
    d = np.load(DATA)
    images, labels = d["images"], d["labels"]
    assert images.shape == (10000, 3, 32, 32) and images.dtype == np.uint8
    padded = np.pad(images[HELDOUT:], ((0, 0), (0, 0), (4, 4), (4, 4)))  # pad raw pixels with 0 (black)
    return Data(normalise(padded), torch.from_numpy(labels[HELDOUT:]),
                normalise(images[:HELDOUT]), torch.from_numpy(labels[:HELDOUT]))


def augment(padded: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 40x40 padded images, then a random horizontal flip."""
    n = padded.shape[0]
    off = torch.randint(0, 9, (n, 2), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty(n, 3, 32, 32)
    for i in range(n):
        crop = padded[i, :, off[i, 0]:off[i, 0] + 32, off[i, 1]:off[i, 1] + 32]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out.contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- training

def cosine_lr(step: int, total: int) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * step / total))


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, data: Data, gen: torch.Generator,
                step: int, total_steps: int | None) -> tuple[int, float, float]:
    """One pass over the training images. total_steps None: constant LR (the cosine's start)."""
    model.train()
    order = torch.randperm(len(data.train_y), generator=gen)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(order), BATCH):
        idx = order[start:start + BATCH]
        x, y = augment(data.train_x[idx], gen), data.train_y[idx]
        lr = LR if total_steps is None else cosine_lr(step, total_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == y).sum().item()
    n = len(order)
    return step, loss_sum / n, correct / n


def train(data: Data) -> tuple[MobileNetV2Cifar, dict]:
    """Epoch 0 at LR 0.1 is timed; the epoch count then fills TRAIN_BUDGET_S and the LR follows
    a per-step cosine from 0.1 to 0 over all epochs (epoch 0 sits at its ~0.1 start)."""
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = MobileNetV2Cifar().to(memory_format=torch.channels_last)  # ~1.5x faster on one CPU thread
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(data.train_y) / BATCH)
    t0 = time.perf_counter()
    step, loss, acc = train_epoch(model, opt, data, gen, 0, None)
    first = time.perf_counter() - t0
    epochs = max(2, int(TRAIN_BUDGET_S // first))
    print(f"epoch 1 took {first:.1f} s -> training for {epochs} epochs (budget {TRAIN_BUDGET_S} s)", flush=True)
    print(f"  epoch 1/{epochs}: loss {loss:.3f}, train acc {acc:.3f}", flush=True)
    total = epochs * steps_per_epoch
    history = [{"epoch": 1, "loss": loss, "train_acc": acc, "seconds": first}]
    for e in range(2, epochs + 1):
        t = time.perf_counter()
        step, loss, acc = train_epoch(model, opt, data, gen, step, total)
        history.append({"epoch": e, "loss": loss, "train_acc": acc, "seconds": time.perf_counter() - t})
        print(f"  epoch {e}/{epochs}: loss {loss:.3f}, train acc {acc:.3f} ({history[-1]['seconds']:.1f} s)", flush=True)
    info = {"epochs": epochs, "first_epoch_s": first, "wall_time_s": time.perf_counter() - t0,
            "steps": step, "final_train_loss": loss, "final_train_acc_augmented": acc, "history": history}
    return model, info


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval().to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    return torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)])


def top1(model: nn.Module, data: Data) -> float:
    return (predict(model, data.test_x).argmax(1) == data.test_y).float().mean().item()


# --------------------------------------------------------------------------- Gaussian moments of ReLU6

def _pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def clip_moments(mu: torch.Tensor, sigma: torch.Tensor, hi: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of clip(z, 0, hi) for z ~ N(mu, sigma^2), in float64.

    With a = -mu/s, b = (hi-mu)/s, P = Phi(b) - Phi(a):
      E[Y]   = mu P + s (phi(a) - phi(b)) + hi (1 - Phi(b))
      E[Y^2] = (mu^2 + s^2) P + 2 mu s (phi(a) - phi(b)) + s^2 (a phi(a) - b phi(b)) + hi^2 (1 - Phi(b))
    (z = mu + s x, x standard: E[x; a<x<b] = phi(a) - phi(b), E[x^2; a<x<b] = P + a phi(a) - b phi(b)).
    """
    mu = mu.double()
    s = sigma.double().abs().clamp_min(1e-12)
    a, b = -mu / s, (hi - mu) / s
    pa, pb = _pdf(a), _pdf(b)
    ca, cb = torch.special.ndtr(a), torch.special.ndtr(b)
    p, tail = cb - ca, 1 - cb
    m1 = mu * p + s * (pa - pb) + hi * tail
    m2 = (mu * mu + s * s) * p + 2 * mu * s * (pa - pb) + s * s * (a * pa - b * pb) + hi * hi * tail
    return m1, (m2 - m1 * m1).clamp_min(0)


def check_clip_moments(samples: int = 2_000_000) -> dict:
    """Closed form vs Monte Carlo on a grid of (mu, sigma) spanning the regimes of the clip."""
    gen = torch.Generator().manual_seed(1)
    grid = [(mu, s) for mu in (-4.0, -1.0, 0.0, 0.7, 3.0, 5.5, 6.0, 9.0) for s in (0.05, 0.5, 1.0, 2.5, 6.0)]
    mu = torch.tensor([g[0] for g in grid], dtype=torch.float64)
    sg = torch.tensor([g[1] for g in grid], dtype=torch.float64)
    m, v = clip_moments(mu, sg)
    err_m, err_v, worst_z = 0.0, 0.0, 0.0
    for i in range(len(grid)):
        y = (mu[i] + sg[i] * torch.randn(samples, generator=gen, dtype=torch.float64)).clamp(0, 6)
        mc_m, mc_v = y.mean(), y.var()
        err_m = max(err_m, abs(mc_m - m[i]).item())
        err_v = max(err_v, abs(mc_v - v[i]).item())
        if mc_v > 1e-6:  # a (numerically) constant Y has no meaningful standard error
            worst_z = max(worst_z, (abs(mc_m - m[i]) / (mc_v / samples).sqrt()).item())
    out = {"grid_points": len(grid), "samples_each": samples, "max_abs_err_mean": err_m,
           "max_abs_err_var": err_v, "worst_mean_err_in_standard_errors": worst_z,
           "note": "standard errors only where the Monte Carlo variance exceeds 1e-6"}
    print(f"closed-form ReLU6 moments vs Monte Carlo ({len(grid)} (mu, sigma) points, {samples:,} samples): "
          f"max |dE| {err_m:.2e}, max |dVar| {err_v:.2e}, worst mean error {worst_z:.1f} s.e.", flush=True)
    return out


# --------------------------------------------------------------------------- pruning

def bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def n_removed(ratio: float, hidden: int) -> int:
    return min(hidden - 1, int(math.floor(ratio * hidden + 0.5)))  # round half up


def block_scores(block: InvertedResidual, variant: str) -> torch.Tensor:
    """Per hidden channel: smaller = removed first."""
    with torch.no_grad():
        if variant in ("drop", "mean", "mean-data"):
            w = block.expand.weight.flatten(1) * bn_scale(block.expand_bn)[:, None]
            return w.norm(dim=1)
        _, var = clip_moments(block.dw_bn.bias, block.dw_bn.weight)
        w = block.project.weight.flatten(1).double()  # (out, hidden)
        if variant == "mean-outerr-bn":
            w = w * bn_scale(block.project_bn).double()[:, None]
        return (w * w).sum(0) * var


def prune_block(block: InvertedResidual, remove: torch.Tensor, means: torch.Tensor | None) -> None:
    """Remove hidden channels `remove` in place; `means` (per hidden channel, E[ReLU6(z)]) shifts
    the project BN's running_mean by minus the removed channels' expected contribution."""
    hidden = block.dw.in_channels
    removed = set(remove.tolist())
    keep = torch.tensor([j for j in range(hidden) if j not in removed], dtype=torch.long)
    with torch.no_grad():
        w_proj = block.project.weight[:, :, 0, 0]
        if means is not None and len(remove):
            shift = (w_proj[:, remove].double() @ means[remove].double()).float()
            block.project_bn.running_mean -= shift
        block.expand = sub_conv(block.expand, keep, None)
        block.expand_bn = sub_bn(block.expand_bn, keep)
        block.dw = sub_conv(block.dw, keep, keep)
        block.dw_bn = sub_bn(block.dw_bn, keep)
        block.project = sub_conv(block.project, None, keep)


def sub_conv(conv: nn.Conv2d, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> nn.Conv2d:
    """A copy of conv keeping output channels out_keep and input channels in_keep (None: all).
    A depthwise conv (groups == channels) keeps the same channels on both sides."""
    w = conv.weight
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    if out_keep is not None:
        w = w[out_keep]
    if in_keep is not None and not depthwise:
        w = w[:, in_keep]
    groups = len(out_keep) if depthwise else 1
    new = nn.Conv2d(w.shape[1] * groups, w.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    groups=groups, bias=False)
    new.weight.copy_(w)
    return new


def sub_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep), eps=bn.eps)
    for name in ("weight", "bias"):
        getattr(new, name).copy_(getattr(bn, name)[keep])
    for name in ("running_mean", "running_var"):
        getattr(new, name).copy_(getattr(bn, name)[keep])
    return new.eval()


@torch.inference_mode()
def measured_means(model: MobileNetV2Cifar, x: torch.Tensor) -> list[torch.Tensor]:
    """E[ReLU6(z_j)] per t=6 block, averaged over images and positions (reference only)."""
    model.eval()
    sums: dict[int, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(t6_blocks(model)):
        def hook(m: nn.Module, inp, _out, i=i) -> None:
            sums[i] = sums.get(i, 0) + m.hidden_act(inp[0]).double().mean((2, 3)).sum(0)
        handles.append(block.register_forward_hook(hook))
    predict(model, x)
    for h in handles:
        h.remove()
    return [sums[i] / len(x) for i in range(len(handles))]


def pruned_model(trained: MobileNetV2Cifar, ratio: float, variant: str,
                 data_means: list[torch.Tensor]) -> MobileNetV2Cifar:
    model = MobileNetV2Cifar()
    model.load_state_dict(trained.state_dict())
    model.eval()
    for i, block in enumerate(t6_blocks(model)):
        k = n_removed(ratio, block.dw.in_channels)
        remove = torch.argsort(block_scores(block, variant), stable=True)[:k]
        if variant == "drop":
            means = None
        elif variant == "mean-data":
            means = data_means[i]
        else:
            means, _ = clip_moments(block.dw_bn.bias.detach(), block.dw_bn.weight.detach())
        prune_block(block, remove, means)
    return model


@torch.inference_mode()
def gaussian_fit(model: MobileNetV2Cifar, data_means: list[torch.Tensor]) -> dict:
    """How well N(beta, gamma^2) predicts the measured channel means (reference diagnostic)."""
    pred = torch.cat([clip_moments(b.dw_bn.bias, b.dw_bn.weight)[0] for b in t6_blocks(model)])
    meas = torch.cat(data_means)
    err = (pred - meas).abs()
    corr = torch.corrcoef(torch.stack([pred, meas]))[0, 1].item()
    return {"channels": len(pred), "pearson_r": corr, "mean_abs_err": err.mean().item(),
            "median_abs_err": err.median().item(), "mean_measured": meas.mean().item(),
            "mean_predicted": pred.mean().item()}


# --------------------------------------------------------------------------- report

def table(res: dict) -> list[str]:
    base = res["unpruned"]
    head = "| ratio | removed hidden ch. | MACs (M) | MACs ↓ | params (k) | params ↓ | " + \
           " | ".join(VARIANTS) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    lines.append(f"| 0 (unpruned) | 0 | {base['macs'] / 1e6:.2f} | – | {base['params'] / 1e3:.1f} | – | "
                 + " | ".join(f"{100 * base['top1']:.2f}" for _ in VARIANTS) + " |")
    for r in res["ratios"]:
        lines.append(f"| {r['ratio']:.1f} | {r['removed_channels']} | {r['macs'] / 1e6:.2f} | "
                     f"{100 * r['macs_reduction']:.1f}% | {r['params'] / 1e3:.1f} | {100 * r['params_reduction']:.1f}% | "
                     + " | ".join(f"{100 * r['top1'][v]:.2f}" for v in VARIANTS) + " |")
    return lines


def summary(res: dict) -> list[str]:
    """Plain statements computed from the numbers (no hand-typed results)."""
    base = res["unpruned"]["top1"]
    rows = {r["ratio"]: r["top1"] for r in res["ratios"]}
    out = []
    for r, t in rows.items():
        best = max(("mean", "mean-outerr"), key=lambda v: t[v])
        out.append(f"- r = {r:.1f}: drop loses {100 * (base - t['drop']):.1f} points, mean "
                   f"{100 * (base - t['mean']):.1f}, mean-outerr {100 * (base - t['mean-outerr']):.1f} "
                   f"(best data-free: {best}, {100 * t[best]:.2f}%; data-measured means: {100 * t['mean-data']:.2f}%).")
    return out


def write_report(res: dict) -> None:
    tr, g, fit = res["training"], res["gaussian_check"], res["gaussian_fit"]
    md = ["# MobileNetV2 inverted-residual blocks, pruned data-free (bench/mobilenet_blocks.py)", "",
          f"Generated {res['generated']} by `python bench/mobilenet_blocks.py`. "
          "Top-1 in % on 2,000 held-out CIFAR-10 images, no fine-tuning. Every t=6 block loses "
          "round(r x hidden) expand channels (with their depthwise channels and projection inputs); "
          "the stem, the t=1 block, the block outputs and the head are untouched, which is why "
          "the network-level reductions are below r.", ""]
    md += table(res)
    md += ["", "Columns: `drop` removes the smallest-norm (BN-scaled expand filter) channels; `mean` "
           "removes the same channels and adds W_proj[:, j] * E[ReLU6(z_j)], z_j ~ N(beta_j, gamma_j^2) "
           "of the depthwise BN, to the projection (as a shift of the project BN's running_mean, which is "
           "exact); `mean-outerr` is `mean` with the channels chosen by the smallest "
           "||W_proj[:, j]||^2 * Var(ReLU6(z_j)). References that are not the data-free question: "
           "`mean-outerr-bn` scales W_proj by the project BN first (the error after the BN); "
           f"`mean-data` is `mean` with E[ReLU6(z_j)] measured on {CALIB_IMAGES} training images.", "",
           f"Sanity: `mean` at ratio 0 scores {100 * res['sanity']['ratio0_mean_top1']:.2f}% vs unpruned "
           f"{100 * base_top1(res):.2f}% (max |logit difference| {res['sanity']['ratio0_max_abs_logit_diff']:.1e}; "
           f"identical: {res['sanity']['identical_top1']}).", "",
           "## Training", "",
           f"- Model: CIFAR MobileNetV2, width 0.5 (channels rounded to multiples of 8), stem 3x3 stride 1, "
           f"settings (t, c, n, s) {SETTINGS}, last 1x1 conv to {make_divisible(1280 * WIDTH)}, "
           f"ReLU6, BN everywhere; {res['unpruned']['macs'] / 1e6:.2f} M MACs, {res['unpruned']['params'] / 1e3:.1f} k parameters.",
           f"- Data: `{DATA}`; images {HELDOUT}..9999 (8,000) train, images 0..{HELDOUT - 1} (2,000) are held out "
           "and used only for the numbers above (never for training or any choice). Normalised with "
           f"mean {MEAN}, std {STD}; training augmentation: random crop (pad 4, black) + horizontal flip.",
           f"- SGD, momentum {MOMENTUM}, Nesterov, weight decay {WEIGHT_DECAY} (chosen up front, not compared "
           f"with 4e-5), batch {BATCH}, LR {LR} cosine to 0 per step, no label smoothing, seed {SEED}, one CPU thread.",
           f"- Epochs: {tr['epochs']} (the first epoch took {tr['first_epoch_s']:.1f} s; count chosen to fill "
           f"{TRAIN_BUDGET_S // 60} min); training wall time {tr['wall_time_s'] / 60:.1f} min; final train loss "
           f"{tr['final_train_loss']:.3f} (augmented train acc {100 * tr['final_train_acc_augmented']:.1f}%).",
           f"- Held-out top-1 of the trained model: **{100 * base_top1(res):.2f}%**.", "",
           "## Gaussian model checks", "",
           f"- Closed-form E and Var of clip(z, 0, 6), z ~ N(mu, sigma^2), vs Monte Carlo on {g['grid_points']} "
           f"(mu, sigma) points x {g['samples_each']:,} samples: max |dE| {g['max_abs_err_mean']:.1e}, max |dVar| "
           f"{g['max_abs_err_var']:.1e} (worst mean error {g['worst_mean_err_in_standard_errors']:.1f} standard errors).",
           f"- N(beta, gamma^2) vs channel means measured on {CALIB_IMAGES} training images, over the "
           f"{fit['channels']} hidden channels of the t=6 blocks: Pearson r {fit['pearson_r']:.3f}, mean |error| "
           f"{fit['mean_abs_err']:.3f}, median {fit['median_abs_err']:.3f} (average channel mean measured "
           f"{fit['mean_measured']:.3f}, predicted {fit['mean_predicted']:.3f}).", "",
           "## What the numbers say", ""]
    md += summary(res)
    md += ["", res["conclusion"], "",
           "Caveats: one small model (width 0.5) trained for a few minutes on 8,000 images, a single seed, "
           f"2,000 test images (a 1-point difference is 20 images; the binomial standard error at "
           f"{100 * base_top1(res):.0f}% is {100 * math.sqrt(base_top1(res) * (1 - base_top1(res)) / HELDOUT):.1f} "
           "points, and the variants share the same images, so their differences are less noisy than that). "
           "The error model treats the removed channels' errors as independent. The 12-minute, one-thread "
           f"budget allowed only {res['training']['epochs']} epochs, so the model is far from converged: a longer-trained "
           "network (where weight decay has had time to silence channels) may prune more gracefully, and these "
           "numbers should not be read as the limit for a well-trained MobileNetV2."]
    OUT_MD.write_text("\n".join(md) + "\n")


def base_top1(res: dict) -> float:
    return res["unpruned"]["top1"]


def conclusion(res: dict) -> str:
    """A one-paragraph reading of the measurements, with every number taken from them."""
    base = base_top1(res)
    rows = {r["ratio"]: r for r in res["ratios"]}
    best = {r: max(row["top1"]["mean"], row["top1"]["mean-outerr"]) for r, row in rows.items()}
    gain = {r: rows[r]["top1"]["mean"] - rows[r]["top1"]["drop"] for r in rows}
    ok = [r for r in rows if base - best[r] <= 0.01]
    tol = max(ok) if ok else None
    text = (f"On the same channels, mean compensation changes top-1 over plain dropping by "
            + ", ".join(f"{100 * gain[r]:+.1f}" for r in rows) + " points at r = "
            + ", ".join(f"{r:.1f}" for r in rows) + ". ")
    sel = {r: row["top1"]["mean-outerr"] - row["top1"]["mean"] for r, row in rows.items()}
    data_gain = {r: row["top1"]["mean-data"] - row["top1"]["mean"] for r, row in rows.items()}
    text += ("The channel choice matters more than the compensation: with the same mean compensation, "
             "choosing by the output error instead of the expand-filter norm changes top-1 by "
             + ", ".join(f"{100 * sel[r]:+.1f}" for r in rows) + " points, while measured instead of "
             "Gaussian means change the norm-selected variant by at most "
             f"{100 * max(abs(g) for g in data_gain.values()):.1f} points (the Gaussian means correlate with "
             f"the measured ones at r = {res['gaussian_fit']['pearson_r']:.2f}). ")
    if tol is None:
        text += "No ratio stays within 1 point of the unpruned model with the data-free variants"
    else:
        red = rows[tol]
        text += (f"The largest ratio that stays within 1 point of the unpruned model data-free is r = {tol:.1f}, "
                 f"which removes {100 * red['macs_reduction']:.1f}% of the MACs and "
                 f"{100 * red['params_reduction']:.1f}% of the parameters")
    r0 = min(rows)
    text += (f". The best data-free variant costs {100 * (base - best[r0]):.1f} points at r = {r0:.1f} "
             f"({100 * rows[r0]['macs_reduction']:.1f}% fewer MACs) and {100 * (base - best[0.2]):.1f} at r = 0.2 "
             f"({100 * rows[0.2]['macs_reduction']:.1f}% fewer MACs)")
    return text + "."


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reuse", action="store_true",
                    help="load bench/results/mobilenet_cifar_trained.pt (and its training record from "
                         "mobilenet_blocks.json) instead of training")
    ap.add_argument("--report-only", action="store_true",
                    help="re-render mobilenet_blocks.md (and the conclusion) from mobilenet_blocks.json")
    args = ap.parse_args()
    if args.report_only:
        res = json.loads(OUT_JSON.read_text())
        res["conclusion"] = conclusion(res)
        OUT_JSON.write_text(json.dumps(res, indent=1) + "\n")
        write_report(res)
        print("\n".join(table(res)) + "\n\n" + res["conclusion"])
        return
    torch.set_num_threads(1)
    RESULTS.mkdir(exist_ok=True)
    gaussian_check = check_clip_moments()
    data = load_data()

    if args.reuse:
        model = MobileNetV2Cifar()
        model.load_state_dict(torch.load(WEIGHTS))
        training = json.loads(OUT_JSON.read_text())["training"]
    else:
        model, training = train(data)
        torch.save(model.state_dict(), WEIGHTS)
        OUT_JSON.write_text(json.dumps({"training": training}, indent=1) + "\n")  # lets --reuse resume
    model.eval()
    base_logits = predict(model, data.test_x)
    base = {"top1": (base_logits.argmax(1) == data.test_y).float().mean().item()}
    base["macs"], base["params"] = cost(model)
    print(f"held-out top-1 of the trained model: {100 * base['top1']:.2f}% "
          f"({base['macs'] / 1e6:.2f} M MACs, {base['params'] / 1e3:.1f} k params)", flush=True)

    calib = data.train_x[:CALIB_IMAGES, :, 4:36, 4:36]  # un-augmented training images
    data_means = measured_means(model, calib)
    fit = gaussian_fit(model, data_means)
    print(f"Gaussian channel means vs measured: r {fit['pearson_r']:.3f}, mean |err| {fit['mean_abs_err']:.3f}", flush=True)

    zero = pruned_model(model, 0.0, "mean", data_means)
    zero_logits = predict(zero, data.test_x)
    sanity = {"ratio0_mean_top1": (zero_logits.argmax(1) == data.test_y).float().mean().item(),
              "ratio0_max_abs_logit_diff": (zero_logits - base_logits).abs().max().item()}
    sanity["identical_top1"] = sanity["ratio0_mean_top1"] == base["top1"]
    print(f"sanity: mean at ratio 0 -> {100 * sanity['ratio0_mean_top1']:.2f}% "
          f"(max |dlogit| {sanity['ratio0_max_abs_logit_diff']:.1e})", flush=True)

    ratios = []
    for r in RATIOS:
        row: dict = {"ratio": r, "top1": {}}
        for v in VARIANTS:
            pruned = pruned_model(model, r, v, data_means)
            row["top1"][v] = top1(pruned, data)
        row["macs"], row["params"] = cost(pruned)
        row["removed_channels"] = sum(n_removed(r, b.dw.in_channels) for b in t6_blocks(model))
        row["macs_reduction"] = 1 - row["macs"] / base["macs"]
        row["params_reduction"] = 1 - row["params"] / base["params"]
        ratios.append(row)
        print(f"r={r:.1f}: " + ", ".join(f"{v} {100 * t:.2f}" for v, t in row["top1"].items()), flush=True)

    res = {"generated": dt.datetime.now().isoformat(timespec="seconds"),
           "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
           "config": {"data": str(DATA), "heldout_images": [0, HELDOUT], "train_images": [HELDOUT, 10000],
                      "width": WIDTH, "settings": SETTINGS, "batch": BATCH, "lr": LR, "momentum": MOMENTUM,
                      "nesterov": True, "weight_decay": WEIGHT_DECAY, "seed": SEED, "ratios": list(RATIOS),
                      "variants": list(VARIANTS), "calibration_images_for_mean_data": CALIB_IMAGES},
           "training": training, "unpruned": base, "sanity": sanity, "gaussian_check": gaussian_check,
           "gaussian_fit": fit, "ratios": ratios}
    res["conclusion"] = conclusion(res)
    OUT_JSON.write_text(json.dumps(res, indent=1) + "\n")
    write_report(res)
    print()
    print("\n".join(table(res)))
    print()
    print(res["conclusion"])
    print(f"wrote {OUT_JSON}, {OUT_MD}, {WEIGHTS}")


if __name__ == "__main__":
    main()
