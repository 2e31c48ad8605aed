"""How many channels each chain keeps: one ratio for all, per-layer ratios by name pattern,
exclusions, or the uniform ratio that reaches a requested MACs reduction.

Pure Python over names and counts, so the rules can be tested without a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Mapping, Sequence

from .errors import InputError
from .numerics.selection import kept_count


@dataclass(frozen=True)
class GroupShape:
    """What planning needs of a prunable unit (a chain or a channel group): its name, its width,
    and the layers whose MACs shrink with it. `outputs` are (layer, that layer's output
    channels) for layers that lose output channels (producers, depthwise Convs), `inputs` the
    same for layers that lose input channels (consumers); layers are keyed as graph.cost keys
    them (first output name)."""

    name: str
    channels: int
    outputs: tuple[tuple[str, int], ...]
    inputs: tuple[tuple[str, int], ...]


def ChainShape(name: str, producer: str, consumer: str, channels: int) -> GroupShape:  # noqa: N802
    """A chain: one producer loses output channels, one consumer the same input channels."""
    return GroupShape(name, channels, ((producer, channels),), ((consumer, channels),))


def layer_ratios(
    chains: Sequence[GroupShape],
    ratio: float,
    per_layer: Sequence[tuple[str, float]] = (),
    exclude: Sequence[str] = (),
) -> dict[str, float]:
    """The ratio of every chain: the last matching `per_layer` pattern wins, an excluded one
    gets 0, the rest get `ratio`. Patterns are shell-style (fnmatch) on the chain's name."""
    ratios = {}
    for chain in chains:
        value = ratio
        for pattern, layer_ratio in per_layer:
            if fnmatchcase(chain.name, pattern):
                value = layer_ratio
        if any(fnmatchcase(chain.name, pattern) for pattern in exclude):
            value = 0.0
        ratios[chain.name] = value
    return ratios


def channel_multiple(channels: int, round_to: int) -> int:
    """The multiple a layer of `channels` rounds its kept count to: `round_to`, halved while it
    is more than a quarter of the layer, so a narrow layer (16 channels at the default 8) still
    gets pruned in steps of 4 rather than staying whole."""
    step = max(1, round_to)
    while step > 1 and 4 * step > channels:
        step //= 2
    return max(1, step)


