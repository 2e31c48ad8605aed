"""Which output channels to remove: the criteria of the papers, on folded or raw filters.

Every criterion scores channels so that the *lowest* scores are removed. The default ones
(l2, l1, gm) are computed on the BN-folded filters, so the two exports of one network prune
the same channels; l2-raw and l1-raw reproduce the authors' choice on the stored filters.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.distance import cdist

from .folding import ChannelLayer

Scorer = Callable[[ChannelLayer, np.random.Generator], np.ndarray]


ROW_BLOCK_VALUES = 1 << 22  # float64 values of folded filters formed at a time by _l2 (32 MB)


def _l2(layer: ChannelLayer, rng: np.random.Generator) -> np.ndarray:
    """Norms of the folded filters, formed a block of rows at a time when no method has
    formed them all: a 25088-wide Gemm's folded copy and its squares are 1.6 GB otherwise.
    Each row's norm is the same reduction either way, so the same bits."""
    if "folded_filters" in layer.__dict__:  # already formed (cached_property)
        return np.linalg.norm(layer.folded_filters, axis=1)
    raw, scale = layer.raw_filters, layer.scale
    rows = max(1, ROW_BLOCK_VALUES // max(1, raw.shape[1]))
    norms = np.empty(raw.shape[0])
    for start in range(0, raw.shape[0], rows):
        block = slice(start, start + rows)
        norms[block] = np.linalg.norm(raw[block] * scale[block, None], axis=1)
    return norms


def _l1(layer: ChannelLayer, rng: np.random.Generator) -> np.ndarray:
    return np.abs(layer.folded_filters).sum(axis=1)


def _l2_raw(layer: ChannelLayer, rng: np.random.Generator) -> np.ndarray:
    return np.linalg.norm(layer.raw_filters, axis=1)


def _l1_raw(layer: ChannelLayer, rng: np.random.Generator) -> np.ndarray:
    return np.abs(layer.raw_filters).sum(axis=1)


def _geometric_median(layer: ChannelLayer, rng: np.random.Generator) -> np.ndarray:
    """l2-GM (He et al. 2019): filters with the smallest summed distance to all others are
    the most replaceable, so they score lowest."""
    w = layer.folded_filters
    return cdist(w, w, "euclidean").sum(axis=0)


def _random(layer: ChannelLayer, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(layer.channels).astype(np.float64)


CRITERIA: dict[str, Scorer] = {
    "l2": _l2,
    "l1": _l1,
    "gm": _geometric_median,
    "random": _random,
    "l2-raw": _l2_raw,
    "l1-raw": _l1_raw,
}

CRITERION_HELP = {
    "l2": "l2-norm of the BN-folded filter (default)",
    "l1": "l1-norm of the BN-folded filter",
    "gm": "distance to the geometric median of the BN-folded filters (l2-GM)",
    "random": "uniformly random, reproducible with --seed",
    "l2-raw": "l2-norm of the stored (unfolded) filter, as the LBYL authors' code",
    "l1-raw": "l1-norm of the stored (unfolded) filter",
}


def kept_count(channels: int, ratio: float) -> int:
    """How many of `channels` survive removing the fraction `ratio`: floor(n (1 - ratio)),
    as the authors' configurations do, and never fewer than one."""
    return max(1, int(np.floor(channels * (1.0 - ratio) + 1e-9)))


def select_channels(
    layer: ChannelLayer, keep: int, criterion: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split channel indices into (kept, removed), each sorted ascending.

    Ties are broken by channel index (stable sort), so the choice is deterministic.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    scores = CRITERIA[criterion](layer, rng)
    order = np.argsort(-scores, kind="stable")  # highest score first
    kept = np.sort(order[:keep])
    removed = np.sort(order[keep:])
    return kept, removed
