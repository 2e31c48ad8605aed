"""Gaussian statistics of a layer's pre-activations and of their rectified values (MATH.md §5).

Model: the folded pre-activations of a chain's Conv1, z = W^ x + b^, are jointly normal,
z ~ N(mu, Sigma). A BatchNormalization layer supplies the marginals directly (its output is
gamma * standard-normal + beta, so mu_i = beta_i and sd_i = |gamma_i|); correlations are
modelled from the folded filters (`filter_correlation`). Everything here is NumPy/SciPy only.

The functions give the first and second moments of a = ReLU(z) in closed form:

    E[ReLU(z_i)]              = mu_i Phi(h_i) + sd_i phi(h_i),            h_i = mu_i / sd_i
    E[ReLU(z_i) ReLU(z_k)]    = (mu_i mu_k + rho sd_i sd_k) Phi2(h_i, h_k; rho)
                                + mu_i sd_k phi(h_k) Phi((h_i - rho h_k) / q)
                                + mu_k sd_i phi(h_i) Phi((h_k - rho h_i) / q)
                                + sd_i sd_k q phi(h_i) phi((h_k - rho h_i) / q),   q = sqrt(1 - rho^2)

(Phi2 is the bivariate standard normal CDF, evaluated through Owen's T function; |rho| = 1 is
handled by a one-dimensional integral, so collinear filters get exact moments).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special
from scipy.stats import norm

from .folding import ChannelLayer

_TINY = 1e-12
_UNIT = 1.0 - 1e-9  # |rho| above this is treated as exactly +-1


@dataclass(frozen=True)
class GaussianMoments:
    """z ~ N(mean, cov) for the n channels of one layer (folded pre-activations)."""

    mean: np.ndarray  # (n,)
    cov: np.ndarray  # (n, n), symmetric positive semidefinite

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(self.cov), 0.0))

    def take(self, index: np.ndarray) -> "GaussianMoments":
        return GaussianMoments(self.mean[index], self.cov[np.ix_(index, index)])


def filter_correlation(filters: np.ndarray) -> np.ndarray:
    """corr(z_i, z_k) = cos(w^_i, w^_k): the correlation of two filter responses when the
    filters see white (uncorrelated, equal-variance) input. A zero filter is uncorrelated."""
    norms = np.linalg.norm(filters, axis=1)
    unit = filters / np.where(norms > 0, norms, 1.0)[:, None]
    corr = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    return corr


def moments_from_batchnorm(layer: ChannelLayer, correlation: np.ndarray | None = None) -> GaussianMoments:
    """The BatchNormalization model: z_i ~ N(beta_i, gamma_i^2), correlated as `correlation`
    (default: `filter_correlation` of the folded filters)."""
    if not layer.has_batchnorm:
        raise ValueError("this layer has no BatchNormalization statistics")
    sd = np.abs(layer.gamma)
    corr = filter_correlation(layer.folded_filters) if correlation is None else correlation
    return GaussianMoments(layer.beta.copy(), corr * np.outer(sd, sd))


def moments_from_input(layer: ChannelLayer, input_mean: np.ndarray, input_cov: np.ndarray) -> GaussianMoments:
    """Moments of z = W^ x + b^ when the flattened input patch x (d numbers, the layout of a
    flattened filter) has mean `input_mean` and covariance `input_cov`. Linear in the filters,
    so a filter that is c times another gets exactly c times its mean and standard deviation."""
    w = layer.folded_filters
    mean = w @ input_mean + layer.folded_bias
    cov = w @ input_cov @ w.T
    return GaussianMoments(mean, 0.5 * (cov + cov.T))


def relu_mean(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """E[ReLU(z)] for z ~ N(mean, std^2), elementwise; std = 0 gives ReLU(mean)."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    safe = np.where(std > _TINY, std, 1.0)
    h = mean / safe
    value = mean * norm.cdf(h) + std * norm.pdf(h)
    return np.where(std > _TINY, value, np.maximum(mean, 0.0))


def _bivariate_cdf(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(X <= h, Y <= k) for standard bivariate normal with correlation rho (|rho| < 1),
    via Owen's T: Phi2 = (Phi(h) + Phi(k))/2 - T(h, a_h) - T(k, a_k) - delta."""
    q = np.sqrt(1.0 - rho * rho)
    hs = np.where(np.abs(h) > _TINY, h, _TINY)
    ks = np.where(np.abs(k) > _TINY, k, _TINY)
    a_h = (k - rho * hs) / (hs * q)
    a_k = (h - rho * ks) / (ks * q)
    delta = np.where(hs * ks > 0, 0.0, 0.5)
    value = 0.5 * (norm.cdf(h) + norm.cdf(k)) - scipy.special.owens_t(hs, a_h) - scipy.special.owens_t(ks, a_k) - delta
    return np.clip(value, 0.0, 1.0)


def _collinear_product(mi, si, mk, sk, sign):
    """E[ReLU(mi + si t) ReLU(mk + sign sk t)], t ~ N(0, 1), sign = +-1: the |rho| = 1 case."""
    lo = np.full(np.shape(mi), -np.inf)
    hi = np.full(np.shape(mi), np.inf)
    # mi + si t > 0  <=>  t > -mi/si (si > 0)
    lo = np.maximum(lo, -mi / si)
    # mk + sign sk t > 0
    bound = -mk / sk
    lo = np.where(sign > 0, np.maximum(lo, bound), lo)
    hi = np.where(sign > 0, hi, np.minimum(hi, -bound))
    empty = hi <= lo
    lo_c, hi_c = np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)
    p0 = norm.cdf(hi_c) - norm.cdf(lo_c)
    phi_lo, phi_hi = norm.pdf(lo_c), norm.pdf(hi_c)
    p1 = phi_lo - phi_hi
    lo_phi = np.where(np.isfinite(lo_c), np.where(np.isfinite(lo_c), lo_c, 0.0) * phi_lo, 0.0)
    hi_phi = np.where(np.isfinite(hi_c), np.where(np.isfinite(hi_c), hi_c, 0.0) * phi_hi, 0.0)
    p2 = p0 + lo_phi - hi_phi
    b = sign * sk
    value = mi * mk * p0 + (mi * b + mk * si) * p1 + si * b * p2
    return np.where(empty, 0.0, value)


