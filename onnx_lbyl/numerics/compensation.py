"""How the channels that stay absorb the channels that leave (MATH.md §2–§4).

Every method returns S, a (p x r) matrix: column j says how removed channel J[j] is
rewritten as a combination of the kept channels, a_J[j] ~ sum_i S[i, j] a_P[i]. Folding S
into the next layer (`fold_into_next_layer`) is the same for every method, so methods
differ only in how they choose S. Plain pruning is S = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .folding import ChannelLayer


@dataclass(frozen=True)
class LbylLambdas:
    """The two regularisation weights of LBYL, as this tool defines them.

    lambda1 weighs the bias mismatch (BE) against the filter mismatch (RE): with inputs of
    unit variance, lambda1 = 1 makes the loss the expected squared pre-activation error.
    lambda2 is the ridge (the stand-in for the ReLU error, WARE) relative to the mean squared
    norm of the kept folded filters, so one value means the same at every layer whatever
    the scale of its weights. MATH.md §3's absolute ridge is lambda2 * mean_k ||w^_k||^2.
    """

    lambda1: float = 1.0
    lambda2: float = 0.1


DEFAULT_LAMBDAS = LbylLambdas()


def prune_coefficients(layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Plain pruning: the removed channels leave nothing behind."""
    return np.zeros((kept.size, removed.size))


def lbyl_coefficients(
    layer: ChannelLayer,
    kept: np.ndarray,
    removed: np.ndarray,
    lambdas: LbylLambdas = DEFAULT_LAMBDAS,
) -> np.ndarray:
    """LBYL (MATH.md §3): every kept channel absorbs part of every removed one.

    Solves, for all removed j at once, the ridge regression
        min_s ||w^_j - W^_P s||^2 + lambda1 (b^_j - b^_P . s)^2 + lambda2_abs ||s||^2
    whose normal matrix A = W^_P^T W^_P + lambda1 b^_P b^_P^T + lambda2_abs I is shared by
    every j: one Cholesky factorisation serves the whole layer. If A is singular (a zero
    ridge with more kept channels than filter coordinates), the minimum-norm least-squares
    solution is used instead, which is still exact wherever an exact answer exists.
    """
    w = layer.folded_filters
    b = layer.folded_bias
    wp, wj = w[kept].T, w[removed].T  # (d, p), (d, r)
    bp, bj = b[kept], b[removed]
    ridge = lambdas.lambda2 * float(np.mean(np.sum(wp * wp, axis=0))) if kept.size else 0.0

    gram = wp.T @ wp + lambdas.lambda1 * np.outer(bp, bp)
    rhs = wp.T @ wj + lambdas.lambda1 * np.outer(bp, bj)
    if ridge > 0:
        gram[np.diag_indices_from(gram)] += ridge
        try:
            return scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram), rhs)
        except np.linalg.LinAlgError:
            pass
    # No ridge (or a numerically singular one): the least-squares problem on the augmented
    # design [W^_P; sqrt(lambda1) b^_P], solved by SVD for the minimum-norm answer.
    root = np.sqrt(lambdas.lambda1)
    design = np.vstack([wp, root * bp[None, :]])
    target = np.vstack([wj, root * bj[None, :]])
    if ridge > 0:
        design = np.vstack([design, np.sqrt(ridge) * np.eye(kept.size)])
        target = np.vstack([target, np.zeros((kept.size, removed.size))])
    return scipy.linalg.lstsq(design, target)[0]


