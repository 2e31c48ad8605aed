"""Issue 4 direction 2: LBYL's lambdas chosen per layer without labels (`lbyl-auto`)."""
from __future__ import annotations

import numpy as np

from builders import chain_model
from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.numerics.compensation import LbylLambdas, lbyl_coefficients
from onnx_lbyl.numerics.folding import ChannelLayer
from onnx_lbyl.numerics.lambda_choice import LAMBDA_GRID, choose_lbyl_lambdas, expected_output_error


def test_expected_error_is_the_output_error_on_the_samples_it_was_computed_from():
    """With M the sample second moment, tr(Q_RR E[r r^T]) is exactly the mean squared error the
    residual causes in the next layer's output on those samples (1x1 consumer: no approximation)."""
    rng = np.random.default_rng(1)
    n, m, samples = 9, 4, 300
    a = np.maximum(rng.standard_normal((samples, n)) + 0.3, 0)
    w2 = rng.standard_normal((m, n, 1, 1))
    kept, removed = np.array([0, 2, 3, 5, 8]), np.array([1, 4, 6, 7])
    s = rng.standard_normal((kept.size, removed.size))
    residual = a[:, removed] - a[:, kept] @ s
    direct = np.mean(np.sum((residual @ w2[:, removed, 0, 0].T) ** 2, axis=1))
    rows = w2[:, removed, 0, 0].T
    assert np.isclose(expected_output_error(s, a.T @ a / samples, rows @ rows.T, kept, removed), direct, rtol=1e-10)


def test_the_chosen_pair_has_the_least_expected_error_and_is_exact_for_a_multiple():
    """A removed filter that is c > 0 times a kept one (bias too) is restored exactly with no
    ridge; the choice finds that pair (error 0), where a ridge would shrink the coefficient."""
    rng = np.random.default_rng(2)
    filters = rng.standard_normal((6, 18))
    bias = rng.standard_normal(6)
    filters[5], bias[5] = 2.5 * filters[1], 2.5 * bias[1]
    layer = ChannelLayer.without_batchnorm(filters, bias)
    kept, removed = np.arange(5), np.array([5])
    z_cov = filters @ filters.T
    mean = np.maximum(bias, 0) + 0.1
    mean[5] = 2.5 * mean[1]  # moments of ReLU activations: a_5 = 2.5 a_1 exactly
    choice = choose_lbyl_lambdas(layer, kept, removed, mean, z_cov, rng.standard_normal((3, 6, 3, 3)))
    assert len(choice.errors) == len(LAMBDA_GRID)
    assert choice.errors[LAMBDA_GRID.index(choice.lambdas)] == min(choice.errors)
    assert choice.lambdas.lambda2 == 0
    assert np.allclose(choice.coefficients[:, 0], [0, 2.5, 0, 0, 0], atol=1e-8)
    assert np.allclose(choice.coefficients, lbyl_coefficients(layer, kept, removed, choice.lambdas))
    assert min(choice.errors) < 1e-12 * max(choice.errors)


def test_lbyl_auto_reports_its_lambdas_per_layer():
    rng = np.random.default_rng(3)
    model = chain_model(rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((4, 8, 3, 3)), b1=rng.standard_normal(8))
    result = compress(model, CompressOptions(round_to=1, ratio=0.5, method="lbyl-auto"))
    layer = result.report.layers[0]
    assert LbylLambdas(*layer.lambdas) in LAMBDA_GRID
    assert f"lambda1={layer.lambdas[0]:g} lambda2={layer.lambdas[1]:g}" in result.report.summary()
    assert result.report.to_dict()["layers"][0]["lambdas"] == layer.lambdas
