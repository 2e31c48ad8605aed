"""The probe's running sums (graph.probe) against the textbook formulas on the whole data,
and the greedy elimination's in-place symmetric update (numerics.elimination)."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_lbyl.graph.probe import _Accumulator, _DiagonalWhenShortAccumulator
from onnx_lbyl.numerics.elimination import _add_product


def _reference(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of all columns at once, only its diagonal with fewer samples than channels."""
    cov = np.cov(columns)
    return columns.mean(axis=1), (np.diag(np.diag(cov)) if columns.shape[1] < cov.shape[0] else cov)


@pytest.mark.parametrize("channels, samples, batches", [(6, 40, 3), (12, 5, 2), (5, 400, 4)])
def test_sums_equal_the_formulas_on_all_data(channels, samples, batches):
    rng = np.random.default_rng(channels)
    mixing = rng.standard_normal((channels, channels))
    parts = [np.maximum(mixing @ rng.standard_normal((channels, samples)) + 3.0, 0) for _ in range(batches)]
    accumulator = _DiagonalWhenShortAccumulator()
    for part in parts:
        accumulator.add(part)
    mean, cov = accumulator.moments()
    want_mean, want_cov = _reference(np.concatenate(parts, axis=1))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-9, atol=1e-12 * np.abs(want_cov).max())


def test_scratch_rows_give_the_same_sums_as_kept_rows():
    """channel_rows hands the sums a private float64 copy they shift in place; the moments
    are the same bits as from rows the sums must leave alone."""
    from onnx_lbyl.graph.probe import channel_rows

    rng = np.random.default_rng(3)
    tensors = [rng.standard_normal((2, 4, 3, 5)).astype(np.float32) + 2 for _ in range(3)]
    kept, scratch = _Accumulator(), _Accumulator()
    for value in tensors:
        rows = np.moveaxis(np.asarray(value, dtype=np.float64), 1, 0).reshape(4, -1)
        kept.add(rows)
        scratch.add(channel_rows(value), scratch=True)
        assert np.array_equal(rows, np.moveaxis(value.astype(np.float64), 1, 0).reshape(4, -1))
    for a, b in zip(kept.moments(), scratch.moments()):
        assert np.array_equal(a, b)


def test_plain_sums_keep_a_large_mean_and_a_small_spread():
    """The shift by the first batch's mean: a channel at 1e4 +- 1e-3 keeps its variance."""
    rng = np.random.default_rng(0)
    parts = [1e4 + 1e-3 * rng.standard_normal((3, 1000)) for _ in range(2)]
    accumulator = _Accumulator()
    for part in parts:
        accumulator.add(part)
    mean, cov = accumulator.moments()
    data = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(np.diag(cov), data.var(axis=1, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(mean, data.mean(axis=1), rtol=1e-14)


def test_in_place_symmetric_update_is_the_sum():
    rng = np.random.default_rng(1)
    target = rng.standard_normal((7, 7))
    target = target + target.T
    beta, half = rng.standard_normal((7, 2)), rng.standard_normal((7, 2))
    left, right = np.hstack([beta, half]), np.hstack([half, beta])
    want = target + left @ right.T
    np.testing.assert_allclose(_add_product(target.copy(), left, right), want, rtol=1e-13)


def test_chain_probe_calls_hold_fewer_rows_for_large_inputs():
    """The chain probe keeps the whole batch of small images in one call (the batch its BNs
    normalise by) and halves it for large ones, whose probed tensors would not fit."""
    from onnx_lbyl.sources import PROBE_BATCH, PROBE_CALL_MAX_VALUES, probe_call_rows

    assert probe_call_rows({"x": np.zeros((1, 3, 32, 32), np.float32)}) == PROBE_BATCH
    rows = probe_call_rows({"x": np.zeros((1, 3, 224, 224), np.float32)})
    assert rows == 8 and rows * 3 * 224 * 224 <= PROBE_CALL_MAX_VALUES < 2 * rows * 3 * 224 * 224
    assert probe_call_rows({"x": np.zeros((1, 3, 4096, 4096), np.float32)}) == 1
