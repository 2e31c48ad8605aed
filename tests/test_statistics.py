"""MATH.md §5: Gaussian statistics of rectified pre-activations, the mean (bias) correction,
and the `moments` method. Every expectation is checked against Monte Carlo with a fixed seed
and a tolerance of a few standard errors of the sample mean."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from builders import chain_model, multiple_case, run
from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.numerics.compensation import moment_coefficients
from onnx_lbyl.numerics.statistics import (
    GaussianMoments,
    bias_correction,
    relu_covariance,
    relu_mean,
    relu_second_moments,
    residual_mean,
)

SAMPLES = 1_000_000
SIGMAS = 6.0  # |estimate - exact| < 6 standard errors: a false alarm has probability ~1e-9


def test_relu_mean_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean = np.array([0.0, 1.5, -1.0, 0.3, -3.0])
    std = np.array([1.0, 0.5, 2.0, 0.1, 1.0])
    z = mean + std * rng.standard_normal((SAMPLES, mean.size))
    a = np.maximum(z, 0.0)
    standard_error = a.std(axis=0) / np.sqrt(SAMPLES)
    assert np.all(np.abs(relu_mean(mean, std) - a.mean(axis=0)) < SIGMAS * standard_error + 1e-12)
    # zero spread: ReLU of the mean, exactly
    assert np.array_equal(relu_mean(np.array([-1.0, 2.0]), np.zeros(2)), np.array([0.0, 2.0]))


def test_relu_second_moments_match_monte_carlo_including_collinear_pairs():
    rng = np.random.default_rng(1)
    mean = np.array([0.3, -0.5, 1.0, 0.0, 0.6, -0.2])
    std = np.array([1.0, 0.7, 2.0, 0.5, 2.0, 0.4])
    a = rng.standard_normal((6, 6))
    corr = a @ a.T
    corr /= np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
    # channel 4 is perfectly correlated with channel 2 (rho = +1), channel 5 anti-correlated
    # with channel 0 (rho = -1): the closed form switches to its one-dimensional integral there.
    corr[4, :], corr[:, 4] = corr[2, :], corr[:, 2]
    corr[5, :], corr[:, 5] = -corr[0, :], -corr[:, 0]
    corr[4, 5] = corr[5, 4] = -corr[2, 0]
    np.fill_diagonal(corr, 1.0)
    moments = GaussianMoments(mean, corr * np.outer(std, std))
    eigval, eigvec = np.linalg.eigh(moments.cov)
    root = eigvec * np.sqrt(np.clip(eigval, 0, None))
    z = mean + rng.standard_normal((SAMPLES, 6)) @ root.T
    act = np.maximum(z, 0.0)
    products = act[:, :, None] * act[:, None, :]
    standard_error = products.std(axis=0) / np.sqrt(SAMPLES)
    exact = relu_second_moments(moments)
    assert np.all(np.abs(exact - products.mean(axis=0)) < SIGMAS * standard_error + 1e-12)
    first, cov = relu_covariance(moments)
    assert np.allclose(cov, exact - np.outer(first, first))


def test_relu_second_moments_by_row_blocks_equal_the_whole_matrix(monkeypatch):
    """The pairs are computed a block of rows at a time (memory); each pair depends only on
    its two channels, so any block size gives the same bits, degenerate and collinear channels
    included."""
    from onnx_lbyl.numerics import statistics

    rng = np.random.default_rng(2)
    a = rng.standard_normal((9, 5))
    cov = a @ a.T
    cov[1], cov[:, 1] = 2 * cov[0], 2 * cov[:, 0]  # collinear with channel 0
    cov[1, 1] = 4 * cov[0, 0]
    cov[3], cov[:, 3] = 0.0, 0.0  # no spread
    moments = GaussianMoments(rng.standard_normal(9), cov)
    monkeypatch.setattr(statistics, "PAIR_BLOCK", 1 << 30)
    whole = relu_second_moments(moments)
    for block in (1, 20, 40):  # pairs per block, 9 a row: one row, two rows, four rows (the last block short)
        monkeypatch.setattr(statistics, "PAIR_BLOCK", block)
        assert np.array_equal(relu_second_moments(moments), whole)


def test_residual_mean_and_bias_correction_are_the_formulas():
    coefficients = np.array([[0.5, 0.0], [0.25, 2.0]])  # kept (0, 2), removed (1, 3)
    kept, removed = np.array([0, 2]), np.array([1, 3])
    activation_mean = np.array([1.0, 2.0, 4.0, 8.0])
    expected = residual_mean(coefficients, kept, removed, activation_mean)
    assert np.allclose(expected, [2.0 - 0.5 * 1.0 - 0.25 * 4.0, 8.0 - 2.0 * 4.0])
    w2 = np.arange(2 * 4 * 3 * 3, dtype=float).reshape(2, 4, 3, 3)
    delta = bias_correction(w2, removed, expected)
    assert np.allclose(delta, [w2[m, 1].sum() * expected[0] + w2[m, 3].sum() * expected[1] for m in range(2)])


def test_moment_coefficients_are_the_least_squares_predictor():
    # With sample moments, S must equal ordinary least squares with an intercept.
    rng = np.random.default_rng(2)
    a = np.maximum(rng.standard_normal((5000, 5)) @ rng.standard_normal((5, 5)), 0.0)
    kept, removed = np.array([0, 1, 3]), np.array([2, 4])
    s = moment_coefficients(a.mean(axis=0), np.cov(a.T, bias=True), kept, removed, jitter=0.0)
    design = np.hstack([a[:, kept], np.ones((len(a), 1))])
    ols = np.linalg.lstsq(design, a[:, removed], rcond=None)[0][:3]
    assert np.allclose(s, ols, atol=1e-8)


# --- graph level ---------------------------------------------------------------------------

C_IN, N, M = 6, 5, 4


def _white_input_case(rng, with_conv2_bias: bool):
    """1x1 Conv1 on white input x ~ N(0, I): u_i = w_i . x + b_i is exactly N(b_i, ||w_i||^2),
    so BN statistics mean = b, var = ||w||^2 - eps are the true ones, BN's output is exactly
    N(beta, gamma^2), and the correlation of two channels is the cosine of their filters: every
    assumption of the Gaussian model holds. Conv2 is 1x1, so no zero-padded border exists."""
    w1 = rng.standard_normal((N, C_IN, 1, 1))
    b1 = rng.normal(0.0, 0.5, N)
    eps = 1e-5
    bn = {
        "gamma": rng.uniform(0.5, 2.0, N),
        "beta": rng.normal(0.0, 0.7, N),
        "mean": b1.copy(),
        "var": np.sum(w1.reshape(N, -1) ** 2, axis=1) - eps,
        "eps": eps,
    }
    w2 = rng.standard_normal((M, N, 1, 1))
    b2 = rng.normal(0.0, 0.1, M) if with_conv2_bias else None
    return chain_model(w1, w2, b1=b1, b2=b2, bn=bn, height=300)


@pytest.mark.parametrize("method", ["prune-mean", "lbyl-mean", "merge-mean", "moments"])
def test_mean_correction_makes_the_expected_output_error_zero(method):
    rng = np.random.default_rng(3)
    model = _white_input_case(rng, with_conv2_bias=False)
    x = rng.standard_normal((1, C_IN, 300, 300))  # 90,000 independent positions
    original = run(model, x)[0]

    corrected = compress(model, CompressOptions(round_to=1, ratio=0.4, method=method))
    error = (original - run(corrected.model, x)[0]).reshape(M, -1)
    standard_error = error.std(axis=1) / np.sqrt(error.shape[1])
    assert np.all(np.abs(error.mean(axis=1)) < SIGMAS * standard_error)

    base = method.replace("-mean", "") if method != "moments" else "prune"
    uncorrected = compress(model, CompressOptions(round_to=1, ratio=0.4, method=base))
    shift = (original - run(uncorrected.model, x)[0]).reshape(M, -1).mean(axis=1)
    assert np.max(np.abs(shift)) > 50 * np.max(standard_error)  # there was a shift to remove


def test_moments_has_the_smallest_expected_squared_error_when_its_model_holds():
    rng = np.random.default_rng(4)
    model = _white_input_case(rng, with_conv2_bias=True)
    x = rng.standard_normal((1, C_IN, 300, 300))
    original = run(model, x)[0]
    errors = {}
    for method in ("prune-mean", "lbyl-mean", "merge-mean", "moments"):
        pruned = compress(model, CompressOptions(round_to=1, ratio=0.4, method=method)).model
        errors[method] = float(np.mean((original - run(pruned, x)[0]) ** 2))
    assert errors["moments"] == min(errors.values())


def test_a_conv2_without_bias_gets_its_own_new_bias_and_one_with_bias_keeps_its_name():
    rng = np.random.default_rng(5)
    for with_bias in (False, True):
        model = _white_input_case(rng, with_conv2_bias=with_bias)
        pruned = compress(model, CompressOptions(round_to=1, ratio=0.4, method="lbyl-mean")).model
        onnx.checker.check_model(pruned, full_check=True)
        conv2 = [n for n in pruned.graph.node if n.name == "conv2"][0]
        assert len(conv2.input) == 3
        names = [i.name for i in pruned.graph.initializer]
        assert names.count(conv2.input[2]) == 1
        assert conv2.input[2] == ("b2" if with_bias else "w2_bias")
    # the baselines never touch Conv2's bias
    model = _white_input_case(rng, with_conv2_bias=False)
    for method in ("lbyl", "merge", "prune"):
        conv2 = [n for n in compress(model, CompressOptions(round_to=1, ratio=0.4, method=method)).model.graph.node if n.name == "conv2"][0]
        assert len(conv2.input) == 2


@pytest.mark.parametrize("method", ["moments", "lbyl-mean", "merge-mean"])
@pytest.mark.parametrize("with_bn", [False, True], ids=["folded-probe", "batchnorm"])
def test_statistical_methods_restore_a_positive_multiple_exactly(method, with_bn):
    if method == "merge-mean" and with_bn:
        pytest.skip("the authors' BN-aware merge scale is not the exact-case scale (MATH.md §4)")
    rng = np.random.default_rng(6)
    model = multiple_case(rng, with_bn)
    x = rng.standard_normal((2, 3, 6, 6))
    original = run(model, x)[0]
    options = CompressOptions(round_to=1, ratio=0.25, method=method, lambda1=1.0, lambda2=0.0)
    result = compress(model, options)
    assert result.report.layers[0].removed == [3]
    restored = run(result.model, x)[0]
    assert np.linalg.norm(original - restored) / np.linalg.norm(original) < 1e-5


def test_l2_scores_by_row_blocks_are_the_full_norms(monkeypatch):
    """The l2 criterion forms the folded filters a block of rows at a time; any block size
    gives the norms of the whole folded matrix, to the bit."""
    from onnx_lbyl.numerics import selection
    from onnx_lbyl.numerics.folding import ChannelLayer

    rng = np.random.default_rng(3)
    filters = rng.standard_normal((37, 5, 3, 3)).astype(np.float32)
    stats = [rng.standard_normal(37), rng.standard_normal(37), rng.standard_normal(37), rng.random(37) + 0.1]
    expected = np.linalg.norm(ChannelLayer.with_batchnorm(filters, None, *stats, 1e-5).folded_filters, axis=1)
    for values in (1, 90, 1000, 10**6):  # rows of 45 values: blocks of 1, 2, 22 and all 37 rows
        monkeypatch.setattr(selection, "ROW_BLOCK_VALUES", values)
        layer = ChannelLayer.with_batchnorm(filters, None, *stats, 1e-5)
        assert np.array_equal(selection._l2(layer, rng), expected)
        assert "folded_filters" not in layer.__dict__


def test_a_folded_conv_is_the_same_function_under_any_batchnorm_statistics():
    """Why a folded export's BN statistics cannot be recovered from its weights (issue 11):
    for any running mean and variance, and any gamma and beta, a BN layer holding exactly
    those numbers folds back to the same filters and bias. The weights single out none of
    them; the pre-activation moments the methods need depend on the data reaching the layer."""
    from onnx_lbyl.numerics.folding import ChannelLayer

    rng = np.random.default_rng(5)
    folded_w, folded_b = rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    for _ in range(3):
        mean, var = rng.standard_normal(6) * 5, rng.random(6) * 10 + 0.01
        gamma, beta, eps = rng.uniform(0.1, 3, 6) * rng.choice([-1, 1], 6), rng.standard_normal(6), 1e-5
        sd = np.sqrt(var + eps)
        raw_w = folded_w * (sd / gamma)[:, None, None, None]
        raw_b = (folded_b - beta) * sd / gamma + mean
        layer = ChannelLayer.with_batchnorm(raw_w, raw_b, gamma, beta, mean, var, eps)
        np.testing.assert_allclose(layer.folded_filters, folded_w.reshape(6, -1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.folded_bias, folded_b, rtol=1e-12, atol=1e-12)
