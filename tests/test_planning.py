"""Per-layer ratios, exclusions and the MACs target, on names and counts alone."""
from __future__ import annotations

import pytest

from onnx_lbyl.errors import InputError
from onnx_lbyl.planning import ChainShape, layer_ratios, macs_after, parse_layer_ratio, ratio_for_target_macs

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
    options = CompressOptions(ratio=0.3, layer_ratios=(("/layer3/*", 0.5),), exclude=("/layer1/layer1.0/*",))
    layers = {layer.name: layer for layer in compress(str(SHIPPED), options).report.layers}
    assert layers["/layer1/layer1.0/conv1/Conv"].channels_after == 16
    assert layers["/layer1/layer1.1/conv1/Conv"].channels_after == 11
    assert layers["/layer3/layer3.2/conv1/Conv"].channels_after == 32


def test_target_macs_is_reached_on_a_real_model():
    report = compress(str(SHIPPED), CompressOptions(target_macs=0.2)).report
    assert report.macs_after <= 0.8 * report.macs_before
    assert report.options["target_macs"] == 0.2
