"""Per-layer ratios, exclusions and the MACs target, on names and counts alone."""
from __future__ import annotations

import pytest

from onnx_lbyl.errors import InputError
from onnx_lbyl.options import CompressOptions
from onnx_lbyl.planning import (ChainShape, GroupShape, allocate, channel_multiple, kept_channels, layer_ratios, macs_after,
                               parse_layer_ratio, ratio_for_target_macs)

CHAINS = [
    ChainShape("layer1.conv1", "layer1.conv1", "layer1.conv2", 10),
    ChainShape("layer2.conv1", "layer2.conv1", "layer2.conv2", 20),
    ChainShape("layer2.conv2", "layer2.conv2", "layer2.conv3", 20),  # bottleneck: conv2 is both
]
MACS = {"stem": 1000, "layer1.conv1": 100, "layer1.conv2": 100, "layer2.conv1": 200,
        "layer2.conv2": 400, "layer2.conv3": 200}


def test_last_matching_pattern_wins_and_exclusion_beats_everything():
    ratios = layer_ratios(CHAINS, 0.3, per_layer=[("layer2.*", 0.5), ("layer2.conv2", 0.1)], exclude=["layer1.*"])
    assert ratios == {"layer1.conv1": 0.0, "layer2.conv1": 0.5, "layer2.conv2": 0.1}


def test_macs_scale_with_kept_input_and_output_channels():
    ratios = {"layer1.conv1": 0.5, "layer2.conv1": 0.5, "layer2.conv2": 0.5}
    # layer1: 100*0.5 + 100*0.5; layer2: conv1 200*0.5, conv2 400*0.5*0.5, conv3 200*0.5
    assert macs_after(CHAINS, MACS, ratios) == 1000 + 50 + 50 + 100 + 100 + 100
    assert macs_after(CHAINS, MACS, dict.fromkeys(ratios, 0.0)) == sum(MACS.values())


def test_target_macs_finds_the_smallest_ratio_that_reaches_it():
    ratio = ratio_for_target_macs(CHAINS, MACS, 0.2)
    total = sum(MACS.values())
    assert macs_after(CHAINS, MACS, layer_ratios(CHAINS, ratio)) <= 0.8 * total
    assert macs_after(CHAINS, MACS, layer_ratios(CHAINS, ratio - 0.01)) > 0.8 * total


def test_default_rounding_is_a_multiple_of_8_smaller_for_narrow_layers_never_above_the_width():
    assert CompressOptions().round_to == 8
    # (channels, ratio) -> kept at --round-to 8; floor(n (1 - ratio)) at --round-to 1
    cases = {(256, 0.3): 184, (128, 0.3): 96, (64, 0.3): 48, (64, 0.1): 64, (32, 0.3): 24, (16, 0.3): 12,
             (24, 0.3): 16, (8, 0.3): 6, (6, 0.5): 3, (2048, 0.1): 1848, (100, 0.3): 72, (100, 0.01): 100}
    assert {case: kept_channels(*case, round_to=8) for case in cases} == cases
    assert kept_channels(64, 0.3, round_to=1) == 44 and kept_channels(16, 0.3, round_to=1) == 11
    assert [channel_multiple(n, 8) for n in (1, 4, 8, 15, 16, 31, 32, 1024)] == [1, 1, 2, 2, 4, 4, 8, 8]
    assert channel_multiple(64, 16) == 16 and channel_multiple(63, 16) == 8 and channel_multiple(64, 1) == 1
    for n in range(1, 300):
        for ratio in (0.0, 0.1, 0.3, 0.5, 0.9):
            keep = kept_channels(n, ratio, round_to=8)
            assert kept_channels(n, ratio, round_to=1) <= keep <= n and (keep == n or keep % channel_multiple(n, 8) == 0)


def test_target_macs_counts_the_rounded_channels():
    chains = [ChainShape("a", "a", "b", 64), ChainShape("c", "c", "d", 256)]
    macs = {"a": 1000, "b": 1000, "c": 3000, "d": 3000}
    ratio = ratio_for_target_macs(chains, macs, 0.3, round_to=8)
    assert macs_after(chains, macs, layer_ratios(chains, ratio), round_to=8) <= 0.7 * sum(macs.values())
    assert macs_after(chains, macs, layer_ratios(chains, ratio - 0.01), round_to=8) > 0.7 * sum(macs.values())
    units = [GroupShape("a", 64, (("a", 64),), (("b", 64),)), GroupShape("c", 256, (("c", 256),), (("d", 256),))]
    curves = {"a": ([1] * 63, [1.0] * 63), "c": ([1] * 255, [1.0] * 255)}
    keeps = allocate(units, curves, macs, 0.3, round_to=8)
    assert all(k % 8 == 0 for k in keeps.values())
    kept_macs = macs_after(units, macs, {u.name: 1 - keeps[u.name] / u.channels for u in units})
    assert kept_macs <= 0.7 * sum(macs.values())


def test_unreachable_target_says_how_far_one_can_go():
    with pytest.raises(InputError, match=r"out of reach: pruning every prunable chain as far as possible removes \d+\.\d%"):
        ratio_for_target_macs(CHAINS, MACS, 0.9)


@pytest.mark.parametrize("text, expected", [("layer2.*=0.5", ("layer2.*", 0.5)), ("a=b=0", ("a=b", 0.0))])
def test_parse_layer_ratio(text, expected):
    assert parse_layer_ratio(text) == expected


@pytest.mark.parametrize("text", ["layer2", "=0.5", "x=1", "x=abc", "x=-0.1"])
def test_parse_layer_ratio_rejects(text):
    with pytest.raises(InputError, match="PATTERN=RATIO"):
        parse_layer_ratio(text)


# The same rules through compress(), on the shipped ResNet-20.
from pathlib import Path  # noqa: E402

from onnx_lbyl import CompressOptions, compress  # noqa: E402

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "resnet20_cifar10.onnx"


def test_per_layer_ratios_and_exclusions_on_a_real_model():
    options = CompressOptions(round_to=1, ratio=0.3, layer_ratios=(("/layer3/*", 0.5),), exclude=("/layer1/layer1.0/*",))
    layers = {layer.name: layer for layer in compress(str(SHIPPED), options).report.layers}
    assert layers["/layer1/layer1.0/conv1/Conv"].channels_after == 16
    assert layers["/layer1/layer1.1/conv1/Conv"].channels_after == 11
    assert layers["/layer3/layer3.2/conv1/Conv"].channels_after == 32


def test_target_macs_is_reached_on_a_real_model():
    report = compress(str(SHIPPED), CompressOptions(round_to=1, target_macs=0.2)).report
    assert report.macs_after <= 0.8 * report.macs_before
    assert report.options["target_macs"] == 0.2
