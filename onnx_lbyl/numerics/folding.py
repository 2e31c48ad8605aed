"""Per-channel quantities of a Conv(+BatchNormalization) layer, before and after BN folding.

Every solver works in the folded space of MATH.md §1 (z_i = w^_i . x + b^_i), so that a model
exported with BatchNormalization nodes and the same model exported with BN folded into the
Conv give the same pruned function. The raw (unfolded) quantities are kept too, because the
authors' criteria and Neuron Merging's rule are defined on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class ChannelLayer:
    """The n output channels of the first Conv of a chain, with the BN that follows it.

    raw_filters: (n, d) flattened Conv filters as stored in the model.
    raw_bias:    (n,) Conv bias (zeros when the Conv has none).
    gamma, beta, mean, var, eps: BatchNormalization parameters; a model without a BN node
        is described by the identity BN (gamma=1, beta=0, mean=0, var=1, eps=0), and
        has_batchnorm says which case this is.
    """

    raw_filters: np.ndarray
    raw_bias: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float
    has_batchnorm: bool

    @classmethod
    def without_batchnorm(cls, filters: np.ndarray, bias: np.ndarray | None) -> "ChannelLayer":
        """A Conv whose BN was folded at export (or that never had one)."""
        n = filters.shape[0]
        flat = np.asarray(filters, dtype=np.float64).reshape(n, -1)
        ones, zeros = np.ones(n), np.zeros(n)
        b = zeros if bias is None else np.asarray(bias, dtype=np.float64)
        return cls(flat, b, ones, zeros, zeros, ones, 0.0, False)

    @classmethod
    def with_batchnorm(
        cls,
        filters: np.ndarray,
        bias: np.ndarray | None,
        gamma: np.ndarray,
        beta: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
        eps: float,
    ) -> "ChannelLayer":
        n = filters.shape[0]
        as64 = lambda a: np.asarray(a, dtype=np.float64).reshape(n)  # noqa: E731
        b = np.zeros(n) if bias is None else as64(bias)
        flat = np.asarray(filters, dtype=np.float64).reshape(n, -1)
        return cls(flat, b, as64(gamma), as64(beta), as64(mean), as64(var), float(eps), True)

    @property
    def channels(self) -> int:
        return self.raw_filters.shape[0]

    @cached_property  # read many times per layer; computed once
    def std(self) -> np.ndarray:
        """sd_i = sqrt(var_i + eps): what BN divides by."""
        return np.sqrt(self.var + self.eps)

    @cached_property  # read many times per layer; computed once
    def scale(self) -> np.ndarray:
        """gamma_i / sd_i: the factor BN folding multiplies filter i by."""
        return self.gamma / self.std

    @cached_property  # read many times per layer; computed once
    def folded_filters(self) -> np.ndarray:
        """w^_i = (gamma_i / sd_i) w_i, shape (n, d)."""
        return self.raw_filters * self.scale[:, None]

    @cached_property  # read many times per layer; computed once
    def folded_bias(self) -> np.ndarray:
        """b^_i = beta_i + gamma_i (b_i - mu_i) / sd_i, shape (n,)."""
        return self.beta + self.scale * (self.raw_bias - self.mean)