def round_kept(channels: int, keep: int, round_to: int) -> int:
    """`keep` rounded up to channel_multiple(channels, round_to), never above `channels`."""
    step = channel_multiple(channels, round_to)
    return min(channels, -(-keep // step) * step)


def kept_channels(channels: int, ratio: float, round_to: int = 1) -> int:
    """kept_count(channels, ratio) rounded up as round_kept says (never above `channels`):
    onnxruntime's fast CPU convolution kernels (NCHWc) take input channel counts that are
    multiples of 4 and pad output channels to a multiple of 8 (AVX2) or 16 (AVX-512), so the
    default rounds to 8 (options.DEFAULT_ROUND_TO; bench/latency.py measures what it buys).
    round_to=1 is the papers' exact count."""
    return round_kept(channels, kept_count(channels, ratio), round_to)


def kept_per_chain(chains: Sequence[GroupShape], ratios: Mapping[str, float], round_to: int = 1) -> dict[str, int]:
    return {c.name: kept_channels(c.channels, ratios[c.name], round_to) for c in chains}


def macs_after(chains: Sequence[GroupShape], node_macs: Mapping[str, int], ratios: Mapping[str, float],
               round_to: int = 1) -> int:
    """MACs once every unit keeps kept_channels(channels, ratio, round_to) channels: each
    layer's MACs scale with the kept share of its output channels and of its input channels,
    summed over the units that narrow them; a bottleneck's middle Conv loses both."""
    lost: dict[tuple[str, str], int] = {}
    totals: dict[tuple[str, str], int] = {}
    for unit in chains:
        removed = unit.channels - kept_channels(unit.channels, ratios[unit.name], round_to)
        for side, entries in (("out", unit.outputs), ("in", unit.inputs)):
            for node, total in entries:
                lost[(node, side)] = lost.get((node, side), 0) + removed
                totals[(node, side)] = total
    scale = {name: 1.0 for name in node_macs}
    for (node, side), removed in lost.items():
        if node in scale:
            scale[node] *= (totals[(node, side)] - removed) / totals[(node, side)]
    return int(round(sum(macs * scale[name] for name, macs in node_macs.items())))


def ratio_for_target_macs(
    chains: Sequence[GroupShape],
    node_macs: Mapping[str, int],
    target_reduction: float,
    per_layer: Sequence[tuple[str, float]] = (),
    exclude: Sequence[str] = (),
    round_to: int = 1,
) -> float:
    """The smallest uniform ratio (to 1e-4) whose pruned model has at most
    (1 - target_reduction) of the original MACs, other rules applied as given."""
    if not 0 < target_reduction < 1:
        raise InputError(f"target MACs reduction must be in (0, 1), got {target_reduction!r}")
    total = sum(node_macs.values())
    goal = total * (1.0 - target_reduction)

    def reached(r: float) -> bool:
        return macs_after(chains, node_macs, layer_ratios(chains, r, per_layer, exclude), round_to) <= goal

    high = 0.9999
    if not reached(high):
        best = 1 - macs_after(chains, node_macs, layer_ratios(chains, high, per_layer, exclude), round_to) / total
        raise InputError(
            f"a {100 * target_reduction:.1f}% MACs reduction is out of reach: pruning every "
            f"prunable chain as far as possible removes {100 * best:.1f}%"
        )
    low = 0.0
    while high - low > 1e-4:
        middle = (low + high) / 2
        if reached(middle):
            high = middle
        else:
            low = middle
    return math.ceil(high * 1e4) / 1e4  # rounding up keeps the target reached


def parse_layer_ratio(text: str) -> tuple[str, float]:
    """'PATTERN=RATIO' from the command line, with a one-line error if it is not that."""
    pattern, sep, value = text.rpartition("=")
    try:
        ratio = float(value)
    except ValueError:
        ratio = float("nan")
    if not sep or not pattern or not 0 <= ratio < 1:
        raise InputError(f"per-layer ratio must look like PATTERN=RATIO with RATIO in [0, 1), got {text!r}")
    return pattern, ratio


def allocate(
    units: Sequence[GroupShape],
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    node_macs: Mapping[str, int],
    target_reduction: float,
    fixed: Mapping[str, int] | None = None,
    round_to: int = 1,
) -> dict[str, int]:
    """Kept channels per unit for a MACs budget, chosen by price: repeatedly take, across all
    units, the next removal step (of `curves[name]` = (channels per step, error each step
    adds)) whose error per MAC it saves is lowest, until the pruned model has at most
    (1 - target_reduction) of the MACs. Units in `fixed` keep the count given there (per-layer
    ratios, exclusions). Pure bookkeeping over the curves: which error means what is the
    caller's (the expected output error at each consumer, relative to its output energy).
    """
    import heapq

    if not 0 < target_reduction < 1:
        raise InputError(f"target MACs reduction must be in (0, 1), got {target_reduction!r}")
    fixed = dict(fixed or {})
    total = sum(node_macs.values())
    goal = total * (1.0 - target_reduction)
    keeps = {u.name: fixed.get(u.name, u.channels) for u in units}
    by_name = {u.name: u for u in units}

    def per_channel(unit: GroupShape) -> float:
        entries = list(unit.outputs) + list(unit.inputs)
        return sum(node_macs.get(node, 0) / total_channels for node, total_channels in entries if total_channels)

    def rounded() -> dict[str, int]:
        return {name: round_kept(by_name[name].channels, keep, round_to) for name, keep in keeps.items()}

    def macs() -> int:
        shares = {name: 1.0 - keep / by_name[name].channels for name, keep in rounded().items()}
        return macs_after(units, node_macs, shares, 1)

    heap: list[tuple[float, int, str, int]] = []
    order = {u.name: i for i, u in enumerate(units)}
    for unit in units:
        if unit.name in fixed or unit.name not in curves or not len(curves[unit.name][0]):
            continue
        price = per_channel(unit)
        sizes, errors = curves[unit.name]
        heap.append((float(errors[0]) / max(sizes[0] * price, 1e-30), order[unit.name], unit.name, 0))
    heapq.heapify(heap)
    while macs() > goal:
        if not heap:
            best = 1 - macs() / total if total else 0.0
            raise InputError(f"a {100 * target_reduction:.1f}% MACs reduction is out of reach: pruning every "
                             f"prunable layer as far as possible removes {100 * best:.1f}%")
        _price, rank, name, step = heapq.heappop(heap)
        sizes, errors = curves[name]
        keeps[name] -= int(sizes[step])
        if step + 1 < len(sizes):
            unit = by_name[name]
            price = per_channel(unit)
            heapq.heappush(heap, (float(errors[step + 1]) / max(sizes[step + 1] * price, 1e-30), rank, name, step + 1))
    return rounded()
