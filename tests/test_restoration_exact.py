"""MATH.md §8: the cases where restoration has an exact answer, checked to float precision."""
from __future__ import annotations

import numpy as np
import pytest

from builders import chain_model, fold_bn, multiple_case, random_bn, run
from onnx_lbyl import CompressOptions, compress
from onnx_lbyl.numerics.compensation import LbylLambdas, fold_into_next_layer, lbyl_coefficients
from onnx_lbyl.numerics.folding import ChannelLayer

C_IN, N, M = 3, 4, 5


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.mark.parametrize("with_bn", [False, True], ids=["folded", "batchnorm"])
def test_lbyl_restores_a_positive_multiple_exactly_and_prune_does_not(with_bn):
    rng = np.random.default_rng(1)
    model = multiple_case(rng, with_bn)
    x = rng.standard_normal((2, C_IN, 6, 6))
    original = run(model, x)[0]

    exact = compress(model, CompressOptions(round_to=1, ratio=0.25, method="lbyl", lambda1=1.0, lambda2=0.0))
    assert exact.report.layers[0].removed == [3]
    assert _relative_error(original, run(exact.model, x)[0]) < 1e-5

    nearly = compress(model, CompressOptions(round_to=1, ratio=0.25, method="lbyl", lambda1=1.0, lambda2=1e-9))
    assert _relative_error(original, run(nearly.model, x)[0]) < 1e-5

    pruned = compress(model, CompressOptions(round_to=1, ratio=0.25, method="prune"))
    assert pruned.report.layers[0].removed == [3]
    assert _relative_error(original, run(pruned.model, x)[0]) > 1e-2


def test_merge_restores_a_positive_multiple_exactly_without_batchnorm():
    rng = np.random.default_rng(2)
    model = multiple_case(rng, with_bn=False)
    x = rng.standard_normal((2, C_IN, 6, 6))
    merged = compress(model, CompressOptions(round_to=1, ratio=0.25, method="merge"))
    assert merged.report.layers[0].compensated == 1
    assert _relative_error(run(model, x)[0], run(merged.model, x)[0]) < 1e-5


def test_lbyl_is_exact_without_relu_when_removed_filters_lie_in_the_span():
    """No activation: z is linear, so a removed channel in the span of the kept ones (filter
    and bias together) is rewritten exactly by the coefficients LBYL finds with lambdas -> 0."""
    rng = np.random.default_rng(3)
    d, p, r = 27, 6, 3
    kept_w, kept_b = rng.standard_normal((p, d)), rng.standard_normal(p)
    mix = rng.standard_normal((r, p))
    filters = np.vstack([kept_w, mix @ kept_w])
    bias = np.concatenate([kept_b, mix @ kept_b])
    bn = random_bn(rng, p + r)
    scale = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
    # store raw parameters whose BN-folded form is (filters, bias)
    layer = ChannelLayer.with_batchnorm(
        filters / scale[:, None], (bias - bn["beta"]) / scale + bn["mean"],
        bn["gamma"], bn["beta"], bn["mean"], bn["var"], bn["eps"])
    kept, removed = np.arange(p), np.arange(p, p + r)
    coefficients = lbyl_coefficients(layer, kept, removed, LbylLambdas(lambda1=1.0, lambda2=0.0))

    x = rng.standard_normal((d, 50))
    z = layer.folded_filters @ x + layer.folded_bias[:, None]  # identity activation
    w2 = rng.standard_normal((4, p + r))
    y = w2 @ z
    y_restored = fold_into_next_layer(w2, kept, removed, coefficients) @ z[kept]
    np.testing.assert_allclose(y_restored, y, rtol=1e-9, atol=1e-9)
    assert _relative_error(y, w2[:, kept] @ z[kept]) > 1e-2  # dropping them is not exact


def test_ratio_zero_keeps_structure_and_values():
    rng = np.random.default_rng(4)
    model = chain_model(rng.standard_normal((N, C_IN, 3, 3)), rng.standard_normal((M, N, 3, 3)),
                        bn=random_bn(rng, N))
    result = compress(model, CompressOptions(round_to=1, ratio=0.0))
    assert [n.op_type for n in result.model.graph.node] == [n.op_type for n in model.graph.node]
    shapes = lambda m: {t.name: list(t.dims) for t in m.graph.initializer}  # noqa: E731
    assert shapes(result.model) == shapes(model)
    x = rng.standard_normal((2, C_IN, 6, 6))
    np.testing.assert_allclose(run(result.model, x)[0], run(model, x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["lbyl", "prune"])
@pytest.mark.parametrize("criterion", ["l2", "l1", "gm"])
def test_batchnorm_and_folded_exports_give_the_same_pruned_function(method, criterion):
    rng = np.random.default_rng(5)
    w1, b1 = rng.standard_normal((8, C_IN, 3, 3)), rng.standard_normal(8)
    w2, b2 = rng.standard_normal((M, 8, 3, 3)), rng.standard_normal(M)
    bn = random_bn(rng, 8)
    with_bn = chain_model(w1, w2, b1=b1, b2=b2, bn=bn)
    folded_w, folded_b = fold_bn(w1, b1, bn)
    folded = chain_model(folded_w, w2, b1=folded_b, b2=b2)

    options = CompressOptions(round_to=1, ratio=0.5, method=method, criterion=criterion)
    a, b = compress(with_bn, options), compress(folded, options)
    assert a.report.layers[0].removed == b.report.layers[0].removed
    x = rng.standard_normal((3, C_IN, 6, 6))
    np.testing.assert_allclose(run(a.model, x)[0], run(b.model, x)[0], rtol=1e-4, atol=1e-4)