def merge_coefficients(
    layer: ChannelLayer,
    kept: np.ndarray,
    removed: np.ndarray,
    cosine_weight: float = 0.85,
    threshold: float = 0.1,
) -> np.ndarray:
    """Neuron Merging (Kim et al. 2020), the authors' BN-aware rule (MATH.md §4).

    Each removed j is merged into the single kept k that minimises
        cosine_weight * cosine_distance(w_j, w_k) + (1 - cosine_weight) * normalised |bias mismatch|
    on the raw filters, with scale s (gamma_k/gamma_j)(v_j/v_k), s = ||w_j|| / ||w_k||,
    v = BN running variance (the reciprocal BN ratio, as the authors' code has it). A removed
    channel whose best cosine similarity is below `threshold` is dropped without merging.
    A Conv bias b is treated as a shift of the BN mean (mu - b), which is what it is; for a
    model without BN the rule reduces to the plain one (scale = s, exact for positive
    multiples).
    """
    s_mat = np.zeros((kept.size, removed.size))
    if kept.size == 0 or removed.size == 0:
        return s_mat
    w = layer.raw_filters
    norms = np.linalg.norm(w, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    unit = w / safe[:, None]
    cos_sim = unit[removed] @ unit[kept].T  # (r, p)
    cos_dist = 1.0 - cos_sim

    g, beta, var = layer.gamma, layer.beta, layer.var
    mu = layer.mean - layer.raw_bias
    j, k = removed[:, None], kept[None, :]
    s = norms[j] / safe[k]  # (r, p)
    scale = s * (g[k] / g[j]) * (var[j] / var[k])
    mismatch = np.abs((g[k] / var[k]) * (s * (mu[j] - var[j] * beta[j] / g[j]) - mu[k]) + beta[k])
    mismatch = mismatch / np.where(scale != 0, np.abs(scale), 1.0)
    low = mismatch.min(axis=1, keepdims=True)
    span = mismatch.max(axis=1, keepdims=True) - low
    normalised = (mismatch - low) / np.where(span > 0, span, 1.0)

    score = cosine_weight * cos_dist + (1.0 - cosine_weight) * normalised
    best = np.argmin(score, axis=1)  # first minimum on ties: deterministic
    rows = np.arange(removed.size)
    accepted = cos_sim[rows, best] >= threshold
    s_mat[best[accepted], rows[accepted]] = scale[rows, best][accepted]
    return s_mat


def fold_into_next_layer(
    next_weight: np.ndarray, kept: np.ndarray, removed: np.ndarray, coefficients: np.ndarray, axis: int = 1
) -> np.ndarray:
    """MATH.md §2: W2[:, i] += sum_j S[i, j] W2[:, j] for kept i, then drop the removed slices.

    `axis` is the input-channel axis of the next layer's weight (1 for a Conv's
    (C_out, C_in, kh, kw)). Works in float64 and returns the input's dtype.
    """
    w = np.moveaxis(np.asarray(next_weight, dtype=np.float64), axis, 0)
    updated = w[kept] + np.tensordot(coefficients, w[removed], axes=(1, 0))
    return np.moveaxis(updated, 0, axis).astype(next_weight.dtype)


def moment_coefficients(
    activation_mean: np.ndarray,
    activation_cov: np.ndarray,
    kept: np.ndarray,
    removed: np.ndarray,
    jitter: float = 1e-9,
) -> np.ndarray:
    """The best linear predictor of the removed activations from the kept ones (MATH.md §5):

        S = Cov(a_P)^{-1} Cov(a_P, a_J),

    which, together with the bias correction E[r_j] = E[a_j] - S^T E[a_P] folded into the next
    layer's bias, minimises E[(a_j - s . a_P - c)^2] over s and c for every removed j at once.
    The moments are those of a = ReLU(z) under a Gaussian model of z (numerics.statistics).
    `jitter` (relative to the mean variance) only keeps the factorisation defined when kept
    activations are collinear; it is far below float32 resolution.
    """
    if kept.size == 0 or removed.size == 0:
        return np.zeros((kept.size, removed.size))
    cpp = activation_cov[np.ix_(kept, kept)].copy()
    cpj = activation_cov[np.ix_(kept, removed)]
    scale = float(np.mean(np.diag(cpp))) if kept.size else 0.0
    cpp[np.diag_indices_from(cpp)] += jitter * max(scale, 1e-30)
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(cpp), cpj)
    except np.linalg.LinAlgError:
        return scipy.linalg.lstsq(cpp, cpj)[0]


def lbyl_authors_coefficients(
    layer: ChannelLayer, kept: np.ndarray, removed: np.ndarray, lambda1: float, lambda2: float
) -> np.ndarray:
    """LBYL exactly as the authors' public code computes it (MATH.md §6, ANCHORS.md §1.2–1.3).

    In raw (unfolded) filter space, with "sigma" = BN running variance (D2), for each removed j:

        a_k = mu_k - sigma_k beta_k / gamma_k,   K_k = (gamma_j / gamma_k)(sigma_k / sigma_j),
        r = gamma_j / sigma_j,                  b = gamma_j mu_j / sigma_j - beta_j,
        s = (X^T X + diag(lambda1 r^2 a.a + lambda2 K^2))^{-1} (X^T w_j + lambda1 r b a),

    X the kept raw filters as columns. The bias term's rank-one Hessian lambda1 r^2 a a^T is the
    scalar lambda1 r^2 (a.a) on the diagonal (D1), and the raw s is what gets folded (D3).
    lambda1, lambda2 are the authors' absolute weights (their published values are 1e-6..5e-4
    and 1e-4..0.07), not the relative ones of `lbyl_coefficients`. A Conv bias is a shift of the
    BN mean (mu - bias). Without BN (gamma = sigma = 1, mu = 0, beta = 0) this is ANCHORS §1.4's
    reduction: K = 1, a_k = -bias_k, r = 1, b = -bias_j.
    """
    s_mat = np.zeros((kept.size, removed.size))
    if kept.size == 0 or removed.size == 0:
        return s_mat
    sigma = layer.var  # D2: the running variance where the standard deviation belongs
    gamma, beta = layer.gamma, layer.beta
    mu = layer.mean - layer.raw_bias
    x = layer.raw_filters[kept].T  # (d, p)
    a = mu[kept] - sigma[kept] * beta[kept] / gamma[kept]
    gram = x.T @ x
    for col, j in enumerate(removed):
        k_scale = (gamma[j] / gamma[kept]) * (sigma[kept] / sigma[j])
        r = gamma[j] / sigma[j]
        b = gamma[j] * mu[j] / sigma[j] - beta[j]
        matrix = gram.copy()
        matrix[np.diag_indices_from(matrix)] += lambda1 * r * r * float(a @ a) + lambda2 * k_scale**2
        rhs = x.T @ layer.raw_filters[j] + lambda1 * r * b * a
        try:
            s_mat[:, col] = scipy.linalg.solve(matrix, rhs, assume_a="pos")
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            s_mat[:, col] = scipy.linalg.lstsq(matrix, rhs)[0]
    return s_mat