PAIR_BLOCK = 1 << 18  # channel pairs evaluated at once: the closed forms hold ~40 arrays of this size


def relu_second_moments(moments: GaussianMoments) -> np.ndarray:
    """E[a a^T] for a = ReLU(z), z ~ N(mean, cov): the closed forms in the module docstring.
    Every pair's product depends only on its two channels, so the (n, n) matrix is filled a
    block of rows at a time: a 4096-wide classifier layer (VGG's) otherwise needs its forty
    n x n temporaries at once, 5 GB."""
    mu = moments.mean
    sd = moments.std
    n = mu.size
    out = np.empty((n, n))
    degenerate = sd <= _TINY
    safe = np.where(degenerate, 1.0, sd)
    rows = max(1, PAIR_BLOCK // max(n, 1))
    for start in range(0, n, rows):
        block = slice(start, min(n, start + rows))
        out[block] = _pair_products(mu[block], safe[block], mu, safe, moments.cov[block])
    # A channel with no spread is the constant ReLU(mean): its products are exact.
    if np.any(degenerate):
        first = relu_mean(mu, sd)
        const = np.maximum(mu, 0.0)
        out[degenerate, :] = const[degenerate, None] * first[None, :]
        out[:, degenerate] = first[:, None] * const[None, degenerate]
    # Diagonal: E[ReLU(z)^2] = (mu^2 + sd^2) Phi(h) + mu sd phi(h).
    hd = mu / safe
    diag = (mu * mu + sd * sd) * norm.cdf(hd) + mu * sd * norm.pdf(hd)
    diag = np.where(degenerate, np.maximum(mu, 0.0) ** 2, diag)
    out[np.diag_indices(n)] = diag
    return 0.5 * (out + out.T)


def _pair_products(mean_rows: np.ndarray, sd_rows: np.ndarray, mean: np.ndarray, sd: np.ndarray,
                   cov_rows: np.ndarray) -> np.ndarray:
    """E[ReLU(z_i) ReLU(z_k)] for the rows' channels i against every channel k (sd > 0: a
    channel without spread gets 1 here and is overwritten by the caller)."""
    rho = np.clip(cov_rows / np.outer(sd_rows, sd), -1.0, 1.0)
    ones_rows, ones = np.ones((mean_rows.size, 1)), np.ones((1, mean.size))
    mi, mk = mean_rows[:, None] * ones, ones_rows * mean[None, :]
    si, sk = sd_rows[:, None] * ones, ones_rows * sd[None, :]
    h, k = mi / si, mk / sk

    unit = np.abs(rho) >= _UNIT
    r = np.where(unit, 0.0, rho)
    q = np.sqrt(1.0 - r * r)
    general = (
        (mi * mk + r * si * sk) * _bivariate_cdf(h, k, r)
        + mi * sk * norm.pdf(k) * norm.cdf((h - r * k) / q)
        + mk * si * norm.pdf(h) * norm.cdf((k - r * h) / q)
        + si * sk * q * norm.pdf(h) * norm.pdf((k - r * h) / q)
    )
    collinear = _collinear_product(mi, si, mk, sk, np.sign(rho))
    return np.where(unit, collinear, general)


def relu_covariance(moments: GaussianMoments) -> tuple[np.ndarray, np.ndarray]:
    """(E[a], Cov(a)) for a = ReLU(z)."""
    first = relu_mean(moments.mean, moments.std)
    second = relu_second_moments(moments)
    return first, second - np.outer(first, first)


def residual_mean(coefficients: np.ndarray, kept: np.ndarray, removed: np.ndarray, activation_mean: np.ndarray) -> np.ndarray:
    """E[r_j] = E[a_j] - sum_i S_ij E[a_i] for every removed j: the shift no weight update removes."""
    return activation_mean[removed] - coefficients.T @ activation_mean[kept]


def bias_correction(next_weight: np.ndarray, removed: np.ndarray, expected_residual: np.ndarray, axis: int = 1) -> np.ndarray:
    """MATH.md §5: delta b2[m] = sum_j E[r_j] * sum(W2[m, j, ...]), from the next layer's
    weight *before* the removed slices were dropped (exact away from zero-padded borders)."""
    w = np.moveaxis(np.asarray(next_weight, dtype=np.float64), axis, 1)
    if removed.size == 0:
        return np.zeros(w.shape[0])
    per_channel = w[:, removed].reshape(w.shape[0], removed.size, -1).sum(axis=2)  # (m, r)
    return per_channel @ expected_residual
