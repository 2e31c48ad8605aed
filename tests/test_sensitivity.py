"""Measured-sensitivity allocation: the drift measure, the curve rescaling, and a real run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.sensitivity import SENSITIVITY_ROWS, output_drift, predicted_error, scaled_curves, sensitivity_feeds

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "resnet20_cifar10.onnx"


def test_output_drift_is_the_relative_squared_error_averaged_over_float_outputs():
    before = [np.array([3.0, 4.0]), np.array([1.0, 0.0]), np.array([1, 2])]
    after = [np.array([3.0, 5.0]), np.array([0.0, 0.0]), np.array([7, 7])]  # the int output is ignored
    assert output_drift(before, after) == pytest.approx((1 / 25 + 1.0) / 2)
    assert output_drift(before[:1], before[:1]) == 0.0


def test_predicted_error_sums_whole_steps_until_the_count_is_removed():
    curve = (np.array([1, 1, 2, 4]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert predicted_error(curve, 0) == 0.0
    assert predicted_error(curve, 2) == pytest.approx(0.3)
    assert predicted_error(curve, 3) == pytest.approx(0.6)  # the 2-channel step is taken whole
    assert predicted_error(curve, 100) == pytest.approx(1.0)


def test_curves_scale_by_the_measured_to_predicted_ratio_to_the_exponent():
    curves = {"a": (np.array([1, 1]), np.array([0.5, 1.0])), "b": (np.array([1]), np.array([2.0])),
              "flat": (np.array([1]), np.array([0.0]))}
    scaled = scaled_curves(curves, {"a": 2.0, "flat": 1.0}, {"a": 1, "flat": 1}, exponent=0.5)
    np.testing.assert_allclose(scaled["a"][1], [1.0, 2.0])  # (2.0 / 0.5) ** 0.5 = 2
    np.testing.assert_array_equal(scaled["b"][1], curves["b"][1])  # not measured: unchanged
    np.testing.assert_array_equal(scaled["flat"][1], curves["flat"][1])  # predicts nothing: unchanged
    np.testing.assert_array_equal(scaled["a"][0], curves["a"][0])  # the step sizes stay


def test_sensitivity_batch_is_bounded_by_rows_and_values():
    small = sensitivity_feeds({"x": np.zeros((SENSITIVITY_ROWS + 44, 3, 4, 4), np.float32)})
    assert small["x"].shape == (SENSITIVITY_ROWS, 3, 4, 4)
    large = sensitivity_feeds({"x": np.zeros((40, 3, 1024, 1024), np.float32)})
    assert large["x"].shape[0] == 2
    fixed = sensitivity_feeds({"x": np.zeros((40, 3, 4, 4), np.float32)}, batch=8)
    assert fixed["x"].shape[0] == 8  # a model that fixes its batch runs one whole batch


def test_sensitivity_allocation_reaches_the_target_and_says_how():
    report = compress(str(SHIPPED), CompressOptions(target_macs=0.3, allocation="sensitivity")).report
    assert report.macs_after <= 0.7 * report.macs_before
    assert report.plan == "target-macs=0.3 (allocated by error per MAC, scaled by measured output drift)"
    assert report.validation.runtime


def test_a_model_with_a_fixed_batch_is_measured_on_whole_batches():
    from test_input_shapes import dynamic_model

    options = CompressOptions(target_macs=0.3, allocation="sensitivity", round_to=1, input_shapes={"x": (2, 3, 12, 12)})
    report = compress(dynamic_model(batch=2), options).report
    assert report.plan.endswith("(allocated by error per MAC, scaled by measured output drift)")
    assert report.macs_after <= 0.7 * report.macs_before
