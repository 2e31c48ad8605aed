"""Choosing the channels to remove by the output error they cause (greedy sequential elimination).

The l2-norm criterion looks only at Conv1's filters: it ignores how well the other channels
can stand in for a channel, and how strongly the next layer reads it. Here the choice is made
on the quantity the `moments` compensation minimises, the expected error of the next layer's
output. With a = the chain's activations (covariance Sigma), G the next layer's weight with
one row per input channel (G[j] = W2[:, j, ...] flattened, energy e_j = ||G[j]||^2), K the
kept set and P = Sigma_K^{-1}:

    removing j from K and folding its best linear predictor from K \\ j,
        beta = -P[K\\j, j] / P[j, j],   G[K\\j] += beta G[j],
    adds  ||G[j]||^2 / P[j, j] = e_j * Var(a_j | a_{K\\j})  to the expected squared output error,

and this increase is exact, not a bound: the new residual lies in span(a_K) and is uncorrelated
with every earlier residual (which is orthogonal to span(a_K)), so the step errors add up.
The greedy step removes the j with the smallest increase, folds it, and downdates P by the
rank-one formula P' = P[-j, -j] - P[-j, j] P[j, -j] / P[j, j] (O(n^2 + n m) per step, m the
size of a row of G). Since projections onto nested subspaces compose, the total coefficients
folded into the kept rows equal the joint best linear predictor of all removed channels from
the final kept set, i.e. `moment_coefficients` for that set (tests/test_selection_output.py).

Spatial kernels: a 3x3 consumer reads each channel at nine positions. The error above treats
the nine reads of a channel as if they were independent copies with covariance Sigma (the
cross-position correlations are not modelled), which makes the error of channel j's kernel
simply its squared Frobenius norm times the conditional variance. For 1x1 convolutions and
Gemm consumers over a pooled/flattened block this is exact; otherwise it is an approximation
of the selection score only, not of the folded weights (those are the moments solution).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


def _precision(cov: np.ndarray, ridge: float) -> np.ndarray:
    """(cov + ridge I)^{-1} via Cholesky (the tiny ridge keeps collinear sets defined)."""
    c = np.array(cov, dtype=np.float64)
    c[np.diag_indices_from(c)] += ridge
    factor = scipy.linalg.cho_factor(c)
    return scipy.linalg.cho_solve(factor, np.eye(c.shape[0]))


def greedy_output_elimination(
    activation_cov: np.ndarray,
    next_weight: np.ndarray,
    keep: int,
    axis: int = 1,
    jitter: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Remove channels one at a time, each time the one whose removal (with its best linear
    predictor folded into the others) increases the expected output error least.

    activation_cov: (n, n) covariance of the chain's activations a = ReLU(z).
    next_weight: the consumer's weight, input-channel axis `axis` (Conv layout: axis 1).
    keep: how many channels stay.
    Returns (kept, removed, coefficients, step_errors): kept and removed sorted ascending,
    coefficients the (|kept| x |removed|) matrix S of compensation.fold_into_next_layer
    (columns in the order of `removed`), step_errors the error increase of each step in
    removal order (so their sum is the model's expected squared output error).
    """
    n = activation_cov.shape[0]
    keep = int(min(max(keep, 0), n))
    rows = np.moveaxis(np.asarray(next_weight, dtype=np.float64), axis, 0).reshape(n, -1)
    g = rows.copy()  # effective rows: what each still-kept channel carries after the folds
    energy = np.einsum("ij,ij->i", g, g)
    ridge = jitter * max(float(np.mean(np.diag(activation_cov))) if n else 0.0, 1e-30)
    precision = _precision(activation_cov, ridge)
    alive = np.arange(n)  # channels still kept, in the order of precision's rows
    coef = np.zeros((n, n))  # coef[i, j]: how much of original row j channel i carries
    order, errors = [], []
    refresh = 1e-6  # recompute P from scratch when a downdate cancels this much
    for _ in range(n - keep):
        diag = np.diag(precision)
        cost = energy[alive] / diag
        pos = int(np.argmin(cost))  # first minimum: deterministic on ties
        j = int(alive[pos])
        order.append(j)
        errors.append(float(cost[pos]))
        others = np.delete(np.arange(alive.size), pos)
        column = precision[others, pos]
        beta = -column / diag[pos]
        targets = alive[others]
        # fold: row_i += beta_i row_j (both the effective rows and their bookkeeping)
        g[targets] += beta[:, None] * g[j][None, :]
        carried = coef[j].copy()
        carried[j] += 1.0
        coef[targets] += beta[:, None] * carried[None, :]
        energy[targets] = np.einsum("ij,ij->i", g[targets], g[targets])
        before = float(np.max(np.abs(precision)))
        precision = precision[np.ix_(others, others)] - np.outer(column, column) / diag[pos]
        alive = targets
        if alive.size and float(np.max(np.abs(precision))) < refresh * before:
            precision = _precision(activation_cov[np.ix_(alive, alive)], ridge)
    kept = np.sort(alive)
    removed = np.sort(np.asarray(order, dtype=np.int64))
    return kept, removed, coef[np.ix_(kept, removed)], np.asarray(errors)
