"""Choosing LBYL's lambda1/lambda2 per layer without labels (issue 4, direction 2).

LBYL's authors tuned lambda1 and lambda2 per model and ratio against test labels. Here every
layer picks its own pair from a small grid by the quantity the compensation is meant to keep
small: the expected squared error it leaves in the next layer's output, under the Gaussian
model of the activations (numerics.statistics). With a = ReLU(z), K the kept and R the removed
channels, S the (|K| x |R|) LBYL coefficients and Q = G G^T the Gram matrix of the next
layer's weight rows (row j = everything the next layer reads from channel j), the residual
r = a_R - S^T a_K reaches the next layer's output as G_R^T r, so

    error(S) = E ||G_R^T r||^2 = tr(Q_RR E[r r^T]),
    E[r r^T] = M_RR - S^T M_KR - M_RK S + S^T M_KK S,      M = E[a a^T] (not centred),

since LBYL leaves no bias correction behind (its mean error counts). Spatial kernels are
treated as in numerics.elimination: the reads of one channel at different kernel positions
are taken as independent copies, so this ranks candidates rather than predicting the error.
NumPy only; the grid is the one the benchmark's tuned-LBYL anchor searches with test labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compensation import LbylLambdas, lbyl_coefficients
from .folding import ChannelLayer

LAMBDA_GRID = tuple(LbylLambdas(l1, l2) for l1 in (0.0, 1.0) for l2 in (0.0, 0.01, 0.1, 1.0))


@dataclass(frozen=True)
class LambdaChoice:
    """The pair a layer chose, its coefficients, and the expected error of every candidate."""

    lambdas: LbylLambdas
    coefficients: np.ndarray
    errors: tuple[float, ...]  # in the order of the grid


def expected_output_error(
    coefficients: np.ndarray, second_moment: np.ndarray, removed_gram: np.ndarray, kept: np.ndarray, removed: np.ndarray
) -> float:
    """tr(Q_RR E[r r^T]) for r = a_R - S^T a_K (module docstring); `removed_gram` is Q_RR, the
    Gram matrix of the removed channels' rows only."""
    m_kk = second_moment[np.ix_(kept, kept)]
    m_kr = second_moment[np.ix_(kept, removed)]
    m_rr = second_moment[np.ix_(removed, removed)]
    cross = coefficients.T @ m_kr
    residual = m_rr - cross - cross.T + coefficients.T @ m_kk @ coefficients
    return float(np.sum(removed_gram * residual))


def choose_lbyl_lambdas(
    layer: ChannelLayer,
    kept: np.ndarray,
    removed: np.ndarray,
    activation_mean: np.ndarray,
    activation_cov: np.ndarray,
    next_weight: np.ndarray,
    grid: tuple[LbylLambdas, ...] = LAMBDA_GRID,
    axis: int = 1,
) -> LambdaChoice:
    """The grid pair whose LBYL coefficients leave the least expected next-layer output error
    (the first such pair on ties). `next_weight` has its input-channel axis at `axis`."""
    n = activation_mean.size
    rows = np.moveaxis(np.asarray(next_weight, dtype=np.float64), axis, 0).reshape(n, -1)[removed]
    removed_gram = rows @ rows.T
    second = activation_cov + np.outer(activation_mean, activation_mean)
    best, errors = None, []
    for lambdas in grid:
        coefficients = lbyl_coefficients(layer, kept, removed, lambdas)
        error = expected_output_error(coefficients, second, removed_gram, kept, removed)
        errors.append(error)
        if best is None or error < best[0]:
            best = (error, lambdas, coefficients)
    return LambdaChoice(best[1], best[2], tuple(errors))
