"""Issue 4 directions 4-6: channel selection by output error (`moments-greedy`), calibration data,
and the authors' exact LBYL formula (`lbyl-authors`). Only facts with exact answers, or
sample estimates checked against the truth within a few standard errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from builders import chain_model, random_bn, run
from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.cli import main
from onnx_lbyl.graph.chains import find_chains
from onnx_lbyl.graph.probe import probe_statistics
from onnx_lbyl.numerics.compensation import lbyl_authors_coefficients, moment_coefficients
from onnx_lbyl.numerics.elimination import greedy_output_elimination
from onnx_lbyl.numerics.folding import ChannelLayer
from onnx_lbyl.numerics.statistics import relu_mean
from onnx_lbyl.sources import calibration_feeds

import onnx_graphsurgeon as gs


def _random_cov(rng, n, samples=200):
    a = rng.standard_normal((n, samples)) * rng.uniform(0.3, 2.0, (n, 1))
    a[1] += 0.8 * a[0]  # some strong correlations, so the choice is not trivial
    a[4] -= 0.5 * a[2]
    return a @ a.T / samples


def test_greedy_coefficients_equal_the_joint_moments_solution():
    """Projections onto nested subspaces compose: the coefficients accumulated over the greedy
    steps are the best linear predictor of all removed channels from the final kept set."""
    rng = np.random.default_rng(0)
    n = 12
    cov = _random_cov(rng, n)
    w2 = rng.standard_normal((5, n, 3, 3))
    kept, removed, s, errors = greedy_output_elimination(cov, w2, keep=7)
    assert kept.size == 7 and removed.size == 5 and not set(kept) & set(removed)
    joint = moment_coefficients(np.zeros(n), cov, kept, removed)
    np.testing.assert_allclose(s, joint, rtol=0, atol=1e-7 * np.abs(joint).max())
    # the step errors add up exactly to the expected squared output error of the result
    g = np.moveaxis(w2, 1, 0).reshape(n, -1)
    difference = g.copy()
    difference[kept] -= g[kept] + s @ g[removed]
    total = np.trace(difference.T @ cov @ difference)
    assert errors.sum() == pytest.approx(total, rel=1e-7)
    assert np.all(np.diff(errors) >= -1e-12 * errors.max()) or errors.size  # errors are reported per step


def test_greedy_removes_an_exact_duplicate_first():
    """A channel that is an exact positive multiple of another has zero conditional variance, so
    removing it costs nothing, however strongly the next layer reads it."""
    rng = np.random.default_rng(1)
    n = 8
    a = rng.standard_normal((n, 100))
    a[6] = 2.5 * a[3]
    cov = a @ a.T / 100
    w2 = rng.standard_normal((4, n, 1, 1))
    w2[:, 6] *= 100.0  # the duplicate is also the channel the next layer reads most
    w2[:, 3] *= 100.0
    kept, removed, s, errors = greedy_output_elimination(cov, w2, keep=n - 1)
    assert removed.size == 1 and removed[0] in (3, 6)
    assert errors[0] < 1e-6 * np.trace(cov) * np.sum(w2**2)
    other = 3 if removed[0] == 6 else 6
    ratio = 2.5 if removed[0] == 6 else 1 / 2.5
    assert s[list(kept).index(other), 0] == pytest.approx(ratio, rel=1e-5)


def _one_by_one_chain(rng, n=6, c_in=3, bn=True):
    w1 = rng.standard_normal((n, c_in, 1, 1))
    w2 = rng.standard_normal((4, n, 1, 1))
    return chain_model(w1, w2, b1=rng.standard_normal(n), bn=random_bn(rng, n) if bn else None, height=4), w1


def test_calibration_on_gaussian_data_recovers_the_true_moments():
    """1x1 Conv1 on inputs drawn i.i.d. per position from N(m, C): z = W^ x + b^ is exactly
    N(W^ m + b^, W^ C W^T), and E[ReLU(z)] has the closed form."""
    rng = np.random.default_rng(2)
    model, _ = _one_by_one_chain(rng)
    graph = gs.import_onnx(model)
    chains, _ = find_chains(graph, {"x"}, frozenset())
    from onnx_lbyl.graph.surgery import channel_layer

    layer = channel_layer(chains[0])
    m = np.array([0.5, -1.0, 0.2])
    root = rng.standard_normal((3, 3)) * 0.7
    cov_x = root @ root.T + 0.1 * np.eye(3)
    samples = 4000  # x 16 positions
    x = m[None, :, None, None] + np.einsum("ij,njhw->nihw", np.linalg.cholesky(cov_x),
                                           rng.standard_normal((samples, 3, 4, 4)))
    feeds = calibration_feeds(model, {"x": x.astype(np.float32)})
    stats = probe_statistics(model, chains, feeds)[chains[0].name]
    w = layer.folded_filters
    true_mean = w @ m + layer.folded_bias
    true_cov = w @ cov_x @ w.T
    sd = np.sqrt(np.diag(true_cov))
    count = samples * 16
    np.testing.assert_array_less(np.abs(stats.pre.mean - true_mean), 6 * sd / np.sqrt(count))
    # covariance entries: standard error of a sample covariance <= sd_i sd_k sqrt(2 / count)
    np.testing.assert_array_less(np.abs(stats.pre.cov - true_cov), 6 * np.outer(sd, sd) * np.sqrt(2 / count))
    np.testing.assert_array_less(np.abs(stats.activation_mean - relu_mean(true_mean, sd)), 6 * sd / np.sqrt(count))


def test_calibration_images_get_the_model_preprocessing():
    rng = np.random.default_rng(3)
    model, _ = _one_by_one_chain(rng)
    onnx.helper.set_model_props(model, {"lbyl_eval.preprocess": json.dumps(
        {"mean": [0.5, 0.25, 0.0], "std": [0.5, 0.5, 0.25], "scale": "1/255"})})
    images = rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    feeds = calibration_feeds(model, {"images": images})
    expected = (images / 255.0 - np.array([0.5, 0.25, 0.0])[None, :, None, None]) / np.array([0.5, 0.5, 0.25])[None, :, None, None]
    assert feeds["x"].dtype == np.float32
    np.testing.assert_allclose(feeds["x"], expected, atol=1e-6)


def test_calibration_command_line_end_to_end(tmp_path):
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((8, 3, 3, 3))
    w2 = rng.standard_normal((4, 8, 3, 3))
    model = chain_model(w1, w2, bn=random_bn(rng, 8), height=6)
    source, out, data = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "cal.npz"
    onnx.save(model, source)
    np.savez(data, images=rng.integers(0, 256, (20, 3, 6, 6), dtype=np.uint8))
    for method in ("moments", "moments-greedy", "lbyl-mean"):
        code = main([str(source), str(out), "--ratio", "0.5", "--method", method, "--calibration", str(data), "-q"])
        assert code == 0
        pruned = onnx.load(out)
        onnx.checker.check_model(pruned, full_check=True)
        w = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
        assert w["w1"].shape[0] == 4 and w["w2"].shape[1] == 4
        options = json.loads({p.key: p.value for p in pruned.metadata_props}["onnx_lbyl.options"])
        assert options["calibration"] == str(data)
        assert np.all(np.isfinite(run(pruned, rng.standard_normal((2, 3, 6, 6)))[0]))
    assert main([str(source), str(out), "--method", "moments", "--calibration", str(tmp_path / "none.npz")]) == 2


def test_statistics_source_and_calibration_fit_from_the_command_line(tmp_path):
    """--statistics and --calibration-fit reach the options the pruned model records; the two
    statistics sources of a BN model give different compensations."""
    rng = np.random.default_rng(5)
    model = chain_model(rng.standard_normal((8, 3, 3, 3)), rng.standard_normal((4, 8, 3, 3)), bn=random_bn(rng, 8), height=6)
    source, data = tmp_path / "in.onnx", tmp_path / "cal.npz"
    onnx.save(model, source)
    np.savez(data, images=rng.integers(0, 256, (20, 3, 6, 6), dtype=np.uint8))
    weights = {}
    for name, extra in (("bn", ["--statistics", "batchnorm"]), ("probe", ["--statistics", "probe"]),
                        ("auto", ["--statistics", "auto"]),
                        ("gaussian", ["--calibration", str(data), "--calibration-fit", "gaussian"])):
        out = tmp_path / f"{name}.onnx"
        assert main([str(source), str(out), "--ratio", "0.5", "--method", "moments", "-q", *extra]) == 0
        pruned = onnx.load(out)
        options = json.loads({p.key: p.value for p in pruned.metadata_props}["onnx_lbyl.options"])
        assert options["statistics"] == (extra[1] if extra[0] == "--statistics" else "probe")
        assert options["calibration_fit"] == ("gaussian" if name == "gaussian" else "activations")
        weights[name] = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}["w2"]
    assert not np.allclose(weights["bn"], weights["probe"])
    np.testing.assert_array_equal(weights["auto"], weights["bn"])  # a chain with a BN node: its statistics
    assert main([str(source), str(tmp_path / "x.onnx"), "--statistics", "guess"]) == 2


def test_calibration_with_activations_fit_is_least_squares_on_the_samples():
    """moments on measured activations = least squares with intercept of the removed activations
    on the kept ones over the same samples (1x1 consumer: the output error is that residual)."""
    rng = np.random.default_rng(5)
    model, _ = _one_by_one_chain(rng)
    x = rng.standard_normal((300, 3, 4, 4)).astype(np.float32)
    result = compress(model, CompressOptions(round_to=1, ratio=0.5, method="moments", calibration={"x": x}))
    kept = np.array([int(i) for i in range(6) if i not in result.report.layers[0].removed])
    removed = np.array(result.report.layers[0].removed)
    # activations of the original, per position
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name="a"))
    a = run(probe, x)[1].astype(np.float64)
    a = np.moveaxis(a, 1, 0).reshape(6, -1)
    design = np.vstack([a[kept], np.ones(a.shape[1])]).T
    coef = np.linalg.lstsq(design, a[removed].T, rcond=None)[0]
    w2 = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w2")).astype(np.float64)
    expected_w2 = w2[:, kept] + np.einsum("kr,orhw->okhw", coef[:-1], w2[:, removed])
    got = {t.name: onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer}
    np.testing.assert_allclose(got["w2"], expected_w2, rtol=1e-4, atol=1e-5)


def _authors_transcription(w, gamma, beta, mu, var, kept, j, lam1, lam2):
    """ANCHORS.md §1.2 with D1 (scalar diagonal), D2 (running variance as sigma), element by element."""
    x = w[kept].T
    a = np.array([mu[k] - var[k] * beta[k] / gamma[k] for k in kept])
    k_scale = np.array([(gamma[j] / gamma[k]) * (var[k] / var[j]) for k in kept])
    r = gamma[j] / var[j]
    b = gamma[j] * mu[j] / var[j] - beta[j]
    matrix = x.T @ x
    for i in range(len(kept)):
        matrix[i, i] += lam1 * r**2 * np.dot(a, a) + lam2 * k_scale[i] ** 2
    return np.linalg.solve(matrix, x.T @ w[j] + lam1 * r * b * a)


def test_lbyl_authors_matches_the_transcription_and_is_a_stationary_point():
    rng = np.random.default_rng(6)
    n, d = 10, 27
    bn = random_bn(rng, n)
    w = rng.standard_normal((n, d))
    layer = ChannelLayer.with_batchnorm(w, None, bn["gamma"], bn["beta"], bn["mean"], bn["var"], bn["eps"])
    kept, removed = np.array([0, 2, 3, 5, 7, 8, 9]), np.array([1, 4, 6])
    lam1, lam2 = 0.3, 0.05
    s = lbyl_authors_coefficients(layer, kept, removed, lam1, lam2)
    for col, j in enumerate(removed):
        expected = _authors_transcription(w, bn["gamma"], bn["beta"], bn["mean"], bn["var"], kept, j, lam1, lam2)
        np.testing.assert_allclose(s[:, col], expected, rtol=1e-10, atol=1e-12)
        # the gradient of the D1 loss ||w_j - X s||^2 + lam1 r^2 |a|^2 |s|^2 - 2 lam1 r b a.s
        # + lam2 sum (K s)^2 vanishes there
        g, v, beta, mu = bn["gamma"], bn["var"], bn["beta"], bn["mean"]
        a = mu[kept] - v[kept] * beta[kept] / g[kept]
        k_scale = (g[j] / g[kept]) * (v[kept] / v[j])
        r, b = g[j] / v[j], g[j] * mu[j] / v[j] - beta[j]
        sc = s[:, col]
        grad = (-2 * w[kept] @ (w[j] - w[kept].T @ sc) + 2 * lam1 * r**2 * (a @ a) * sc
                - 2 * lam1 * r * b * a + 2 * lam2 * k_scale**2 * sc)
        assert np.abs(grad).max() < 1e-9 * (1 + np.abs(w).max() ** 2)


def test_lbyl_authors_without_batchnorm_reduces_to_folded_ridge():
    """ANCHORS §1.4: no BN node -> K = 1, a_k = -b_k, r = 1, b = -b_j: a plain ridge on
    [w; bias] with a scalar bias diagonal."""
    rng = np.random.default_rng(7)
    n, d = 9, 12
    w, bias = rng.standard_normal((n, d)), rng.standard_normal(n)
    layer = ChannelLayer.without_batchnorm(w, bias)
    kept, removed = np.arange(6), np.arange(6, 9)
    lam1, lam2 = 0.2, 0.1
    s = lbyl_authors_coefficients(layer, kept, removed, lam1, lam2)
    x, bp = w[kept].T, bias[kept]
    matrix = x.T @ x + (lam1 * bp @ bp + lam2) * np.eye(kept.size)
    expected = np.linalg.solve(matrix, x.T @ w[removed].T + lam1 * np.outer(bp, bias[removed]))
    np.testing.assert_allclose(s, expected, rtol=1e-10, atol=1e-12)


def test_moments_greedy_restores_an_exact_duplicate_channel():
    """End to end: Conv1 filter 5 is 2x filter 1 (consistent bias, no BN): removing one channel
    with moments-greedy removes one of the pair and the output is unchanged."""
    rng = np.random.default_rng(8)
    w1 = rng.standard_normal((6, 3, 3, 3))
    b1 = rng.standard_normal(6)
    w1[5], b1[5] = 2.0 * w1[1], 2.0 * b1[1]
    w2 = rng.standard_normal((4, 6, 3, 3))
    model = chain_model(w1, w2, b1=b1)
    x = rng.standard_normal((16, 3, 6, 6)).astype(np.float32)
    result = compress(model, CompressOptions(round_to=1, ratio=0.1, method="moments-greedy", calibration={"x": x}))
    assert result.report.layers[0].removed in ([1], [5])
    np.testing.assert_allclose(run(result.model, x)[0], run(model, x)[0], rtol=1e-4, atol=1e-4)


def test_block_steps_for_wide_layers_still_give_the_joint_moment_solution():
    """More than MAX_STEPS removals go in blocks; the folded coefficients must still be the
    joint best linear predictor for the final kept set, and the step errors must add up."""
    from onnx_lbyl.numerics.compensation import moment_coefficients
    from onnx_lbyl.numerics.elimination import MAX_STEPS, greedy_output_elimination

    rng = np.random.default_rng(21)
    n = 3 * MAX_STEPS
    a = rng.standard_normal((n, n)) / np.sqrt(n)
    cov = a @ a.T + 0.1 * np.eye(n)
    weight = rng.standard_normal((5, n, 1, 1))
    kept, removed, coefficients, errors = greedy_output_elimination(cov, weight, keep=n // 4)
    assert kept.size == n // 4 and removed.size == n - n // 4 and len(errors) <= MAX_STEPS
    np.testing.assert_allclose(coefficients, moment_coefficients(np.zeros(n), cov, kept, removed), atol=1e-9)
    rows = weight[:, :, 0, 0].T  # (n, out)
    residual_cov = cov[np.ix_(removed, removed)] - cov[np.ix_(removed, kept)] @ np.linalg.solve(
        cov[np.ix_(kept, kept)], cov[np.ix_(kept, removed)])
    expected = np.trace(rows[removed].T @ residual_cov @ rows[removed])
    assert np.isclose(sum(errors), expected, rtol=1e-6)
